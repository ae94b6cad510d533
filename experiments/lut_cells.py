"""Where does a feature LUT's gain over the task LUT come from, cell by cell? (issue 25)

For one budget, each (task, bin of ``--column``) cell of the val split: its size, the config the train-fitted task
LUT and the train-fitted task x column LUT give it (``e5jax.stats.feature_lut``, the column cut into train quantiles
by ``stats.feature_bins``), and the mean val quality and reward each config gets there. Descriptive: small cells
move a lot by chance; the decision on the whole LUT is ``experiments/feature_lut.py``'s.

    python experiments/lut_cells.py --table artifacts/tables/cpu_tiny_llava_olmoe_shapes.npz [--column object_size]
        [--budget 1.0] [--out artifacts/shapes/lut_cells.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from e5jax import decide as D  # noqa: E402
from e5jax import env as E  # noqa: E402
from e5jax.io import write_json  # noqa: E402
from e5jax.stats import feature_bins, feature_lut  # noqa: E402
from e5jax.table import load_table  # noqa: E402


def cells(table, column: str, budget: float, lam: float = 2.0) -> dict:
    env = E.make_env_params(table, lam=lam, oracle_tol=E.ORACLE_TOL)
    budgets = np.asarray(env.budgets)
    b = int(np.argmin(np.abs(budgets - budget)))
    if abs(budgets[b] - budget) > 1e-6:
        raise ValueError(f"--budget {budget:g} is not one of the run's budgets ({', '.join(f'{x:g}' for x in budgets)})")
    val = np.asarray(E.eval_grid(env)[0][0])
    task_a = np.asarray(feature_lut(table, (), lam=lam)["val_actions"])[b]
    feat_a = np.asarray(feature_lut(table, (column,), lam=lam)["val_actions"])[b]
    q = np.asarray(table.quality, float)[val]
    rew = D.request_rewards(q, np.asarray(env.latency_norm)[val], budgets, lam)[b]  # [Rv, C] the env's reward
    levels = table.config_levels()
    names = list(table.knobs)
    tasks = np.asarray(table.task_types).astype(str)[val]
    bins = feature_bins(table, column)[val]
    rows, r = [], np.arange(len(val))
    for t in sorted(set(tasks.tolist())):
        for k in sorted(set(bins[tasks == t].tolist())):
            m = (tasks == t) & (bins == k)
            row = {"task": t, "bin": float(k), "val_requests": int(m.sum())}
            for lut, a in (("task_lut", task_a), ("feature_lut", feat_a)):
                cfgs = sorted(set(a[m].tolist()))
                row[lut] = {"configs": [dict(zip(names, map(int, levels[c]))) for c in cfgs],
                            "quality": float(q[r[m], a[m]].mean()), "reward": float(rew[r[m], a[m]].mean())}
            row["reward_gain"] = row["feature_lut"]["reward"] - row["task_lut"]["reward"]
            rows.append(row)
    return {"column": column, "budget": float(budgets[b]), "lam": lam, "cells": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--column", default="object_size", help="the feature that keys the LUT beside the task")
    ap.add_argument("--budget", type=float, default=1.0, help="one of the run's budgets (default the largest, 1.0)")
    ap.add_argument("--lam", type=float, default=2.0)
    ap.add_argument("--out", help="JSON report (optional)")
    args = ap.parse_args(argv)
    table = load_table(args.table)
    if args.column not in table.feature_names:
        print(f"lut_cells: --column {args.column!r} is not a feature of {args.table} "
              f"({', '.join(table.feature_names)})", file=sys.stderr)
        return 2
    try:
        rep = cells(table, args.column, args.budget, args.lam)
    except ValueError as e:
        print(f"lut_cells: {e}", file=sys.stderr)
        return 2
    rep["table"] = args.table
    print(f"{args.table}: b = {rep['budget']:g}, task x {args.column} LUT vs task LUT per val cell "
          "(n; quality task LUT -> feature LUT; reward gain)")
    for c in rep["cells"]:
        fc = "; ".join(",".join(f"{v}" for v in d.values()) for d in c["feature_lut"]["configs"])
        tc = "; ".join(",".join(f"{v}" for v in d.values()) for d in c["task_lut"]["configs"])
        print(f"  {c['task']:9s} bin {c['bin']:g}  n {c['val_requests']:4d}  [{tc}] -> [{fc}]  quality "
              f"{c['task_lut']['quality']:.3f} -> {c['feature_lut']['quality']:.3f}  reward {c['reward_gain']:+.3f}")
    if args.out:
        write_json(Path(args.out), rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
