"""What the per-update diagnostics (entropy and KL to the initial policy: two extra policy forwards on the update's
batch) cost in a learned method's update, and whether the training states depend on them: the update program of
the default run (``bench_roofline.update_program``: jit(vmap(scan of U updates)), S = the run's seeds) with the
lab's metrics and with ``bench_roofline.minimal_metrics`` (the same update without the entropy and KL), compiled
once each, timed in interleaved rounds (median), final states compared bit for bit; writes JSON.

    python experiments/bench_metrics_cost.py                      # -> artifacts/bench/metrics_cost.json
    python experiments/bench_metrics_cost.py --updates 10 --rounds 2 --out /tmp/mc.json   # smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_roofline as BR  # noqa: E402
import benchlib as B  # noqa: E402
from e5jax import engine  # noqa: E402
from e5jax.io import write_json  # noqa: E402
from e5jax.methods import METHODS  # noqa: E402
from e5jax.methods import common as C  # noqa: E402

VARIANTS = {"lab": C.Program(), "without entropy and KL": C.Program(metrics=BR.minimal_metrics)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="supervised,ppo,dpo,grpo")
    ap.add_argument("--updates", type=int, default=40, help="updates per timed program (default: one chunk)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    ap.add_argument("--out", default=str(B.OUT_DIR / "metrics_cost.json"))
    args = ap.parse_args(argv)
    B.setup_jax()
    run, cfgs, env, _ = B.load_env()
    keys = engine.seed_keys(run.base_seed, run.seeds)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    progs = {}
    for name in names:
        states = B.lab_init(METHODS[name], cfgs[name], keys, env)
        for tag, program in VARIANTS.items():
            f = BR.update_program(METHODS[name], args.updates)
            with C.variant(program):
                progs[(name, tag)] = (f.lower(states, keys, env).compile(), states)
    times = {k: [] for k in progs}
    finals = {}
    for _ in range(args.rounds):
        for k, (c, states) in progs.items():
            jax.block_until_ready(c(states, keys, env))  # warm-up call
            t = time.perf_counter()
            out = jax.block_until_ready(c(states, keys, env))
            times[k].append(time.perf_counter() - t)
            finals[k] = jax.device_get(out[0])
    res = {}
    for name in names:
        a, b = (finals[(name, t)] for t in VARIANTS)
        same = all(np.array_equal(x, y, equal_nan=True) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
        full, lean = (float(np.median(times[(name, t)])) for t in VARIANTS)
        res[name] = {"lab_s": full, "without_s": lean, "saved_share": 1 - lean / full, "states_bit_identical": same,
                     "samples_s": {t: times[(name, t)] for t in VARIANTS}}
        print(f"{name:11s} lab {full * 1e3:7.1f} ms  without entropy/KL {lean * 1e3:7.1f} ms  saved {100 * (1 - lean / full):5.1f}%  "
              f"states bit-identical: {same}")
    doc = {"meta": B.bench_meta({"seeds": run.seeds, "updates": args.updates, "rounds": args.rounds,
                                 "load_average_at_end": list(os.getloadavg())}), "methods": res}
    write_json(Path(args.out), doc)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
