"""The numbers of docs/measured_table.md in one JSON: ``python -m profiling_bridge.measured_summary``.

Reads the measured table and the default table, their `e5jax run` outputs (``--measured-run``, ``--default-run``)
and the tiny model's test summary; writes ``artifacts/measured/results_summary.json`` (context value, oracle
diversity, knob effects, final normalized utility IQM + CI, AUC IQM + CI and per-budget utility per method).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from e5jax.io import atomic_write
from e5jax.stats import table_summary
from e5jax.table import load_table
from profiling_bridge.knob_effects import knob_effects


def e5_results(run: str) -> dict:
    st = json.loads((Path(run) / "e5_stability_analysis.json").read_text())
    se = json.loads((Path(run) / "e5_sample_efficiency.json").read_text())
    fr = json.loads((Path(run) / "e5_final_frontiers.json").read_text())
    out = dict(oracle_utility_per_budget=[round(x, 4) for x in fr["references"]["oracle"]["per_budget"]["utility"]])
    for m, v in st["methods"].items():
        f, a = v["final_utility_norm"], se["auc"]["methods"][m]
        out[m] = dict(final_norm_utility_iqm=round(f["iqm"], 4), ci=[round(f["ci_low"], 4), round(f["ci_high"], 4)],
                      across_seed_std=round(f["std"]["std"], 4),
                      auc_iqm=round(a["iqm"], 4), auc_ci=[round(a["ci_low"], 4), round(a["ci_high"], 4)],
                      utility_per_budget=[round(x, 4) for x in fr["methods"][m]["per_budget"]["utility"]["mean"]])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measured", default="artifacts/tables/cpu_tiny_llava_olmoe_easyvqa.npz")
    p.add_argument("--default", default="src/e5jax/data/default_table.npz")
    p.add_argument("--measured-run", default="artifacts/measured_e5")
    p.add_argument("--default-run", default="artifacts/default_e5_cmp")
    p.add_argument("--train-summary", default="artifacts/measured/train_summary.json")
    p.add_argument("--out", default="artifacts/measured/results_summary.json")
    args = p.parse_args(argv)
    res = {}
    for name, path, run in (("measured", args.measured, args.measured_run), ("default", args.default, args.default_run)):
        t = load_table(path)
        s = table_summary(t)
        lut = s["task_budget_lut_normalized_utility_val"]
        res[name] = dict(table=path, e5_run=run, context_value=round(sum(lut) / len(lut), 4),
                         task_lut_normalized_utility_per_budget=[round(x, 4) for x in lut],
                         oracle_diversity=s["oracle_diversity"], knob_effects=knob_effects(t), e5=e5_results(run))
    train = json.loads(Path(args.train_summary).read_text())
    res["tiny_model"] = dict(train_seconds=train["train"]["train_seconds"], **train["test"])
    text = json.dumps(res, indent=1)
    atomic_write(Path(args.out), lambda f: f.write(text))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
