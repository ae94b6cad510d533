"""Sample-efficiency thresholds: parsing ``--thresholds`` specs, resolving the relative ones against the run's
references (oracle, full config, random), and what the references and the best fixed config reach."""

from __future__ import annotations

import numpy as np

from e5jax import analysis as A
from e5jax.report.load import REFERENCE_NAMES, ReportError

# Thresholds for sample efficiency, on val metrics averaged over the eval budgets. ``value`` is absolute;
# ``fraction_of_full`` / ``fraction_of_oracle`` are relative to the full config's / the utility-optimal oracle's
# val value; ``oracle_plus`` adds to the oracle's value. The first three are the seed's literal thresholds (kept,
# and marked "unreachable by the oracle" where so); the rest are relative to references any table can meet:
# fraction of the oracle gap closed (= normalized utility), SLO violation within 5 points of the oracle's, quality
# >= 95% of the oracle's.
DEFAULT_THRESHOLDS = (
    {"name": "slo_violation_le_5pct", "label": "SLO violation ≤ 5%", "metric": "val_slo_violation_rate", "op": "<=", "value": 0.05},
    {"name": "quality_ge_90pct_full", "label": "quality ≥ 90% of full", "metric": "val_quality_mean", "op": ">=", "fraction_of_full": 0.9},
    {"name": "utility_norm_ge_0.9", "label": "norm. utility ≥ 0.9", "metric": "val_utility_norm", "op": ">=", "value": 0.9},
    {"name": "gap_closed_ge_0.5", "label": "gap closed ≥ 0.5", "metric": "val_utility_norm", "op": ">=", "value": 0.5},
    {"name": "gap_closed_ge_0.8", "label": "gap closed ≥ 0.8", "metric": "val_utility_norm", "op": ">=", "value": 0.8},
    {"name": "gap_closed_ge_0.95", "label": "gap closed ≥ 0.95", "metric": "val_utility_norm", "op": ">=", "value": 0.95},
    {"name": "slo_within_5pts_of_oracle", "label": "SLO violation ≤ oracle's + 5 pts", "metric": "val_slo_violation_rate",
     "op": "<=", "oracle_plus": 0.05},
    {"name": "quality_ge_95pct_oracle", "label": "quality ≥ 95% of oracle's", "metric": "val_quality_mean", "op": ">=",
     "fraction_of_oracle": 0.95},
)
RELATIVE_KEYS = ("fraction_of_full", "fraction_of_oracle", "oracle_plus")


def parse_thresholds(spec) -> list[dict]:
    """None or "" -> defaults; a list of dicts (same keys as DEFAULT_THRESHOLDS); or a string of ``key=number``
    items that change the defaults:

    * ``slo`` (max violation rate), ``quality`` (fraction of the full config's quality), ``utility_norm`` (min
      normalized utility): the seed's literal thresholds;
    * ``gaps=0.5/0.8/0.95``: the fractions of the oracle gap closed (replaces the default list);
    * ``slo_vs_oracle`` (points above the oracle's violation rate), ``quality_vs_oracle`` (fraction of the
      oracle's quality).
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return [dict(t) for t in DEFAULT_THRESHOLDS]
    if isinstance(spec, (list, tuple)):
        out = [dict(t) for t in spec]
        for t in out:
            if not {"name", "metric", "op"} <= set(t) or not ({"value", *RELATIVE_KEYS} & set(t)):
                raise ReportError(f"threshold {t}: needs name, metric, op and value, {', '.join(RELATIVE_KEYS)}")
        return out
    vals, gaps = {}, None
    for part in str(spec).split(","):
        if not part.strip():
            continue
        k, _, v = part.partition("=")
        k = k.strip()
        try:
            if k == "gaps":
                gaps = [float(x) for x in v.split("/") if x.strip()]
            else:
                vals[k] = float(v)
        except ValueError:
            raise ReportError(f"thresholds: {part.strip()!r} is not key=number (gaps=a/b/c)") from None
    known = {"slo", "quality", "utility_norm", "slo_vs_oracle", "quality_vs_oracle", "gaps"}
    if set(vals) - known:
        raise ReportError(f"thresholds: unknown key {sorted(set(vals) - known)[0]!r} (known: {', '.join(sorted(known))})")
    out = [dict(t) for t in DEFAULT_THRESHOLDS]
    by = {t["name"]: t for t in out}
    if "slo" in vals:
        by["slo_violation_le_5pct"].update(value=vals["slo"], name=f"slo_violation_le_{100 * vals['slo']:g}pct",
                                           label=f"SLO violation ≤ {100 * vals['slo']:g}%")
    if "quality" in vals:
        by["quality_ge_90pct_full"].update(fraction_of_full=vals["quality"], name=f"quality_ge_{100 * vals['quality']:g}pct_full",
                                           label=f"quality ≥ {100 * vals['quality']:g}% of full")
    if "utility_norm" in vals:
        by["utility_norm_ge_0.9"].update(value=vals["utility_norm"], name=f"utility_norm_ge_{vals['utility_norm']:g}",
                                         label=f"norm. utility ≥ {vals['utility_norm']:g}")
    if "slo_vs_oracle" in vals:
        by["slo_within_5pts_of_oracle"].update(oracle_plus=vals["slo_vs_oracle"],
                                               name=f"slo_within_{100 * vals['slo_vs_oracle']:g}pts_of_oracle",
                                               label=f"SLO violation ≤ oracle's + {100 * vals['slo_vs_oracle']:g} pts")
    if "quality_vs_oracle" in vals:
        by["quality_ge_95pct_oracle"].update(fraction_of_oracle=vals["quality_vs_oracle"],
                                             name=f"quality_ge_{100 * vals['quality_vs_oracle']:g}pct_oracle",
                                             label=f"quality ≥ {100 * vals['quality_vs_oracle']:g}% of oracle's")
    if gaps is not None:
        out = [t for t in out if not t["name"].startswith("gap_closed_")]
        at = next(i for i, t in enumerate(out) if t["name"].startswith("slo_within_"))
        out[at:at] = [{"name": f"gap_closed_ge_{g:g}", "label": f"gap closed ≥ {g:g}", "metric": "val_utility_norm",
                       "op": ">=", "value": g} for g in gaps]
    return out


def norm_utility(doc, u) -> np.ndarray:
    """Utilities ``u`` [..., B] (per eval budget) normalized by the run's random and oracle references."""
    ref = doc["references"]
    return A.normalized_utility(A.arr(u), A.arr(ref["random"]["per_budget"]["utility"]),
                                A.arr(ref["oracle"]["per_budget"]["utility"]))


