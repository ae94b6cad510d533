"""e5jax: a JAX-vectorized lab comparing ways of training a budget-aware MLLM configuration controller."""

import os as _os

# XLA's multi-threaded Eigen pool on CPU can wedge intermittently on vmapped programs (a run here stalled at an
# evaluation call with every worker idle; the same symptom and this workaround are reported upstream). Keep it
# single-threaded unless the user set the flag themselves. Only the CPU backend reads it.
if "xla_cpu_multi_thread_eigen" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()

__version__ = "0.1.0"
