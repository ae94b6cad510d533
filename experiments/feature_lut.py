"""Do a table's features say which config a request needs? (issue 25: "context value <= 0.85 *because of features*")

For each table and each set of feature columns: the val normalized utility of a LUT keyed on (task, binned
features), its configs chosen on train (what a controller can learn), on val itself (the in-sample ceiling, which
also fits noise) and on all requests (perfect knowledge), beside the task LUT (no feature). If the train-fitted
feature LUT does not beat the task LUT, the gap between the task LUT and the per-request oracle is not something the
features predict. Which feature set is "best" is chosen on a tuning split carved from train
(``ProfileTable.tuning_split``: a LUT fitted on the rest of train, scored on it), never on val; the set with the best
val score is reported too, labelled as selected on val (optimistic: a maximum over every set). Each of the two is
held against the task LUT by the lab's decision rule (``stats.feature_lut_decision``: the 95% CI of the difference in
val normalized utility over a paired bootstrap of the val requests; ">" only when it excludes 0).

    python experiments/feature_lut.py --table artifacts/tables/cpu_tiny_llava_olmoe_shapes.npz \\
        --out artifacts/shapes/feature_lut.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from e5jax.io import write_json  # noqa: E402
from e5jax.stats import feature_lut, feature_lut_decision  # noqa: E402
from e5jax.table import TableError, load_tables  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="append", required=True, help="table (.npz/.csv); repeat for several")
    ap.add_argument("--lam", type=float, default=2.0)
    ap.add_argument("--max-columns", type=int, default=3, help="feature sets of up to this many columns")
    ap.add_argument("--tuning-fraction", type=float, default=0.25, help="share of train carved out to choose the set")
    ap.add_argument("--drop-task", action="append", default=[], metavar="TYPE",
                    help="leave out every request of this task type (repeatable), e.g. a question type the model never learned")
    ap.add_argument("--out", required=True, help="JSON report")
    args = ap.parse_args(argv)
    try:
        tables = load_tables(args.table, args.drop_task)  # part of each table with --drop-task
    except TableError as e:
        print(f"feature_lut: {e}", file=sys.stderr)
        return 2
    report = {"lam": args.lam, "tuning_split": {"fraction": args.tuning_fraction, "seed": 0},
              "dropped_tasks": args.drop_task, "tables": {}}
    for path, t in tables.items():
        tune = t.tuning_split(args.tuning_fraction)
        cols = t.varying_features()
        rows = []
        for n in range(args.max_columns + 1):
            for subset in itertools.combinations(cols, n):
                row = {"columns": list(subset)}
                for fit in ("train", "val", "all"):
                    r = feature_lut(t, subset, lam=args.lam, fit=fit)
                    row[fit], row["keys_on_val"] = round(r["normalized_utility"], 4), r["keys_on_val"]
                row["tuning"] = round(feature_lut(tune, subset, lam=args.lam, fit="train")["normalized_utility"], 4)
                rows.append(row)
        task = rows[0]
        chosen = max(rows, key=lambda r: r["tuning"])
        best = max(rows, key=lambda r: r["train"])
        # the lab's decision rule on each set's gain over the task LUT (val, paired request-level bootstrap)
        vs_task = {}
        for label, row in (("chosen_on_tuning_split", chosen), ("best_train_fitted", best)):
            if row["columns"]:
                d = feature_lut_decision(t, tuple(row["columns"]), lam=args.lam)
                vs_task[label] = {k: d[k] for k in ("columns", "diff", "ci", "decision", "confidence", "n_boot")}
        report["tables"][path] = {"task_lut": task, "chosen_on_tuning_split": chosen, "best_train_fitted": best,
                                  "vs_task_lut": vs_task, "rows": rows}
        print(f"{path}: task LUT train-fitted {task['train']:.3f} (perfect {task['all']:.3f}); the feature set chosen on "
              f"the tuning split, {chosen['columns'] or 'no feature'}: {chosen['train']:.3f} on val (tuning "
              f"{chosen['tuning']:.3f} vs task LUT {task['tuning']:.3f}); selected on val (optimistic): "
              f"{best['train']:.3f} on {best['columns'] or 'no feature'} (in-sample {best['val']:.3f}, "
              f"{best['keys_on_val']} keys on val)")
        for label, d in vs_task.items():
            print(f"  {label} ({'+'.join(d['columns'])}) - task LUT on val: {d['diff']:+.3f}, 95% CI over val requests "
                  f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]: {d['decision']}"
                  + (" (selected on val: optimistic)" if label == "best_train_fitted" else ""))
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
