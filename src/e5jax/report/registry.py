"""The one list of the run's figures: key, file name, summary.md caption and how to draw it (``e5jax.figures``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple


class FigureInputs(NamedTuple):
    """What the figures are drawn from: the curves document and the derived analyses after their JSON round trip."""

    doc: dict
    thresholds: list
    se: dict
    ff: dict
    st: dict
    ov: dict | None
    refs_norm: dict  # reference -> normalized utility, mean over budgets


@dataclass(frozen=True)
class Figure:
    key: str
    file: str
    caption: str
    draw: Callable  # (e5jax.figures, FigureInputs, path) -> the path written, or None when there is nothing to draw


FIGURE_LIST = (
    Figure("learning", "e5_learning_curves.png",
           "Learning curves: normalized greedy val utility (left) and training reward (right) vs env steps, mean ± std over seeds.",
           lambda F, x, p: F.learning_curves(x.doc, x.refs_norm, x.thresholds, p)),
    Figure("slo", "e5_slo_violation_curves.png",
           "SLO violation rate vs env steps (left) and per budget at the end (right).",
           lambda F, x, p: F.slo_curves(x.doc, x.ff, x.thresholds, p)),
    Figure("quality", "e5_quality_curves.png",
           "Mean quality vs env steps, with the full config, 90%-of-full threshold and oracle.",
           lambda F, x, p: F.quality_curves(x.doc, x.thresholds, p)),
    Figure("sample_efficiency", "e5_sample_efficiency.png",
           "Env steps to reach each threshold, per seed; × = never reached.",
           lambda F, x, p: F.sample_efficiency(x.se, p)),
    Figure("frontiers", "e5_final_frontiers.png",
           "Final p95 latency vs quality per budget, per method, over the oracle and the fixed-config Pareto front.",
           lambda F, x, p: F.final_frontiers(x.ff, p)),
    Figure("stability", "e5_stability.png",
           "Across-seed reward std vs env steps (left); final normalized utility per seed with IQM and bootstrap CI (right).",
           lambda F, x, p: F.stability(x.doc, x.st, p)),
    Figure("overhead", "e5_overhead_comparison.png",
           "Decision-time percentiles and training-time breakdown per method.",
           lambda F, x, p: F.overhead(x.ov, p) if x.ov else None),
)
FIGURES = {f.key: f.file for f in FIGURE_LIST}  # key -> file name under figures/


def draw_figures(inputs: FigureInputs, fig_dir: Path) -> dict[str, Path]:
    """Draw every figure that has data into ``fig_dir``; {key: path} of those drawn, in FIGURE_LIST order."""
    from e5jax import figures as F  # matplotlib is imported only when drawing

    drawn = {}
    for fig in FIGURE_LIST:
        path = Path(fig_dir) / fig.file
        p = fig.draw(F, inputs, path)
        if p is None:  # never leave a figure from an earlier report next to a summary that says it is absent
            path.unlink(missing_ok=True)
        else:
            drawn[fig.key] = p
    return drawn
