"""Everything derived from a finished run's ``e5_training_curves.json``: the analysis JSONs, figures, summary.md.

``write_outputs(out)`` is called by ``e5jax run`` at the end of training and by ``e5jax report DIR`` on an
existing run directory; both read only JSON files (the curves, and ``e5_overhead_analysis.json`` when the
overhead measurement wrote one), so the report can be rebuilt without retraining and is deterministic
(bootstrap resampling uses a fixed seed). ``docs/outputs.md`` describes every file and field.

Modules: ``load`` (file names, reading and checking a run), ``thresholds`` (sample-efficiency thresholds and the
references' values), ``analyses`` (the derived JSONs), ``prose`` (summary.md), ``registry`` (the one list of
figures; drawing in ``e5jax.figures``). Statistics live in ``e5jax.analysis``.
"""

from __future__ import annotations

import json
from pathlib import Path

from e5jax.errors import UsageError
from e5jax.io import atomic_write, to_jsonable, write_json
from e5jax.report.analyses import (FRONTIER_METRICS, auc_range, final_frontiers, report_meta, sample_efficiency,
                                   sample_efficiency_auc, stability_analysis)
from e5jax.report.decisions import decisions_analysis, load_actions
from e5jax.report.load import (CURVES, DECISIONS, FIG_DIR, FRONTIERS, OVERHEAD, REFERENCE_NAMES, SAMPLE_EFFICIENCY, STABILITY,
                               SUMMARY, ReportError, load_curves, load_overhead, schema)
from e5jax.report.prose import summary_markdown
from e5jax.report.registry import FIGURE_LIST, FIGURES, FigureInputs, draw_figures
from e5jax.report.thresholds import (DEFAULT_THRESHOLDS, RELATIVE_KEYS, best_fixed_config, norm_utility,
                                     parse_thresholds, reference_norm_utility, reference_value, resolve_thresholds)

__all__ = [
    "CURVES", "DECISIONS", "DEFAULT_THRESHOLDS", "FIGURES", "FIGURE_LIST", "FIG_DIR", "FRONTIERS", "FRONTIER_METRICS", "OVERHEAD",
    "REFERENCE_NAMES", "RELATIVE_KEYS", "SAMPLE_EFFICIENCY", "STABILITY", "SUMMARY", "FigureInputs", "ReportError",
    "auc_range", "best_fixed_config", "draw_figures", "final_frontiers", "load_curves", "load_overhead", "norm_utility",
    "parse_thresholds", "reference_norm_utility", "reference_value", "report_from_args", "report_meta",
    "resolve_thresholds", "sample_efficiency", "sample_efficiency_auc", "schema", "stability_analysis",
    "summary_markdown", "write_outputs",
]


def write_outputs(out: Path, thresholds=None, figures: bool = True) -> list[Path]:
    """Read ``out/e5_training_curves.json`` and write every derived JSON, figure and summary.md; return their paths.
    ``figures=False`` (``e5jax run --no-figures``) draws none and removes those a previous report drew, so no figure
    disagrees with the JSON beside it; ``e5jax report DIR`` draws them later from the same JSON."""
    out = Path(out)
    doc = load_curves(out)
    if thresholds is None:  # the run's own (recorded in its meta), so a rebuilt report matches the run's
        thresholds = doc["meta"].get("run", {}).get("thresholds") or None
    th = resolve_thresholds(doc, thresholds)
    se = sample_efficiency(doc, th)
    ov = load_overhead(out)
    ff = final_frontiers(doc, ov)
    st = stability_analysis(doc, se)
    dec = decisions_analysis(doc, load_actions(out))
    written = []
    for name, obj in ((SAMPLE_EFFICIENCY, se), (FRONTIERS, ff), (STABILITY, st), (DECISIONS, dec)):
        write_json(out / name, obj)
        written.append(out / name)
    # figures are drawn from the JSON round trip (None -> NaN), exactly what `e5jax report` would see
    se_j, ff_j, st_j, dec_j = (json.loads(json.dumps(to_jsonable(x))) for x in (se, ff, st, dec))
    refs_norm = {k: v["mean"] for k, v in reference_norm_utility(doc).items()}
    if figures:
        figs = draw_figures(FigureInputs(doc, th, se_j, ff_j, st_j, ov, refs_norm), out / FIG_DIR)
        written += list(figs.values())
    else:
        figs = None
        for fig in FIGURE_LIST:
            (out / FIG_DIR / fig.file).unlink(missing_ok=True)
    text = summary_markdown(doc, se_j, ff_j, st_j, ov, figs, dec_j)
    atomic_write(out / SUMMARY, lambda f: f.write(text))
    written.append(out / SUMMARY)
    return written


def report_from_args(args) -> int:
    d = Path(args.dir)
    try:
        paths = write_outputs(d, thresholds=getattr(args, "thresholds", None))
    except ReportError as e:
        raise UsageError(str(e)) from None
    print(f"e5jax report: wrote {len(paths)} files under {d}")
    for p in paths:
        print(f"  {p}")
    return 0
