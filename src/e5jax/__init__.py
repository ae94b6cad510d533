"""e5jax: a JAX-vectorized lab comparing ways of training a budget-aware MLLM configuration controller."""

import os as _os

# XLA's multi-threaded Eigen pool on CPU can wedge intermittently on vmapped programs (a run here stalled at an
# evaluation call with every worker idle; the same symptom and this workaround are reported upstream). Keep it
# single-threaded unless the user set the flag themselves. Only the CPU backend reads it.
# The concurrency-optimized scheduler made PPO's vmapped init deadlock at >= 48 seeds (cause and fix: docs/hangs.md;
# the engine now initialises rows one at a time on the CPU); disabling it measured neutral-to-faster.
for _flag in ("--xla_cpu_multi_thread_eigen=false", "--xla_cpu_enable_concurrency_optimized_scheduler=false"):
    if _flag.split("=")[0] not in _os.environ.get("XLA_FLAGS", ""):
        _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

__version__ = "0.1.0"
