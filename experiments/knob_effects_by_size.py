"""Quality per question type and object size (the ``object_size`` feature: small <= 4 px half-extent, large above)
at a few knob levels, the others at full: does a small object need more vision tokens than a large one?

    python experiments/knob_effects_by_size.py [--table artifacts/tables/cpu_tiny_llava_olmoe_shapes.npz]
                                               [--out artifacts/shapes/knob_effects_by_size.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from e5jax.io import write_json  # noqa: E402
from e5jax.table import load_table  # noqa: E402
from profiling_bridge.knob_effects import level_configs  # noqa: E402

SMALL_MAX = 4  # px: shapes-vqa's small objects have half-extent 3-4, large 8-12


def by_size(table, small_max: float = SMALL_MAX) -> dict:
    """{task: {small|large: {n, full, vision_tokens=<level>: ..., active_blocks=<level>: ...}}}: mean quality of
    every level of vision_tokens and active_blocks with the other knobs at full (``knob_effects.level_configs``)."""
    levels = level_configs(table)
    cols = {"full": table.full_config,
            **{f"{knob}={level}": c for knob in ("vision_tokens", "active_blocks") for level, c in levels[knob].items()}}
    size = table.features[:, list(table.feature_names).index("object_size")]
    out = {}
    for task in ["all", *sorted(set(table.task_types.tolist()))]:
        in_task = np.ones(len(size), bool) if task == "all" else table.task_types == task
        out[task] = {}
        for name, sel in (("small", size <= small_max), ("large", size > small_max)):
            rows = in_task & sel
            out[task][name] = {"n": int(rows.sum()),
                               **{c: round(float(table.quality[rows, j].mean()), 4) for c, j in cols.items()}} if rows.any() else {"n": 0}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default="artifacts/tables/cpu_tiny_llava_olmoe_shapes.npz")
    ap.add_argument("--out", default="artifacts/shapes/knob_effects_by_size.json")
    a = ap.parse_args(argv)
    t = load_table(a.table)
    if "object_size" not in t.feature_names:
        print(f"knob_effects_by_size: {a.table} has no object_size feature", file=sys.stderr)
        return 2
    res = by_size(t)
    write_json(Path(a.out), {"table": a.table, "small": f"object_size <= {SMALL_MAX}", "quality": res,
                             "command": " ".join(["python", "experiments/knob_effects_by_size.py", *(argv or sys.argv[1:])])})
    for task, d in res.items():
        for name, r in d.items():
            if r["n"]:
                print(f"{task:9s} {name:5s} n={r['n']:4d} full {r['full']:.3f}  vision_tokens 4/16 {r['vision_tokens=4']:.3f}/"
                      f"{r['vision_tokens=16']:.3f}  active_blocks 2 {r['active_blocks=2']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
