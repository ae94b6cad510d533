"""Seed scaling of the lab: wall time of one chunk vs the number of seeds S, for GRPO and PPO.

The program is the lab's own chunk (``engine.make_train(METHODS[m], cfg, eval_every=U).chunk``: U updates for all
S seeds in one ``jit(vmap(scan))``, plus the greedy val evaluation), compiled ahead of time (timed apart) and
executed ``--repeats`` times (median). Reports time(S) / time(1) and env-steps/s. Default S = 1..64 on a CPU and
1..1024 where the default backend is a GPU (target there: time(1024) <= 2 x time(1)). Seeds are the outer loop, in
the order given (experiments/gpu_run.py passes 1,1024,4,... so the headline ratio comes first), and the JSON is
rewritten after every (S, method): an interrupted benchmark keeps what it measured (``meta.complete`` says).

    python experiments/bench_seed_scaling.py            # ~4 min on the 2-core CPU
    python experiments/bench_seed_scaling.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as B  # noqa: E402
from e5jax.io import write_json  # noqa: E402

CPU_SEEDS = "1,2,4,8,16,32,64"
GPU_SEEDS = "1,1024,4,16,64,256"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="grpo,ppo")
    ap.add_argument("--seeds", default=None, help=f"comma separated (default CPU {CPU_SEEDS}; GPU {GPU_SEEDS})")
    ap.add_argument("--updates", type=int, default=20, help="updates per seed in the timed chunk")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: S = 1,4, 5 updates, 2 repeats")
    ap.add_argument("--out", default=str(B.OUT_DIR / "seed_scaling.json"))
    args = ap.parse_args(argv)
    backend = jax.default_backend()
    if args.seeds is None:
        args.seeds = GPU_SEEDS if backend == "gpu" else CPU_SEEDS
    if args.quick:
        args.seeds, args.updates, args.repeats = "1,4", 5, 2
    B.setup_jax()
    run, cfgs, env, refs = B.load_env()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = B.parse_ints(args.seeds)
    results = {m: [] for m in methods}
    t0 = time.perf_counter()
    meta = {
        "methods": methods, "seeds": seeds, "updates_per_seed": args.updates, "repeats": args.repeats,
        "quick": args.quick,
        "program": "engine.make_train(METHODS[m], cfg, eval_every=updates).chunk (eval included), AOT-compiled",
        "gpu_target": "time(1024 seeds) <= 2 x time(1 seed) (GPU only)",
    }

    def save(complete: bool) -> dict:
        """Written after every (method, S): an interrupted benchmark keeps what it measured."""
        for rows in results.values():
            rows.sort(key=lambda r: r["seeds"])
            base = rows[0]["exec_s_median"] if rows and rows[0]["seeds"] == 1 else None
            for r in rows:
                r["time_vs_1_seed"] = r["exec_s_median"] / base if base else None
                r["time_per_seed_vs_1_seed"] = r["time_vs_1_seed"] / r["seeds"] if base else None
        doc = {"schema": "e5jax/bench_seed_scaling/v1",
               "meta": B.bench_meta({**meta, "wall_s": time.perf_counter() - t0, "complete": complete}),
               "results": results}
        if backend == "gpu" and 1 in seeds and 1024 in seeds:
            doc["gpu_target_met"] = {m: rows[-1]["time_vs_1_seed"] <= 2.0 for m, rows in results.items()
                                     if rows and rows[-1]["seeds"] == 1024 and rows[-1]["time_vs_1_seed"]}
        write_json(Path(args.out), doc)
        return doc

    with tqdm(total=len(methods) * len(seeds), desc="seed scaling", unit="run", file=sys.stderr) as pbar:
        for S in seeds:  # seeds outer: given as 1,1024,... the headline ratio comes first for every method
            for name in methods:
                pbar.set_postfix_str(f"{name} S={S}")
                r = B.time_lab(name, cfgs[name], env, S, args.updates, args.repeats, refs)
                results[name].append({k: r[k] for k in ("seeds", "updates_per_seed", "env_steps", "init_s", "compile_s",
                                                         "exec_s", "exec_s_median", "env_steps_per_s")})
                save(complete=False)
                pbar.update(1)
    save(complete=True)
    print(f"\nseed scaling ({backend}): one chunk of {args.updates} updates, median of {args.repeats}")
    print(f"{'method':6s} {'S':>5s} {'exec s':>8s} {'t/t(1)':>7s} {'per seed':>8s} {'steps/s':>10s} {'compile s':>9s}")
    for name, rows in results.items():
        for r in rows:
            tv = r["time_vs_1_seed"]
            print(f"{name:6s} {r['seeds']:5d} {r['exec_s_median']:8.3f} {tv if tv else float('nan'):7.2f} "
                  f"{r['time_per_seed_vs_1_seed'] or float('nan'):8.3f} {r['env_steps_per_s']:10,.0f} {r['compile_s']:9.1f}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
