import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
# the trace cache cannot see a function replaced at run time (monkeypatching): off unless a test turns it on
os.environ.setdefault("E5JAX_TRACE_CACHE", "off")

import numpy as np
import pytest

from e5jax.cli import enable_compilation_cache

enable_compilation_cache()

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


def make_known_oracle_table(R=120, seed=0) -> ProfileTable:
    """A table whose oracle depends on an observable feature (f0 = +1: vision-sensitive request, -1: language-
    sensitive), so a learner that reads the features can close the whole gap and a task-only LUT cannot."""
    rng = np.random.default_rng(seed)
    knobs = {"vision_tokens": np.array([36, 144, 576]), "top_k": np.array([1, 8]), "active_blocks": np.array([8, 16])}
    sizes = (3, 2, 2)
    frac = np.stack(np.unravel_index(np.arange(12), sizes), -1) / (np.array(sizes) - 1)  # [C, 3] in [0, 1]
    visual = rng.random(R) < 0.5
    baseline = rng.uniform(50, 150, R)
    lat_norm = 0.1 + 0.3 * frac[:, 0] + 0.3 * frac[:, 1] + 0.3 * frac[:, 2]  # full config = 1.0
    sens = np.where(visual[:, None], [0.5, 0.05, 0.05], [0.05, 0.35, 0.35])  # [R, 3]
    quality = np.clip(0.9 - (sens[:, None, :] * (1 - frac[None])).sum(-1), 0, 1)
    return ProfileTable(
        knobs=knobs,
        request_ids=np.array([f"k{i}" for i in range(R)]),
        task_types=np.where(rng.random(R) < 0.5, "vqa", "caption"),
        split=np.where(np.arange(R) < R * 3 // 4, "train", "val"),
        feature_names=("modality", "noise"),
        features=np.stack([np.where(visual, 1.0, -1.0), rng.normal(size=R)], -1),
        latency_ms=lat_norm[None] * baseline[:, None],
        quality=quality,
        meta={"source": "test: known oracle"},
    )


@pytest.fixture(scope="session")
def known_table():
    return make_known_oracle_table()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_job(args: list, processes: int = 2, devices: int = 2, timeout: float = 600, cwd=None) -> list:
    """The multi-process command of docs/sweep.md on this machine: ``processes`` local processes with ``devices``
    CPU devices each, every one running ``e5jax <args> --coordinator localhost:PORT --num-processes N --process-id
    I``; their CompletedProcess results, process 0 first."""
    import subprocess
    import sys

    port = free_port()
    env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu", E5JAX_OVERHEAD="off")
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-m", "e5jax", *args, "--coordinator", f"localhost:{port}",
                               "--num-processes", str(processes), "--process-id", str(i)], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(processes)]
    done = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def tiny_vqa_profile_args(weights, requests, out, max_new_tokens=2, warmup=0, repeats=1, validate_samples=1) -> list:
    """``e5jax-bridge profile`` of the tiny LLaVA-OLMoE on a 2 x 2 x 2 grid with the quality harness (bridge tests)."""
    return ["profile", "--arch", "tiny-llava-olmoe", "--weights", str(weights), "--threads", "1", "--no-progress",
            "--requests", str(requests), "--quality-harness", "--batch-size", "8", "--max-new-tokens", str(max_new_tokens),
            "--grid", "vision_tokens=4,64", "top_k=1,4", "active_blocks=2,6", "--warmup", str(warmup), "--repeats",
            str(repeats), "--e2e-repeats", "1", "--validate-samples", str(validate_samples), "--prefill-points", "2",
            "--decode-points", "2", "--out", str(out)]
