"""What the benchmark scripts share (they import this module, never each other): cold compiles, the metadata of a
benchmark file, the default run's environment, the lab's initial states and one timed chunk of the lab's program."""

from __future__ import annotations

import datetime
import importlib.metadata as md
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from e5jax import analysis as A
from e5jax import engine
from e5jax import env as E
from e5jax.config import load_config
from e5jax.host import host_description
from e5jax.methods import METHODS
from e5jax.table import default_table_path, load_table

OUT_DIR = Path(__file__).resolve().parents[1] / "artifacts" / "bench"


def setup_jax() -> None:
    """Cold compile times: never read or write the persistent compilation cache in a benchmark."""
    jax.config.update("jax_enable_compilation_cache", False)


def versions() -> dict:
    out = {}
    for p in ("e5jax", "jax", "jaxlib", "flax", "optax", "numpy", "torch"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def bench_meta(extra: dict | None = None) -> dict:
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "host": host_description(),
        "versions": versions(),
        "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "JAX_PLATFORMS", "OMP_NUM_THREADS")},
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "compilation_cache": "disabled (cold compiles)",
        **(extra or {}),
    }


def load_env(table_path=None):
    """Default run's environment and configs (experiments/e5_default.toml = the built-in defaults)."""
    run, cfgs = load_config(None)
    table = load_table(table_path or default_table_path())
    env = E.env_from_run(run, table)
    refs = E.evaluate_references(env)
    u_r = np.asarray(refs["random"]["utility"], np.float64)
    u_o = np.asarray(refs["oracle"]["utility"], np.float64)
    return run, cfgs, env, (u_r, u_o)


def normalized(u_per_budget: np.ndarray, refs) -> np.ndarray:
    """[S, B] utilities -> [S] normalized utility, mean over budgets."""
    return A.mean_over_budgets(A.normalized_utility(np.asarray(u_per_budget, np.float64), *refs))


def lab_init(method, cfg, keys, env):
    """Initial states of every seed, as ``Trainer.init`` computes them, but with ``lax.map`` over the seeds.

    Workaround: on this CPU (jax 0.10.2) the ``jit(vmap(init))`` program of PPO deadlocks in execution at
    S >= 48 (all XLA threads waiting on a futex; S = 32 runs; GRPO runs at 64): its 64 batched LAPACK QR custom
    calls (orthogonal init) under XLA's concurrency-optimized thunk scheduler. ``lax.map`` runs one seed's QRs at
    a time. ``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`` also avoids it.
    """
    f = jax.jit(lambda ks, env: jax.lax.map(lambda k: method.init(k, env, cfg), ks))
    return jax.block_until_ready(f(keys, env))


def timed(fn, *args, repeats: int, warmup: int = 0) -> list[float]:
    """Seconds of each of ``repeats`` calls ``fn(*args)``, each waited for (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return ts


def median(xs) -> float:
    return float(np.median(np.asarray(xs, np.float64)))


def time_lab(name: str, cfg, env, S: int, U: int, repeats: int, refs) -> dict:
    """Compile and run one chunk of U updates for S seeds; the lab's own program."""
    method = METHODS[name]
    trainer = engine.make_train(method, cfg, U)
    keys = engine.seed_keys(0, S)
    t = time.perf_counter()
    states = lab_init(method, cfg, keys, env)
    init_s = time.perf_counter() - t
    t = time.perf_counter()
    chunk = trainer.chunk.lower(states, keys, env).compile()
    compile_s = time.perf_counter() - t
    ckeys = engine.chunk_keys(keys, 0)
    execs, metrics = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        _, m = chunk(states, ckeys, env)
        m = jax.device_get(m)  # blocks
        execs.append(time.perf_counter() - t)
        metrics = metrics or m
    steps = S * U * method.steps_per_update(cfg, env)
    un = normalized(metrics["eval"]["utility"], refs)
    return {
        "seeds": S,
        "updates_per_seed": U,
        "env_steps": steps,
        "init_s": init_s,
        "compile_s": compile_s,
        "exec_s": execs,
        "exec_s_median": median(execs),
        "env_steps_per_s": steps / median(execs),
        "final_utility_norm_per_seed": un,
        "final_utility_norm_mean": float(un.mean()),
        "final_utility_norm_std": float(un.std()),
    }


def parse_ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]
