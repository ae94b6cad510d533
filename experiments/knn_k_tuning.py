"""Choose knn_lut's k on the tuning split carved from train (never on val).

For each k, knn_lut is run with the default protocol on the tuning split (``ProfileTable.tuning_split``: 25% of
the train requests per task evaluate, the rest are profiled), 5 seeds; scored by the final normalized utility and
by the sample-efficiency AUC. Rule, fixed before measuring: the k with the highest final IQM; within 0.002 of it the
smaller k. ``--split val`` repeats the grid on the real split for the record.

    python experiments/knn_k_tuning.py --out artifacts/tuning/knn_k_tuning.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from e5jax import analysis as A  # noqa: E402
from e5jax import env as E  # noqa: E402
from e5jax.config import load_config  # noqa: E402
from e5jax.io import write_json  # noqa: E402
from e5jax.run import references_block, run_method  # noqa: E402
from e5jax.table import default_table_path, load_table  # noqa: E402

TIE = 0.002


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("tuning", "val"), default="tuning")
    ap.add_argument("--ks", default="1,2,3,5,10,20,50")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("E5JAX_OVERHEAD", "off")
    run, cfgs = load_config(None, seeds=args.seeds, methods="knn_lut")
    table = load_table(default_table_path())
    if args.split == "tuning":
        table = table.tuning_split(0.25, seed=0)
    env = E.env_from_run(run, table)
    refs = references_block(env)
    lo, hi = float(run.env_steps_per_update), float(run.total_env_steps)
    rows, t0 = {}, time.perf_counter()
    for k in (int(x) for x in args.ks.split(",")):
        r = run_method("knn_lut", dataclasses.replace(cfgs["knn_lut"], k=k), run, env, refs)
        un = np.asarray(r["curves"]["val_utility_norm"]["per_seed"], float)
        steps = np.asarray(r["env_steps_per_seed"], float)
        auc = np.array([A.auc_log_steps(steps[i], un[i], lo, hi) for i in range(len(un))])
        rows[k] = {"final_utility_norm": {"per_seed": un[:, -1], **A.iqm_ci(un[:, -1])}, "auc": {"per_seed": auc, **A.iqm_ci(auc)}}
        print(f"k={k:3d}: final IQM {rows[k]['final_utility_norm']['iqm']:.4f}  AUC IQM {rows[k]['auc']['iqm']:.4f}", flush=True)
    best = max(v["final_utility_norm"]["iqm"] for v in rows.values())
    chosen = min(k for k, v in rows.items() if v["final_utility_norm"]["iqm"] >= best - TIE)
    write_json(Path(args.out), {"schema": "e5jax/knn_k_tuning/v1", "command": " ".join(["python", *sys.argv]),
                                "split": args.split, "seeds": run.seeds, "total_env_steps": run.total_env_steps,
                                "rule": f"highest final IQM; within {TIE} the smaller k", "chosen_k": chosen,
                                "results": {str(k): v for k, v in rows.items()}, "wall_s": time.perf_counter() - t0})
    print(f"chosen k = {chosen} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
