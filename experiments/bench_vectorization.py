"""All-seed vectorization vs a sequential PyTorch reference (issue #6), in one run, side by side.

For each method (PPO, GRPO) and each number of seeds S:

* lab: ``e5jax.engine.make_train(METHODS[name], cfg, eval_every=U)`` -> one chunk of U updates for all S seeds
  (``jit(vmap(scan))``, the final greedy val evaluation included, exactly the program ``e5jax run`` executes);
  compiled ahead of time (``.lower().compile()``, timed apart), then executed ``--repeats`` times from the same
  initial state; env-steps/s = S x U x 256 / median execution seconds;
* PyTorch: ``torch_reference.py``, the same problem, network, batch and hyperparameters, seed after seed
  (CleanRL style); env-steps/s = S x U x 256 / total seconds (init + training + greedy evaluation per seed);
* both: final greedy normalized val utility (U - U_random) / (U_oracle - U_random), mean over budgets, with the
  lab's evaluator (``e5jax.env.evaluate_actions``), mean +- std over the S seeds.

Both sides run the same number of updates per seed at a given S (``--updates``; ``--updates-large`` for
S >= ``--large-from``, to keep the run short). Nothing is extrapolated. The seed-scaling sweep of
``bench_seed_scaling.py`` runs afterwards unless ``--no-scaling``.

    python experiments/bench_vectorization.py            # full (~10 min on the 2-core CPU)
    python experiments/bench_vectorization.py --quick    # smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as md
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from e5jax import engine  # noqa: E402
from e5jax import env as E  # noqa: E402
from e5jax.config import load_config  # noqa: E402
from e5jax.io import write_json  # noqa: E402
from e5jax.methods import METHODS  # noqa: E402
from e5jax.host import host_description  # noqa: E402
from e5jax.table import default_table_path, load_table  # noqa: E402

OUT_DIR = ROOT / "artifacts" / "bench"


# ----------------------------------------------------------------------------- shared helpers (used by the other benches)
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
    env = E.make_env_params(table, lam=run.lam, budgets=run.budgets, latency_noise=run.latency_noise)
    refs = E.evaluate_references(env)
    u_r = np.asarray(refs["random"]["utility"], np.float64)
    u_o = np.asarray(refs["oracle"]["utility"], np.float64)
    return run, cfgs, env, (u_r, u_o)


def normalized(u_per_budget: np.ndarray, refs) -> np.ndarray:
    """[S, B] utilities -> [S] normalized utility, mean over budgets."""
    u_r, u_o = refs
    return ((np.asarray(u_per_budget, np.float64) - u_r) / (u_o - u_r)).mean(-1)


def lab_init(method, cfg, keys, env):
    """Initial states of every seed, as ``Trainer.init`` computes them, but with ``lax.map`` over the seeds.

    Workaround: on this CPU (jax 0.10.2) the ``jit(vmap(init))`` program of PPO deadlocks in execution at
    S >= 48 (all XLA threads waiting on a futex; S = 32 runs; GRPO runs at 64): its 64 batched LAPACK QR custom
    calls (orthogonal init) under XLA's concurrency-optimized thunk scheduler. ``lax.map`` runs one seed's QRs at
    a time. ``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`` also avoids it.
    """
    f = jax.jit(lambda ks, env: jax.lax.map(lambda k: method.init(k, env, cfg), ks))
    return jax.block_until_ready(f(keys, env))


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


def time_torch(name: str, cfg, env, tenv, S: int, U: int, refs, adam_impl: str, repeats: int, pbar=None) -> dict:
    """S seeds one after the other. Headline rate = S x U x 256 / (S x median per-seed time): robust to the
    stalls a shared 2-core machine produces; the plain total is recorded too. At S = 1 the seed is run
    ``repeats`` times (median), like the lab's repeats."""
    import torch_reference as T

    steps = S * U * METHODS[name].steps_per_update(cfg, env)
    seed_list = [0] * repeats if S == 1 else list(range(S))
    t = time.perf_counter()
    actions, per_seed = T.train_seeds(name, tenv, cfg, U, seed_list, progress=pbar, adam_impl=adam_impl)
    total = time.perf_counter() - t
    if S == 1:
        total /= repeats
        actions = actions[:1]
    u = np.stack([np.asarray(E.evaluate_actions(env, jnp.asarray(a))["utility"]) for a in actions])
    un = normalized(u, refs)
    return {
        "seeds": S,
        "updates_per_seed": U,
        "env_steps": steps,
        "total_s": total,
        "per_seed_s": per_seed,
        "per_seed_s_median": median(per_seed),
        "env_steps_per_s": steps / (S * median(per_seed)),
        "env_steps_per_s_from_total": steps / total,
        "final_utility_norm_per_seed": un,
        "final_utility_norm_mean": float(un.mean()),
        "final_utility_norm_std": float(un.std()),
    }


