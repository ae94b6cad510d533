"""e5jax: a JAX-vectorized lab comparing ways of training a budget-aware MLLM configuration controller."""

__version__ = "0.1.0"
