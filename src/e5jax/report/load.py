"""Reading a finished run: the file names of a run directory, ``e5_training_curves.json`` (checked) and
``e5_overhead_analysis.json`` (normalized), and the one-line ``ReportError``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from e5jax.io import read_json

CURVES = "e5_training_curves.json"
SAMPLE_EFFICIENCY = "e5_sample_efficiency.json"
FRONTIERS = "e5_final_frontiers.json"
STABILITY = "e5_stability_analysis.json"
DECISIONS = "e5_decisions.json"
OVERHEAD = "e5_overhead_analysis.json"
SUMMARY = "summary.md"
FIG_DIR = "figures"
REFERENCE_NAMES = ("oracle", "full", "random")


def schema(name: str) -> str:
    return f"e5jax/{Path(name).stem}/v1"


class ReportError(ValueError):
    """The run directory or its JSON cannot be reported on (one line)."""


def read_checked(p: Path, missing: str):
    """The JSON at ``p``; ReportError(``missing``) when there is no such file, a one-line ReportError when it is not
    valid JSON."""
    if not p.is_file():
        raise ReportError(missing)
    try:
        return read_json(p)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{p}: not valid JSON ({e})") from None


def load_curves(out: Path) -> dict:
    """Read and sanity-check ``out/e5_training_curves.json``; ReportError with a one-line reason otherwise."""
    out = Path(out)
    if not out.is_dir():
        raise ReportError(f"{out}: no such directory")
    p = out / CURVES
    doc = read_checked(p, f"{out}: no {CURVES} (not an e5jax run directory)")
    if not isinstance(doc, dict) or doc.get("schema") != schema(CURVES):
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ReportError(f"{p}: schema is {got!r}, expected {schema(CURVES)!r}")
    for k in ("meta", "references", "methods"):
        if not isinstance(doc.get(k), dict):
            raise ReportError(f"{p}: missing {k!r} block")
    if not doc["methods"]:
        raise ReportError(f"{p}: no finished method to report on")
    for k in ("lam", "budgets", "seeds"):
        if k not in doc["meta"]:
            raise ReportError(f"{p}: meta has no {k!r}")
    for name, m in doc["methods"].items():
        for k in ("env_steps", "env_steps_per_seed", "wall_time_s", "curves", "per_budget"):
            if k not in m:
                raise ReportError(f"{p}: method {name!r} has no {k!r}")
        for k in ("val_utility", "val_utility_norm", "val_quality_mean", "val_slo_violation_rate"):
            if k not in m["curves"]:
                raise ReportError(f"{p}: method {name!r} has no curve {k!r}")
    for r in REFERENCE_NAMES:
        if r not in doc["references"]:
            raise ReportError(f"{p}: references have no {r!r}")
    return doc


def load_overhead(out: Path) -> dict | None:
    """``e5_overhead_analysis.json`` normalized to {methods: {name: {decision_ms{p50,p95,p99,block_p50}, training{total_s,
    components}}}}; None when the file is absent or unreadable (the summary then says "not measured")."""
    p = Path(out) / OVERHEAD
    if not p.is_file():
        return None
    try:
        d = read_json(p)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    src = d.get("methods") if isinstance(d, dict) and isinstance(d.get("methods"), dict) else {}

    def f(x):
        return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None

    methods = {}
    for name, m in src.items():
        if not isinstance(m, dict):
            continue
        dec = m.get("decision_ms") if isinstance(m.get("decision_ms"), dict) else {}
        tr = m.get("training") if isinstance(m.get("training"), dict) else {}
        comps = tr.get("components") if isinstance(tr.get("components"), dict) else {}
        blocks = dec.get("block_p50")
        blocks = [f(x) for x in blocks] if isinstance(blocks, list) else None
        methods[name] = {
            "decision_ms": {**{q: f(dec.get(q)) for q in ("p50", "p95", "p99")},
                            # the interleaved rounds' block medians (paired comparisons); None when absent or not all
                            # finite
                            "block_p50": blocks if blocks and all(x is not None for x in blocks) else None},
            "training": {"total_s": f(tr.get("total_s")),
                         "components": {k: f(v) for k, v in comps.items() if f(v) is not None},
                         # the overhead's resolution fields (never a negative time: null pieces are below resolution)
                         "whole_s": f(tr.get("whole_s")), "eval_time_s": f(tr.get("eval_time_s")),
                         "train_time_resolution_s": f(tr.get("train_time_resolution_s")) if tr.get("total_s") is None
                         else None,
                         "below_resolution": {k: f(v) for k, v in (tr.get("below_resolution") or {}).items()
                                              if f(v) is not None}},
        }
    if not methods:
        return None
    return {"methods": methods}
