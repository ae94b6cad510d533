"""Imitating oracle labels vs averaging rewards: how much a controller loses by picking the config most often
*labelled optimal* instead of the config with the best mean reward (issue 25: why supervised trails the LUT on the
shapes tables).

A controller trained on oracle labels (``methods/supervised.py``: maximum likelihood of each request's optimal
set) predicts, for requests that look alike, the config most often optimal among them — the mode of the labels.
The task LUT picks the config with the best mean reward. When a request's optimum is decided by something its
features do not show (which config happens to be less wrong on it), the two differ, and the finer the keys the
noisier the mode. This script fits lookup tables on train under the three rules of ``e5jax.stats.feature_lut``
(``mean_reward``; ``label_mode``: the joint mode, 1/|set| per optimal config; ``label_mode_factored``: each knob's
most frequent level, what a factored policy's greedy action converges to) keyed on the task alone, on the task and
``--column``, and on the task and every non-constant feature (each cut into ``--bins`` train quantiles), scores
them on val (normalized utility, mean over budgets), and holds each label rule against the mean-reward LUT of the
same keys by the lab's decision rule (``stats.feature_lut_decision``: paired bootstrap over the val requests, 95%
CI of the difference). Per table it also reports how consistent the labels are: the share of train requests whose
optimal set holds their task's label-mode config, per budget. Nothing here is a controller the run trains; the
rules are diagnostics of the table.

    python experiments/label_rule.py --table artifacts/tables/cpu_tiny_llava_olmoe_shapes6k.npz \\
        --table src/e5jax/data/default_table.npz --out artifacts/shapes6k/label_rule.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from e5jax import env as E  # noqa: E402
from e5jax.io import write_json  # noqa: E402
from e5jax.stats import LUT_RULES, best_per_group, feature_lut, feature_lut_decision  # noqa: E402
from e5jax.table import TableError, load_tables  # noqa: E402


def label_consistency(table, lam: float) -> list[float]:
    """Per budget: the share of train requests whose optimal set holds their task's label-mode config (the config
    most often labelled optimal in the task, 1/|set| per member: ``stats.best_per_group``'s ``label_mode``)."""
    env = E.make_env_params(table, lam=lam, oracle_tol=E.ORACLE_TOL)
    rew = np.asarray(E.reward_matrix(env, np.arange(table.num_requests)[None, :], np.asarray(env.budgets)[:, None]))
    opt = np.asarray(E.optimal_set(rew, E.ORACLE_TOL))  # [B, R, C]
    task, train = np.asarray(env.task), table.split == "train"
    mode, _ = best_per_group(rew, task, train, "label_mode")  # [B, T]
    held = np.take_along_axis(opt, mode[:, task][..., None], -1)[..., 0]  # [B, R]
    return held[:, train].mean(-1).tolist()


def analyse(table, column: str | None, bins: int, lam: float) -> dict:
    varying = table.varying_features()
    keysets = {"task": ()}
    if column and column in varying:
        keysets[f"task+{column}"] = (column,)
    if varying:
        keysets["task+every feature"] = tuple(varying)
    rows = {}
    for name, cols in keysets.items():
        row = {"columns": list(cols)}
        for rule in LUT_RULES:
            r = feature_lut(table, cols, lam=lam, bins=bins, rule=rule)
            row[rule] = {"normalized_utility": r["normalized_utility"],
                         "per_budget": r["normalized_utility_per_budget"]}
            row["keys_on_val"] = r["keys_on_val"]
        row["vs_mean_reward"] = {}
        for rule in LUT_RULES[1:]:
            d = feature_lut_decision(table, cols, lam=lam, base=cols, rule=rule, bins=bins)
            row["vs_mean_reward"][rule] = {k: d[k] for k in ("diff", "ci", "decision", "confidence", "n_boot")}
        rows[name] = row
    return {"bins": bins, "keys": rows, "label_consistency_per_budget": label_consistency(table, lam)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", action="append", required=True, help="table (.npz/.csv); repeat for several")
    ap.add_argument("--column", default="object_size", help="the feature keyed beside the task (skipped where absent)")
    ap.add_argument("--bins", type=int, default=4, help="train-quantile bins per feature (default 4)")
    ap.add_argument("--lam", type=float, default=2.0)
    ap.add_argument("--out", required=True, help="JSON report")
    args = ap.parse_args(argv)
    if args.bins < 1:
        print(f"label_rule: --bins must be >= 1, got {args.bins}", file=sys.stderr)
        return 2
    try:
        tables = load_tables(args.table, [])
    except TableError as e:
        print(f"label_rule: {e}", file=sys.stderr)
        return 2
    report = {"lam": args.lam, "column": args.column, "tables": {}}
    for path, t in tables.items():
        rep = report["tables"][path] = analyse(t, args.column, args.bins, args.lam)
        cons = rep["label_consistency_per_budget"]
        print(f"{path}: train requests whose optimal set holds their task's modal label, per budget: "
              + ", ".join(f"{c:.0%}" for c in cons))
        for name, row in rep["keys"].items():
            vals = ", ".join(f"{r} {row[r]['normalized_utility']:.3f}" for r in LUT_RULES)
            print(f"  {name} ({row['keys_on_val']} keys on val): {vals}")
            for rule, d in row["vs_mean_reward"].items():
                print(f"    {rule} - mean_reward: {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] {d['decision']}")
    write_json(args.out, report)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
