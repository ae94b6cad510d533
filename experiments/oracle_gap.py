"""Where does the per-request oracle's lead over the task LUT come from? (issue 25: "context value <= 0.85 *because
of features*")

Val requests are binned by the quality the full config gets on them. If the gap between the task LUT and the
per-request oracle sits in the requests the model gets wrong at the full config, and the oracle there picks a
degraded config that happens to answer better, the gap is the model's error pattern: no request feature a controller
reads need predict it. Per bin: share of the gap, how much quality the oracle config has over the full config, and
the task LUT's normalized utility on that bin alone (``e5jax.stats.oracle_gap_sources``).

    python experiments/oracle_gap.py --table artifacts/tables/cpu_tiny_llava_olmoe_shapes.npz \\
        --table artifacts/tables/cpu_tiny_llava_olmoe_easyvqa.npz --table src/e5jax/data/default_table.npz \\
        --out artifacts/shapes/oracle_gap.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from e5jax.io import write_json  # noqa: E402
from e5jax.stats import oracle_gap_sources  # noqa: E402
from e5jax.table import TableError, load_tables  # noqa: E402


def _f(x, nd=3):
    return "—" if x is None else f"{x:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="append", required=True, help="table (.npz/.csv); repeat for several")
    ap.add_argument("--lam", type=float, default=2.0)
    ap.add_argument("--edges", default="0.5", help="full-config quality cut points, comma-separated (default 0.5)")
    ap.add_argument("--drop-task", action="append", default=[], metavar="TYPE",
                    help="leave out every request of this task type (repeatable), e.g. a question type the model never learned")
    ap.add_argument("--out", required=True, help="JSON report")
    args = ap.parse_args(argv)
    try:
        edges = tuple(float(x) for x in args.edges.split(","))
    except ValueError:
        print(f"oracle_gap: --edges {args.edges!r} is not a comma-separated list of numbers", file=sys.stderr)
        return 2
    if any(not 0 < e < 1 for e in edges) or list(edges) != sorted(set(edges)):
        print(f"oracle_gap: --edges must be increasing and inside (0, 1), got {args.edges}", file=sys.stderr)
        return 2
    try:
        tables = load_tables(args.table, args.drop_task)  # part of each table with --drop-task
    except TableError as e:
        print(f"oracle_gap: {e}", file=sys.stderr)
        return 2
    report = {"lam": args.lam, "dropped_tasks": args.drop_task, "tables": {}}
    for path, table in tables.items():
        r = oracle_gap_sources(table, lam=args.lam, edges=edges)
        report["tables"][path] = r
        print(f"{path}: task LUT {r['task_lut_train']:.3f} (train-fitted), {r['task_lut_all']:.3f} (context value), "
              f"{r['val_requests']} val requests")
        for b in r["bins"]:
            lo, hi = b["full_quality"]
            print(f"  full-config quality [{lo:g}, {hi:g}{']' if hi == 1 else ')'}: {b['share_of_val_requests']:.0%} of val requests, "
                  f"{_f(b['share_of_gap'], 2)} of the gap; the oracle config's quality over full's at the largest budget "
                  f"{_f(b['oracle_quality_over_full'])}; task LUT on these alone {_f(b['task_lut_train'])} "
                  f"(train-fitted), {_f(b['task_lut_all'])} (fitted on all)")
            if b["oracle_levels_at_largest_budget"]:
                print("    oracle's knob levels at the largest budget: " + "; ".join(
                    f"{k} " + " ".join(f"{v}:{p:.0%}" for v, p in d.items())
                    for k, d in b["oracle_levels_at_largest_budget"].items()))
    write_json(Path(args.out), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
