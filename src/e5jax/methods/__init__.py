"""The methods under comparison. Each module: ``Config`` (frozen dataclass), ``init(key, env, cfg)``,
``update(state, env, key) -> (state, metrics)``, ``policy(state)``, ``steps_per_update(cfg, env)``."""

from e5jax.methods import dpo, grpo, heuristic, knn_lut, lut, ppo, supervised

METHODS = {"lut": lut, "knn_lut": knn_lut, "heuristic": heuristic, "supervised": supervised, "ppo": ppo, "dpo": dpo, "grpo": grpo}
