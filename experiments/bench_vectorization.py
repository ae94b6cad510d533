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
import os
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as B  # noqa: E402
from e5jax import env as E  # noqa: E402
from e5jax.io import write_json  # noqa: E402
from e5jax.methods import METHODS  # noqa: E402


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
    un = B.normalized(u, refs)
    return {
        "seeds": S,
        "updates_per_seed": U,
        "env_steps": steps,
        "total_s": total,
        "per_seed_s": per_seed,
        "per_seed_s_median": B.median(per_seed),
        "env_steps_per_s": steps / (S * B.median(per_seed)),
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
    med = {m: {n: B.median(v) for n, v in d.items()} for m, d in ms.items()}
    best = {m: min(d, key=d.get) for m, d in med.items()}
    return {"ms_per_update": ms, "median_ms_per_update": med, "best_threads": best}


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
    ap.add_argument("--out", default=str(B.OUT_DIR / "vectorization.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.updates, args.updates_large, args.repeats = "1,2", 5, 5, 2
    B.setup_jax()
    import torch_reference as T

    run, cfgs, env, refs = B.load_env()
    tenv = T.torch_env(env)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    calib = None
    if args.torch_threads == "auto":
        calib = calibrate_torch_threads(tenv, cfgs, args.adam_impl, methods)
        threads = calib["best_threads"]
        print(f"torch threads (calibration, median ms/update): {calib['median_ms_per_update']} -> {threads}")
    else:
        threads = {m: int(args.torch_threads) for m in methods}
    seeds = B.parse_ints(args.seeds)
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
                lab = B.time_lab(name, cfg, env, S, U, args.repeats, refs)
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
        "meta": B.bench_meta({
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
    if not args.no_scaling:  # its own process: the benchmarks share benchlib, they do not import each other
        out = str(Path(args.out).with_name("seed_scaling.json"))
        return subprocess.run([sys.executable, str(Path(__file__).with_name("bench_seed_scaling.py")),
                               *(["--quick"] if args.quick else []), "--out", out]).returncode
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
