"""PyTorch + transformers profiling bridge: measure real MLLM latency per configuration into e5jax tables."""