def calibrate_torch_threads(tenv, cfgs, adam_impl: str, methods, updates: int = 4, rounds: int = 3) -> dict:
    """Median ms/update of each method at 1 thread and at the core count, interleaved ``rounds`` times."""
    import torch
    import torch_reference as T

    cands = sorted({1, os.cpu_count() or 1})
    ms = {m: {n: [] for n in cands} for m in methods}
    for _ in range(rounds):
        for n in cands:
            torch.set_num_threads(n)
            for m in methods:
                t = time.perf_counter()
                T.TRAINERS[m](tenv, cfgs[m], updates, 0, adam_impl)
                ms[m][n].append((time.perf_counter() - t) / updates * 1e3)
    med = {m: {n: median(v) for n, v in d.items()} for m, d in ms.items()}
    best = {m: min(d, key=d.get) for m, d in med.items()}
    return {"ms_per_update": ms, "median_ms_per_update": med, "best_threads": best}


def parse_ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="ppo,grpo")
    ap.add_argument("--seeds", default="1,5,16,64", help="numbers of seeds S (comma separated)")
    ap.add_argument("--updates", type=int, default=100, help="updates per seed (both sides) for S < --large-from")
    ap.add_argument("--updates-large", type=int, default=25, help="updates per seed (both sides) for S >= --large-from")
    ap.add_argument("--large-from", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed executions of the compiled lab program (median)")
    ap.add_argument("--torch-threads", default="auto",
                    help="torch intra-op threads: a number, or auto = the faster of 1 and the core count per method in a "
                         "short interleaved calibration (on a shared 2-core machine OpenMP threads at the core count "
                         "can stall when the other core is busy)")
    ap.add_argument("--adam-impl", default="fused", choices=("fused", "foreach", "loop"), help="torch Adam implementation")
    ap.add_argument("--no-scaling", action="store_true", help="skip the seed-scaling sweep (bench_seed_scaling.py)")
    ap.add_argument("--quick", action="store_true", help="smoke run: S = 1,2, 10 updates, 2 repeats")
    ap.add_argument("--out", default=str(OUT_DIR / "vectorization.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.updates, args.updates_large, args.repeats = "1,2", 5, 5, 2
    setup_jax()
    import torch_reference as T

    run, cfgs, env, refs = load_env()
    tenv = T.torch_env(env)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    calib = None
    if args.torch_threads == "auto":
        calib = calibrate_torch_threads(tenv, cfgs, args.adam_impl, methods)
        threads = calib["best_threads"]
        print(f"torch threads (calibration, median ms/update): {calib['median_ms_per_update']} -> {threads}")
    else:
        threads = {m: int(args.torch_threads) for m in methods}
    seeds = parse_ints(args.seeds)
    upd = {S: (args.updates_large if S >= args.large_from else args.updates) for S in seeds}

    results = {m: [] for m in methods}
    total_torch = sum((args.repeats if S == 1 else S) * upd[S] for S in seeds) * len(methods)
    t_start = time.perf_counter()
    with tqdm(total=total_torch, desc="torch seed-updates / lab runs", unit="upd", file=sys.stderr) as pbar:
        for name in methods:
            cfg = cfgs[name]
            for S in seeds:
                U = upd[S]
                pbar.set_postfix_str(f"{name} S={S} lab")
                lab = time_lab(name, cfg, env, S, U, args.repeats, refs)
                pbar.set_postfix_str(f"{name} S={S} torch")
                T.set_threads(threads[name])

                class _P:  # advance the bar by U per finished torch seed
                    update = staticmethod(lambda n, U=U: pbar.update(n * U))

                tor = time_torch(name, cfg, env, tenv, S, U, refs, args.adam_impl, args.repeats, _P)
                row = {
                    "seeds": S,
                    "updates_per_seed": U,
                    "lab": lab,
                    "torch": tor,
                    "speedup": lab["env_steps_per_s"] / tor["env_steps_per_s"],
                    "speedup_incl_compile": tor["per_seed_s_median"] * S / (lab["init_s"] + lab["compile_s"] + lab["exec_s_median"]),
                    "utility_gap": lab["final_utility_norm_mean"] - tor["final_utility_norm_mean"],
                    # gap in units of the per-seed spread (hypot of both sides' seed stds), and as a z-score of the
                    # difference of the two S-seed means (None at S = 1: no seed spread)
                    "utility_gap_in_seed_std": None if S == 1 else (lab["final_utility_norm_mean"] - tor["final_utility_norm_mean"])
                    / max(np.hypot(lab["final_utility_norm_std"], tor["final_utility_norm_std"]), 1e-9),
                    "utility_gap_z": None if S == 1 else (lab["final_utility_norm_mean"] - tor["final_utility_norm_mean"])
                    * np.sqrt(S) / max(np.hypot(lab["final_utility_norm_std"], tor["final_utility_norm_std"]), 1e-9),
                }
                results[name].append(row)
    wall = time.perf_counter() - t_start

    doc = {
        "schema": "e5jax/bench_vectorization/v1",
        "meta": bench_meta({
            "torch_threads": threads,
            "torch_threads_calibration": calib,
            "torch_adam": args.adam_impl,
            "methods": methods,
            "seeds": seeds,
            "updates_per_seed": {str(k): v for k, v in upd.items()},
            "env_steps_per_update": run.env_steps_per_update,
            "repeats": args.repeats,
            "quick": args.quick,
            "wall_s": wall,
            "lab_program": "engine.make_train(METHODS[m], cfg, eval_every=U).chunk: jit(vmap(scan of U updates + greedy val eval))",
            "lab_init": "lax.map over seeds (jit(vmap(init)) deadlocks for PPO at S>=48 on this CPU, see lab_init)",
            "torch_program": "experiments/torch_reference.py, seeds sequential; timing includes per-seed init and greedy eval",
            "env_steps_per_s": "S x updates x env_steps_per_update / seconds; lab: median of the repeated executions, "
                               "compile excluded; torch: S x median per-seed time (env_steps_per_s_from_total: plain total)",
            "utility": "greedy val utility normalized (U - U_random)/(U_oracle - U_random), mean over the 5 budgets",
            "extrapolated": False,
        }),
        "results": results,
    }
    write_json(Path(args.out), doc)
    print_table(doc)
    print(f"-> {args.out}  ({wall:.0f} s)")
    if not args.no_scaling:
        import bench_seed_scaling

        out = str(Path(args.out).with_name("seed_scaling.json"))
        bench_seed_scaling.main((["--quick"] if args.quick else []) + ["--out", out])
    return 0


def print_table(doc: dict) -> None:
    print("\nenv-steps/s: lab = jit(vmap(scan)) over S seeds; torch = sequential CleanRL-style loop")
    th = doc["meta"]["torch_threads"]
    print(f"torch threads: {th}; torch steps/s = S x median per-seed time; lab = median of the repeats")
    hdr = f"{'method':6s} {'S':>4s} {'upd':>4s} {'lab steps/s':>12s} {'torch steps/s':>13s} {'ratio':>6s} " \
          f"{'init s':>6s} {'compile s':>9s} {'lab U_norm':>13s} {'torch U_norm':>13s}"
    print(hdr)
    for name, rows in doc["results"].items():
        for r in rows:
            la, to = r["lab"], r["torch"]
            print(f"{name:6s} {r['seeds']:4d} {r['updates_per_seed']:4d} {la['env_steps_per_s']:12,.0f} "
                  f"{to['env_steps_per_s']:13,.0f} {r['speedup']:6.1f} {la['init_s']:6.1f} {la['compile_s']:9.1f} "
                  f"{la['final_utility_norm_mean']:6.3f}±{la['final_utility_norm_std']:.3f} "
                  f"{to['final_utility_norm_mean']:6.3f}±{to['final_utility_norm_std']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