def reference_norm_utility(doc) -> dict:
    """Normalized utility of oracle (1), random (0) and full config, per budget then averaged."""
    out = {}
    for r in REFERENCE_NAMES:
        per = norm_utility(doc, doc["references"][r]["per_budget"]["utility"])
        out[r] = {"per_budget": per, "mean": float(np.nanmean(per))}
    return out


def reference_value(doc, metric: str, ref: str):
    if metric == "val_utility_norm":
        return reference_norm_utility(doc)[ref]["mean"]
    key = metric[4:] if metric.startswith("val_") else metric
    return A.num(doc["references"][ref]["mean_over_budgets"].get(key))


def best_fixed_config(doc, metric: str, op: str):
    """The single fixed config whose val metric (mean over budgets) is best in the threshold's direction:
    (value, config index), or (None, None) when the run has no fixed-config block or no such metric."""
    fx = doc["references"].get("fixed_configs") or {}
    pb = fx.get("per_budget") or {}
    if metric == "val_utility_norm" and "utility" in pb:
        v = np.nanmean(norm_utility(doc, pb["utility"]), 1)
    else:
        key = metric[4:] if metric.startswith("val_") else metric
        if key not in pb:
            return None, None
        v = np.nanmean(A.arr(pb[key]), 1)
    if not np.isfinite(v).any():
        return None, None
    i = int(np.nanargmin(v) if op in ("<=", "<") else np.nanargmax(v))
    return float(v[i]), i


def resolve_thresholds(doc, spec=None) -> list[dict]:
    out = []
    for t in parse_thresholds(spec):
        t = dict(t)
        rel = next((k for k in RELATIVE_KEYS if k in t), None) if "value" not in t else None
        if rel is not None:
            ref = "full" if rel == "fraction_of_full" else "oracle"
            rv = reference_value(doc, t["metric"], ref)
            if rv is None:
                raise ReportError(f"threshold {t['name']}: the {ref} reference has no {t['metric']} value")
            t["value"] = rv + t[rel] if rel == "oracle_plus" else t[rel] * rv
            how = f"{ref} ({rv:.4f}) + {t[rel]:g}" if rel == "oracle_plus" else f"{t[rel]:g} × {ref} ({rv:.4f})"
            t["definition"] = f"{t['metric']} (mean over budgets) {t['op']} {how} = {t['value']:.4f}"
        else:
            t["definition"] = f"{t['metric']} (mean over budgets) {t['op']} {t['value']:g}"
        refs = {r: reference_value(doc, t["metric"], r) for r in REFERENCE_NAMES}
        t["reference_values"] = refs
        t["oracle_meets"] = None if refs["oracle"] is None else A.first_crossing([refs["oracle"]], t["value"], t["op"]) == 0
        bv, bi = best_fixed_config(doc, t["metric"], t["op"])
        t["best_fixed_config"] = {"value": bv, "config_index": bi,
                                  "meets": None if bv is None else A.first_crossing([bv], t["value"], t["op"]) == 0}
        out.append(t)
    return out
