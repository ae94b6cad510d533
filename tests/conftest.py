import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest

from e5jax.table import ProfileTable


def make_small_table(R=12, knobs=None, seed=0, with_std=True) -> ProfileTable:
    """A small random but valid table: quality rises and latency rises with every knob level."""
    rng = np.random.default_rng(seed)
    knobs = knobs or {"vision_tokens": np.array([36, 144, 576]), "top_k": np.array([1, 8]), "active_blocks": np.array([8, 16])}
    sizes = [len(v) for v in knobs.values()]
    C = int(np.prod(sizes))
    lv = np.stack(np.unravel_index(np.arange(C), sizes), -1) / (np.array(sizes) - 1)  # [C, K] in [0,1]
    w_lat = rng.uniform(0.2, 1.0, (R, len(sizes)))
    w_q = rng.uniform(0.0, 0.4, (R, len(sizes)))
    latency = 10 + 100 * (lv[None] * w_lat[:, None]).sum(-1)
    quality = np.clip(0.95 - (w_q[:, None] * (1 - lv[None])).sum(-1), 0, 1)
    split = np.array(["train"] * (R - R // 3) + ["val"] * (R // 3))
    return ProfileTable(
        knobs=knobs,
        request_ids=np.array([f"q{i}" for i in range(R)]),
        task_types=np.array(["a", "b", "c"] * (R // 3) + ["a"] * (R % 3)),
        split=split,
        feature_names=("f0", "f1"),
        features=rng.normal(size=(R, 2)),
        latency_ms=latency,
        quality=quality,
        latency_std_ms=0.02 * latency if with_std else None,
        meta={"source": "test"},
    )


@pytest.fixture
def small_table():
    return make_small_table()
