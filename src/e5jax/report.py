"""Everything derived from a finished run's ``e5_training_curves.json``: the analysis JSONs, figures, summary.md.

``write_outputs(out)`` is called by ``e5jax run`` at the end of training and by ``e5jax report DIR`` on an
existing run directory; both read only JSON files (the curves, and ``e5_overhead_analysis.json`` when the
overhead measurement wrote one), so the report can be rebuilt without retraining and is deterministic
(bootstrap resampling uses a fixed seed). Statistics live in ``e5jax.analysis``, drawing in ``e5jax.figures``;
``docs/outputs.md`` describes every file and field.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path

import numpy as np

from e5jax import analysis as A
from e5jax.errors import UsageError
from e5jax.io import atomic_write, read_json, to_jsonable, write_json

CURVES = "e5_training_curves.json"
SAMPLE_EFFICIENCY = "e5_sample_efficiency.json"
FRONTIERS = "e5_final_frontiers.json"
STABILITY = "e5_stability_analysis.json"
OVERHEAD = "e5_overhead_analysis.json"
SUMMARY = "summary.md"
FIG_DIR = "figures"
FIGURES = {
    "learning": "e5_learning_curves.png",
    "slo": "e5_slo_violation_curves.png",
    "quality": "e5_quality_curves.png",
    "sample_efficiency": "e5_sample_efficiency.png",
    "frontiers": "e5_final_frontiers.png",
    "stability": "e5_stability.png",
    "overhead": "e5_overhead_comparison.png",
}

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
FRONTIER_METRICS = {  # output name -> per_budget key in the curves file
    "quality_mean": "val_quality_mean",
    "latency_p95_ms": "val_latency_p95_ms",
    "latency_p95_norm": "val_latency_p95_norm",
    "slo_violation_rate": "val_slo_violation_rate",
    "utility": "val_utility",
    "utility_norm": "val_utility_norm",
}
REFERENCE_NAMES = ("oracle", "full", "random")


def schema(name: str) -> str:
    return f"e5jax/{Path(name).stem}/v1"


class ReportError(ValueError):
    """The run directory or its JSON cannot be reported on (one line)."""


# ------------------------------------------------------------------------------------------------ loading


def load_curves(out: Path) -> dict:
    """Read and sanity-check ``out/e5_training_curves.json``; ReportError with a one-line reason otherwise."""
    out = Path(out)
    if not out.is_dir():
        raise ReportError(f"{out}: no such directory")
    p = out / CURVES
    if not p.is_file():
        raise ReportError(f"{out}: no {CURVES} (not an e5jax run directory)")
    try:
        doc = read_json(p)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{p}: not valid JSON ({e})") from None
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
    """``e5_overhead_analysis.json`` normalized to {methods: {name: {decision_ms{p50,p95,p99}, training{total_s,
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
        methods[name] = {
            "decision_ms": {q: f(dec.get(q)) for q in ("p50", "p95", "p99")},
            "training": {"total_s": f(tr.get("total_s")),
                         "components": {k: f(v) for k, v in comps.items() if f(v) is not None}},
        }
    if not methods:
        return None
    return {"schema": d.get("schema"), "methods": methods}


# ------------------------------------------------------------------------------------------- thresholds


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


def reference_norm_utility(doc) -> dict:
    """Normalized utility of oracle (1), random (0) and full config, per budget then averaged."""
    ref = doc["references"]
    u_r, u_o = A.arr(ref["random"]["per_budget"]["utility"]), A.arr(ref["oracle"]["per_budget"]["utility"])
    out = {}
    for r in REFERENCE_NAMES:
        with np.errstate(invalid="ignore", divide="ignore"):
            per = (A.arr(ref[r]["per_budget"]["utility"]) - u_r) / (u_o - u_r)
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
        ref = doc["references"]
        u_r, u_o = A.arr(ref["random"]["per_budget"]["utility"]), A.arr(ref["oracle"]["per_budget"]["utility"])
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.nanmean((A.arr(pb["utility"]) - u_r) / (u_o - u_r), 1)
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


# ------------------------------------------------------------------------------------------------ analyses


def report_meta(doc) -> dict:
    meta = copy.deepcopy(doc["meta"])
    meta["source"] = {"file": CURVES, "schema": doc.get("schema"), "complete": bool(doc.get("complete", False)),
                      "methods": list(doc["methods"])}
    meta["generated_by"] = "e5jax.report (rebuild: e5jax report DIR)"
    return meta


def sample_efficiency(doc, thresholds: list[dict]) -> dict:
    methods = {}
    for name, m in doc["methods"].items():
        r = {}
        for t in thresholds:
            c = m["curves"].get(t["metric"])
            if c is None:
                r[t["name"]] = None
                continue
            cr = A.crossings(m["env_steps_per_seed"], c["per_seed"], t["value"], t["op"], wall=m["wall_time_s"])
            upd = m.get("updates")
            cr["updates_per_seed"] = [None if i is None or upd is None else upd[i] for i in cr["eval_index_per_seed"]]
            cr["final_value_mean"] = A.num(np.nanmean(A.arr(c["per_seed"])[:, -1]))
            r[t["name"]] = cr
        methods[name] = r
    return {
        "schema": schema(SAMPLE_EFFICIENCY),
        "meta": report_meta(doc),
        "definition": ("first eval point at which the per-seed val metric (greedy policy, mean over budgets) meets the "
                       "threshold; env steps = that seed's cumulative profiling calls at that point, wall time = "
                       "cumulative training time of all seeds together (vmapped, compile excluded); means/medians over "
                       "the seeds that reached it, null when none did; resolution = eval points"),
        "thresholds": thresholds,
        "max_env_steps": {n: A.num(A.arr(m["env_steps"])[-1]) for n, m in doc["methods"].items()},
        "eval_every_updates": doc["meta"].get("run", {}).get("eval_every"),
        "eval_points_updates": {n: m.get("updates") for n, m in doc["methods"].items()},
        "methods": methods,
        "auc": sample_efficiency_auc(doc),
    }


def _poi_matrix(per_seed: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p[i][j] = P(X_i > X_j) + 0.5 P(X_i = X_j) over seed pairs, with bootstrap CIs (methods in dict order)."""
    names = list(per_seed)
    P = np.full((len(names),) * 2, np.nan)
    lo, hi = P.copy(), P.copy()
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                r = A.probability_of_improvement_ci(per_seed[a], per_seed[b])
                P[i, j], lo[i, j], hi[i, j] = r["p"], r["ci_low"], r["ci_high"]
    return P, lo, hi


def auc_range(doc) -> tuple[float, float]:
    """The fixed env-step range of the AUC: one update's env steps .. the run's env-step budget per seed."""
    run = doc["meta"].get("run", {})
    steps = [A.arr(m["env_steps"]) for m in doc["methods"].values()]
    lo = run.get("env_steps_per_update") or min(float(x[x > 0].min()) for x in steps if (x > 0).any())
    hi = run.get("total_env_steps") or max(float(x[-1]) for x in steps)
    return float(lo), float(hi)


def sample_efficiency_auc(doc) -> dict:
    """Per seed: the normalized-utility curve's area over log env steps in a fixed range, scaled to [0, 1]."""
    lo, hi = auc_range(doc)
    per = {}
    for name, m in doc["methods"].items():
        steps = A.arr(m["env_steps_per_seed"])
        vals = A.arr(m["curves"]["val_utility_norm"]["per_seed"])
        per[name] = np.array([A.auc_log_steps(steps[i], vals[i], lo, hi) for i in range(len(vals))])
    P, plo, phi = _poi_matrix(per)
    return {
        "metric": "val_utility_norm",
        "env_steps_range": [lo, hi],
        "definition": (f"per seed, the area under the greedy val normalized-utility curve (fraction of the oracle gap "
                       f"closed, mean over budgets) over log10 env steps from {lo:g} (one update) to {hi:g} (the run's "
                       f"budget), divided by log10({hi:g}/{lo:g}): the curve's mean over log env steps. The curve is a step "
                       "function (the last evaluated policy holds until the next eval point, and after the method's "
                       f"last one). IQM = trim_mean(x, 0.25) with a {A.CONFIDENCE:.0%} percentile bootstrap CI over "
                       "seeds; p[i][j] = P(AUC_i > AUC_j) + 0.5 P(=) over seed pairs"),
        "methods": {n: {"per_seed": v, **A.iqm_ci(v), "t": _ci_block(v)} for n, v in per.items()},
        "probability_of_improvement": {"methods": list(per), "p": P, "ci_low": plo, "ci_high": phi},
    }


def _ci_block(x, axis=0) -> dict:
    c = A.t_ci(x, axis=axis)
    return {"mean": c["mean"], "ci_low": c["ci_low"], "ci_high": c["ci_high"], "std": c["std"], "n": c["n"]}


def final_frontiers(doc, ov: dict | None = None) -> dict:
    """``ov``: the overhead analysis (``load_overhead``), for each method's ``controller_overhead_ms``."""
    meta = doc["meta"]
    budgets = list(meta["budgets"])
    ref = doc["references"]
    norm = reference_norm_utility(doc)
    fx = ref.get("fixed_configs") or {}
    knobs = meta.get("table", {}).get("knobs") or {}
    fixed = {"num_configs": 0, "latency_p95_ms": [], "latency_p95_norm": [], "quality_mean": [], "pareto_front": []}
    if fx.get("per_budget"):
        pb = fx["per_budget"]
        lat = np.nanmean(A.arr(pb["latency_p95_ms"]), 1)
        latn = np.nanmean(A.arr(pb["latency_p95_norm"]), 1) if "latency_p95_norm" in pb else np.full(lat.shape, np.nan)
        q = np.nanmean(A.arr(pb["quality_mean"]), 1)
        lv = fx.get("level_index")
        front = []
        for i in A.pareto_front(lat, q):
            p = {"config_index": int(i), "latency_p95_ms": lat[i], "latency_p95_norm": latn[i], "quality_mean": q[i]}
            if lv is not None:
                p["level_index"] = list(lv[i])
                if len(knobs) == len(lv[i]):
                    p["knobs"] = {k: v[lv[i][j]] for j, (k, v) in enumerate(knobs.items())}
            front.append(p)
        fixed = {"num_configs": int(lat.size), "latency_p95_ms": lat, "latency_p95_norm": latn, "quality_mean": q,
                 "pareto_front": front}

    methods = {}
    for name, m in doc["methods"].items():
        per_budget, over = {}, {}
        for out_key, key in FRONTIER_METRICS.items():
            blk = m["per_budget"].get(key)
            if blk is None:
                continue
            ps = A.arr(blk["per_seed"])[:, -1, :]  # [S, B] at the final eval point
            per_budget[out_key] = {**_ci_block(ps), "per_seed": ps}
            with np.errstate(invalid="ignore"):
                over[out_key] = {**_ci_block(np.nanmean(ps, 1)), "per_seed": np.nanmean(ps, 1)}
        dom = None
        if fixed["pareto_front"] and "latency_p95_ms" in per_budget:
            fl = [p["latency_p95_ms"] for p in fixed["pareto_front"]]
            fq = [p["quality_mean"] for p in fixed["pareto_front"]]
            dom = [A.dominated_by(a, b, fl, fq) for a, b in zip(per_budget["latency_p95_ms"]["mean"], per_budget["quality_mean"]["mean"])]
        upd = m.get("updates")
        methods[name] = {
            "final_eval": {"updates": upd[-1] if upd else None, "env_steps": A.num(A.arr(m["env_steps"])[-1])},
            "per_budget": per_budget,
            "mean_over_budgets": over,
            "dominated_by_fixed_front": dom,
            # the seed's metric: p50 eager decision time per request (ms); None when the overhead was not measured
            "controller_overhead_ms": A.num(((ov or {}).get("methods", {}).get(name, {}).get("decision_ms") or {}).get("p50")),
        }
    refs = {}
    for r in REFERENCE_NAMES:
        pbr = {k: A.arr(v) for k, v in ref[r]["per_budget"].items()}
        pbr["utility_norm"] = norm[r]["per_budget"]
        mob = dict(ref[r]["mean_over_budgets"])
        mob["utility_norm"] = norm[r]["mean"]
        refs[r] = {"per_budget": pbr, "mean_over_budgets": mob}
    return {
        "schema": schema(FRONTIERS),
        "meta": report_meta(doc),
        "definition": ("final eval point, greedy policy, val split; per budget: mean over seeds with a Student-t 95% CI "
                       "(ddof=1); mean_over_budgets: the same on each seed's budget average; fixed configs: p95 latency "
                       "and quality over val requests (the same at every budget), Pareto front = not dominated in "
                       "(lower p95 latency, higher quality)"),
        "budgets": budgets,
        "metrics": list(FRONTIER_METRICS),
        "methods": methods,
        "references": refs,
        "fixed_configs": fixed,
    }


def stability_analysis(doc, se: dict) -> dict:
    names = list(doc["methods"])
    methods, finals = {}, {}
    for name, m in doc["methods"].items():
        c = m["curves"]
        across = {"env_steps": A.arr(m["env_steps"])}
        for k in ("val_utility", "val_utility_norm", "train_utility"):
            if k in c:
                across[k] = A.t_ci(A.arr(c[k]["per_seed"]), axis=0)["std"]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_std = A.num(np.nanmean(across["val_utility"][1:])) if across["val_utility"].size > 1 else A.num(across["val_utility"][0])
        within = {k: A.within_run_std(c[k]["per_seed"]) for k in ("val_utility", "val_utility_norm") if k in c}
        fin = A.arr(c["val_utility_norm"]["per_seed"])[:, -1]
        finals[name] = fin
        fu = {"per_seed": fin, **A.iqm_ci(fin), "t": _ci_block(fin), "std": A.std_ci(fin)}
        fail = None
        if "num_failed_updates" in c:
            nf = A.arr(c["num_failed_updates"]["per_seed"])
            last = np.array([row[np.isfinite(row)][-1] if np.isfinite(row).any() else np.nan for row in nf])
            fail = {"per_seed": last, "total": A.num(np.nansum(last)) if np.isfinite(last).any() else None,
                    "max": A.num(np.nanmax(last)) if np.isfinite(last).any() else None}
        methods[name] = {
            "across_seed_std": across,
            "mean_across_seed_std_val_utility": mean_std,
            "within_run_std": within,
            "fraction_reached": {t: (r["fraction_reached"] if r else None) for t, r in se["methods"][name].items()},
            "num_failed_updates": fail,
            "final_utility_norm": fu,
        }
    P, lo, hi = _poi_matrix(finals)
    return {
        "schema": schema(STABILITY),
        "meta": report_meta(doc),
        "definition": {
            "across_seed_std": "sample std (ddof=1) across seeds at each eval point; val_* = greedy val policy, "
                               "train_utility = mean reward of the samples collected in that chunk",
            "mean_across_seed_std_val_utility": "across-seed std of val utility averaged over the eval points after 0",
            "within_run_std": "per seed, std (ddof=0) over the last third of eval points (at least 2, after point 0); "
                              "mean = average over seeds",
            "final_utility_norm": f"final normalized utility per seed; IQM = scipy.stats.trim_mean(x, 0.25); CI = "
                                  f"{A.CONFIDENCE:.0%} percentile bootstrap over seeds ({A.N_RESAMPLES} resamples, "
                                  f"seed {A.BOOT_SEED}); t = Student-t CI of the mean; std = ddof=1 with a chi-square CI",
            "probability_of_improvement": "p[i][j] = P(X_i > X_j) + 0.5 P(X_i = X_j) over seed pairs of final normalized "
                                          "utility = Mann-Whitney U / (n_i n_j); CI: percentile bootstrap resampling each "
                                          "method's seeds independently",
            "num_failed_updates": "cumulative non-finite updates skipped, at the final eval point",
        },
        "methods": methods,
        "probability_of_improvement": {"methods": names, "p": P, "ci_low": lo, "ci_high": hi},
    }


# --------------------------------------------------------------------------------------------------- summary


def _f(x, nd=3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _pct(x, nd=1) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.{nd}f}%"


def _steps(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:,.0f}"


def _pm(c, fmt=_f, scale=1.0) -> str:
    m, hi = c["mean"], c["ci_high"]
    if m is None or not np.isfinite(m):
        return "—"
    if hi is None or not np.isfinite(hi):
        return fmt(m * scale) if fmt is not _pct else fmt(m)
    if fmt is _pct:
        return f"{100 * m:.1f}% ± {100 * (hi - m):.1f}"
    if fmt is _steps:
        return f"{m:,.0f} ± {hi - m:,.0f}"
    return f"{m:.3f} ± {hi - m:.3f}"


def _overlap(a_lo, a_hi, b_lo, b_hi) -> bool | None:
    vals = [a_lo, a_hi, b_lo, b_hi]
    if any(v is None or not np.isfinite(v) for v in vals):
        return None
    return not (a_hi < b_lo or b_hi < a_lo)


def _thr_cell(r) -> str:
    if r is None:
        return "n/a"
    k, S = r["seeds_reached"], r["seeds_total"]
    if k == 0:
        return f"not reached (0/{S})"
    h = r.get("seeds_holding", k)
    return f"{r['env_steps_mean']:,.0f} ({k}/{S}" + (f"; {h} held" if h < k else "") + ")"


def _answer_auc(se, S) -> str | None:
    """The headline: which method's normalized-utility curve has the largest area over log env steps."""
    au = se.get("auc")
    if not au:
        return None
    ms = {n: m for n, m in au["methods"].items() if m.get("iqm") is not None and np.isfinite(m["iqm"])}
    if not ms:
        return None
    rank = sorted(ms, key=lambda n: -ms[n]["iqm"])
    lo, hi = au["env_steps_range"]
    b = rank[0]
    s = (f"*Sample-efficiency AUC* (normalized utility averaged over log env steps {_steps(lo)}–{_steps(hi)}; the "
         f"headline scalar): **{b}** {_f(ms[b]['iqm'])} [{_f(ms[b]['ci_low'])}, {_f(ms[b]['ci_high'])}]")
    if len(rank) > 1:
        c = rank[1]
        P = au["probability_of_improvement"]
        i, j = P["methods"].index(b), P["methods"].index(c)
        ov = _overlap(ms[b]["ci_low"], ms[b]["ci_high"], ms[c]["ci_low"], ms[c]["ci_high"])
        s += (f", then {c} {_f(ms[c]['iqm'])} [{_f(ms[c]['ci_low'])}, {_f(ms[c]['ci_high'])}]; "
              f"P({b} > {c}) = {_f(P['p'][i][j], 2)} [{_f(P['ci_low'][i][j], 2)}, {_f(P['ci_high'][i][j], 2)}]"
              + ("; their CIs overlap, so the order is not resolved" if ov else "; CIs do not overlap" if ov is False else ""))
        s += "; order: " + " > ".join(f"{n} {_f(ms[n]['iqm'])}" for n in rank)
    return s + f" ({S} seeds)."


def _answer_sample_efficiency(se, thresholds, S) -> list[str]:
    out = []
    head = _answer_auc(se, S)
    if head:
        out.append(head)
    ev = se.get("eval_every_updates")
    for t in thresholds:
        rs = {n: se["methods"][n][t["name"]] for n in se["methods"] if se["methods"][n].get(t["name"])}
        reached = [n for n, r in rs.items() if r["seeds_reached"] > 0]
        never = [n for n, r in rs.items() if r["seeds_reached"] == 0]
        refnote = _reachability(t)
        if not reached:
            maxs = max((v for v in se["max_env_steps"].values() if v is not None), default=None)
            out.append(f"*{t['label']}*: no method reached it within {_steps(maxs)} env steps per seed ({refnote}).")
            continue
        rank = sorted(reached, key=lambda n: (-rs[n]["fraction_reached"], rs[n]["env_steps_mean"]))
        b = rank[0]
        rb = rs[b]
        spread = (f"every one at {_steps(rb['env_steps_min'])}" if rb["env_steps_min"] == rb["env_steps_max"]
                  else f"per seed {_steps(rb['env_steps_min'])}–{_steps(rb['env_steps_max'])}")
        s = (f"*{t['label']}*: first to reach it is **{b}** at {_steps(rb['env_steps_mean'])} env steps "
             f"(mean of the {rb['seeds_reached']}/{S} seeds reaching it; {spread})")
        if rb["env_steps_max"] == 0:
            s += " — its untrained initial policy already meets it"
        if rb.get("seeds_holding", rb["seeds_reached"]) < rb["seeds_reached"]:
            s += f", but only {rb['seeds_holding']}/{S} seeds still meet it at the end of the run"
        if len(rank) > 1:
            c = rank[1]
            rc = rs[c]
            s += f"; next {c} at {_steps(rc['env_steps_mean'])} ({rc['seeds_reached']}/{S})"
            if rb["seeds_reached"] == rc["seeds_reached"]:
                if _overlap(rb["env_steps_min"], rb["env_steps_max"], rc["env_steps_min"], rc["env_steps_max"]):
                    s += (" — their per-seed ranges overlap, so the order between them is not resolved"
                          + (f" (resolution: the eval points — after 1, 2, 4, … updates, then every {ev})" if ev else ""))
                else:
                    s += " — per-seed ranges do not overlap"
        partial = [n for n in reached if rs[n]["seeds_reached"] < S and n != b]
        if partial:
            s += "; reached by only some seeds: " + ", ".join(f"{n} ({rs[n]['seeds_reached']}/{S})" for n in partial)
        if never:
            s += "; never reached: " + ", ".join(never)
        if rb.get("seeds_holding", rb["seeds_reached"]) < rb["seeds_reached"]:
            hold = [n for n in rs if rs[n].get("seeds_holding")]
            if hold:
                h = sorted(hold, key=lambda n: (-rs[n]["seeds_holding"], rs[n]["env_steps_held_mean"]))[0]
                s += (f"; counting only seeds that still meet it at the end, the fastest is **{h}**, holding it from "
                      f"{_steps(rs[h]['env_steps_held_mean'])} env steps on ({rs[h]['seeds_holding']}/{S} seeds)")
            else:
                s += "; no method still meets it at the end of the run"
        s += f" ({refnote})."
        out.append(s)
    return out


def _thr_value(t, v) -> str:
    return _pct(v) if "slo" in t["metric"] else _f(v)


def _reachability(t) -> str:
    """What the references say about a threshold: the utility-optimal oracle's value and the best fixed config's."""
    o = t["reference_values"].get("oracle")
    s = f"utility-optimal oracle: {_thr_value(t, o)}" + (", does not meet it" if t["oracle_meets"] is False else "")
    bf = t.get("best_fixed_config") or {}
    if bf.get("value") is not None:
        s += (f"; best single fixed config (#{bf['config_index']}): {_thr_value(t, bf['value'])}"
              + (", meets it" if bf["meets"] else ", does not meet it"))
    return s


def _answer_stability(st, S) -> list[str]:
    ms = st["methods"]
    names = list(ms)
    sd = {n: ms[n]["final_utility_norm"]["std"] for n in names}
    valid = [n for n in names if sd[n]["std"] is not None and np.isfinite(sd[n]["std"])]
    out = []
    if not valid:
        return [f"With {S} seed(s) there is no across-seed spread to compare."]
    lo = min(valid, key=lambda n: sd[n]["std"])
    hi = max(valid, key=lambda n: sd[n]["std"])
    ov = [n for n in valid if n != lo and _overlap(sd[lo]["ci_low"], sd[lo]["ci_high"], sd[n]["ci_low"], sd[n]["ci_high"])]
    s = (f"Lowest across-seed std of final normalized utility: **{lo}** {_f(sd[lo]['std'])} "
         f"(95% CI {_f(sd[lo]['ci_low'])}–{_f(sd[lo]['ci_high'])})")
    s += (f"; highest: {hi} {_f(sd[hi]['std'])} ({_f(sd[hi]['ci_low'])}–{_f(sd[hi]['ci_high'])}). "
          if sd[hi]["std"] > sd[lo]["std"] else ". ")
    if len(valid) > 1:
        s += (f"The std CI of {lo} overlaps that of {len(ov)} of the other {len(valid) - 1} methods, so with {S} seeds "
              + ("this ranking is not resolved." if len(ov) == len(valid) - 1 else
                 f"it is resolved only against {', '.join(n for n in valid if n != lo and n not in ov)}."))
    out.append(s)
    w = {n: ms[n]["final_utility_norm"]["ci_high"] - ms[n]["final_utility_norm"]["ci_low"] for n in names
         if ms[n]["final_utility_norm"]["ci_low"] is not None and np.isfinite(ms[n]["final_utility_norm"]["ci_low"])}
    if w:
        nb = min(w, key=w.get)
        out.append(f"Narrowest 95% bootstrap CI of the IQM: **{nb}** (width {_f(w[nb])}); widest: "
                   f"{max(w, key=w.get)} ({_f(max(w.values()))}).")
    tr = {n: ms[n]["mean_across_seed_std_val_utility"] for n in names if ms[n]["mean_across_seed_std_val_utility"] is not None}
    if tr:
        a, b = min(tr, key=tr.get), max(tr, key=tr.get)
        out.append(f"Across-seed std of val utility averaged over training (reward units, `e5_stability.png` left): "
                   f"lowest {a} {_f(tr[a], 4)}, highest {b} {_f(tr[b], 4)}.")
    wr = {n: ms[n]["within_run_std"]["val_utility_norm"]["mean"] for n in names
          if "val_utility_norm" in ms[n]["within_run_std"] and ms[n]["within_run_std"]["val_utility_norm"]["mean"] is not None
          and np.isfinite(ms[n]["within_run_std"]["val_utility_norm"]["mean"])}
    if wr:
        a, b = min(wr, key=wr.get), max(wr, key=wr.get)
        k = ms[a]["within_run_std"]["val_utility_norm"]["num_points"]
        out.append(f"Within-run variability after convergence (std of normalized utility over the last {k} eval points, "
                   f"mean over seeds): lowest {a} {_f(wr[a])}, highest {b} {_f(wr[b])}.")
    fails = {n: ms[n]["num_failed_updates"]["total"] for n in names if ms[n]["num_failed_updates"] and ms[n]["num_failed_updates"]["total"] is not None}
    if fails:
        if all(v == 0 for v in fails.values()):
            out.append(f"Failed (non-finite, skipped) updates: none in any method or seed ({', '.join(fails)}).")
        else:
            out.append("Failed (non-finite, skipped) updates, total over seeds: "
                       + ", ".join(f"{n} {v:.0f}" for n, v in fails.items()) + ".")
    return out


def _answer_overhead(doc, ov) -> list[str]:
    meta = doc["meta"]
    host = meta.get("host", {})
    ms = doc["methods"]
    tt = {n: A.num(m.get("train_time_s")) for n, m in ms.items()}
    tt = {n: v for n, v in tt.items() if v is not None}
    out = []
    if tt:
        order = sorted(tt, key=tt.get)
        out.append(f"Training wall time for all {meta['seeds']} seeds together (vmapped; backend {host.get('backend', '?')}, "
                   f"{host.get('device_kind', '?')}; compile excluded): "
                   + ", ".join(f"{n} {tt[n]:.3g} s" for n in order)
                   + f" — fastest **{order[0]}**, slowest {order[-1]}.")
        ct = {n: A.num(m.get("compile_time_s")) for n, m in ms.items() if A.num(m.get("compile_time_s")) is not None}
        if ct:
            out.append("One-off compile time: " + ", ".join(f"{n} {v:.3g} s" for n, v in ct.items()) + ".")
        per_k = {n: tt[n] / (A.arr(ms[n]["env_steps"])[-1] / 1000) for n in tt if A.arr(ms[n]["env_steps"])[-1] > 0}
        if per_k:
            out.append("Per 1,000 env steps: " + ", ".join(f"{n} {v * 1000:.3g} ms" for n, v in per_k.items()) + ".")
    pc = {n: m.get("num_params") for n, m in ms.items() if m.get("num_params")}
    if pc:
        out.append("Trainable parameters (incl. PPO's critic): " + ", ".join(f"{n} {v:,}" for n, v in pc.items())
                   + "; the training-free methods have none.")
    if ov:
        d = {n: v["decision_ms"] for n, v in ov["methods"].items() if v["decision_ms"].get("p50") is not None}
        if d:
            order = sorted(d, key=lambda n: d[n]["p50"])
            lo = [n for n in order if d[n]["p50"] == d[order[0]]["p50"]]
            hi = [n for n in order if d[n]["p50"] == d[order[-1]]["p50"]]
            g = lambda v: "—" if v is None else f"{v:.3g}"  # noqa: E731
            out.append("Decision time per request (p50 / p95 ms, `e5_overhead_analysis.json`): "
                       + ", ".join(f"{n} {g(d[n]['p50'])} / {g(d[n]['p95'])}" for n in order)
                       + f" — cheapest (p50) **{' = '.join(lo)}**, most expensive {' = '.join(hi)}.")
        comps = {n: v["training"]["components"] for n, v in ov["methods"].items() if v["training"]["components"]}
        if comps:
            out.append("Training-time components (s): " + "; ".join(
                f"{n}: " + ", ".join(f"{k} {x:.3g}" for k, x in c.items()) for n, c in comps.items()) + ".")
    else:
        out.append("Controller decision overhead per request: not measured in this run (no `e5_overhead_analysis.json`).")
    return out


def _answer_frontier(ff, st, S) -> list[str]:
    ms = st["methods"]
    names = list(ms)
    fu = {n: ms[n]["final_utility_norm"] for n in names if ms[n]["final_utility_norm"]["iqm"] is not None
          and np.isfinite(ms[n]["final_utility_norm"]["iqm"])}
    out = []
    if fu:
        rank = sorted(fu, key=lambda n: -fu[n]["iqm"])
        b = rank[0]
        s = (f"Highest final normalized utility (IQM): **{b}** {_f(fu[b]['iqm'])} [{_f(fu[b]['ci_low'])}, {_f(fu[b]['ci_high'])}]")
        if len(rank) > 1:
            c = rank[1]
            s += f", then {c} {_f(fu[c]['iqm'])} [{_f(fu[c]['ci_low'])}, {_f(fu[c]['ci_high'])}]"
            ovl = _overlap(fu[b]["ci_low"], fu[b]["ci_high"], fu[c]["ci_low"], fu[c]["ci_high"])
            P = st["probability_of_improvement"]
            i, j = P["methods"].index(b), P["methods"].index(c)
            p, plo, phi = P["p"][i][j], P["ci_low"][i][j], P["ci_high"][i][j]
            s += (" — the CIs overlap, so the difference is within the uncertainty of " f"{S} seeds" if ovl else
                  " — the CIs do not overlap" if ovl is False else "")
            s += f"; P({b} > {c}) = {_f(p, 2)}" + (f" [{_f(plo, 2)}, {_f(phi, 2)}]" if plo is not None and np.isfinite(plo) else "")
        s += ". Oracle = 1, random config = 0 by construction."
        out.append(s)
    ref = ff["references"]
    budgets = ff["budgets"]
    per_b = []
    for k, bud in enumerate(budgets):
        vals = {n: ff["methods"][n]["per_budget"]["utility"]["mean"][k] for n in ff["methods"] if "utility" in ff["methods"][n]["per_budget"]}
        vals = {n: v for n, v in vals.items() if v is not None and np.isfinite(v)}
        if vals:
            n = max(vals, key=vals.get)
            per_b.append(f"b={bud:g}: {n} {vals[n]:.3f} (oracle {A.arr(ref['oracle']['per_budget']['utility'])[k]:.3f})")
    if per_b:
        out.append("Highest mean utility per budget: " + "; ".join(per_b) + ".")
    mob = {n: ff["methods"][n]["mean_over_budgets"] for n in ff["methods"]}
    q = {n: v["quality_mean"]["mean"] for n, v in mob.items() if "quality_mean" in v}
    lat = {n: v["latency_p95_ms"]["mean"] for n, v in mob.items() if "latency_p95_ms" in v}
    if q and lat:
        hq, ll = max(q, key=q.get), min(lat, key=lat.get)
        o = ref["oracle"]["mean_over_budgets"]
        f = ref["full"]["mean_over_budgets"]
        out.append(f"Mean over budgets, highest quality: {hq} {q[hq]:.3f} at p95 {lat[hq]:,.0f} ms; lowest p95 latency: {ll} "
                   f"{lat[ll]:,.0f} ms at quality {q[ll]:.3f} (oracle {o['quality_mean']:.3f} at {o['latency_p95_ms']:,.0f} ms; "
                   f"full config {f['quality_mean']:.3f} at {f['latency_p95_ms']:,.0f} ms).")
    dom = {n: ff["methods"][n]["dominated_by_fixed_front"] for n in ff["methods"] if ff["methods"][n]["dominated_by_fixed_front"] is not None}
    if dom:
        out.append("Budgets at which a single fixed config beats the method's mean (p95 latency, quality) point "
                   f"(fixed-config Pareto front, {len(ff['fixed_configs']['pareto_front'])} of {ff['fixed_configs']['num_configs']} configs): "
                   + ", ".join(f"{n} {sum(d)}/{len(d)}" for n, d in dom.items())
                   + " — p95 latency and mean quality ignore which requests violate their budget, so a dominated point can "
                     "still have the higher utility.")
    return out


def _expected_findings(se, st, doc, thresholds) -> list[str]:
    """The seed's expected findings about GRPO vs PPO, checked against the measured numbers (when both ran)."""
    ms = doc["methods"]
    if not {"grpo", "ppo"} <= set(ms):
        return []
    out = []
    parts = []
    for t in thresholds:
        g, p = se["methods"]["grpo"].get(t["name"]), se["methods"]["ppo"].get(t["name"])
        if not g or not p:
            continue
        if g["seeds_reached"] == 0 and p["seeds_reached"] == 0:
            parts.append(f"{t['label']}: neither reached it (not testable)")
        elif g["seeds_reached"] != p["seeds_reached"]:
            parts.append(f"{t['label']}: grpo {g['seeds_reached']}/{g['seeds_total']} vs ppo {p['seeds_reached']}/{p['seeds_total']} seeds")
        else:
            parts.append(f"{t['label']}: grpo {_steps(g['env_steps_mean'])} vs ppo {_steps(p['env_steps_mean'])} env steps")
    out.append("\"GRPO needs fewer samples than PPO\" — " + "; ".join(parts) + ".")
    g, p = st["methods"]["grpo"]["final_utility_norm"]["std"], st["methods"]["ppo"]["final_utility_norm"]["std"]
    if g["std"] is not None and p["std"] is not None and np.isfinite(g["std"]) and np.isfinite(p["std"]):
        ovl = _overlap(g["ci_low"], g["ci_high"], p["ci_low"], p["ci_high"])
        verdict = ("lower" if g["std"] < p["std"] else "higher") + (" but the std CIs overlap (not resolved)" if ovl else "")
        out.append(f"\"GRPO is more stable than PPO\" — final std grpo {_f(g['std'])} vs ppo {_f(p['std'])}: {verdict}.")
    tg, tp = A.num(ms["grpo"].get("train_time_s")), A.num(ms["ppo"].get("train_time_s"))
    if tg is not None and tp is not None:
        out.append(f"\"GRPO has low overhead (no critic)\" — training time grpo {tg:.3g} s vs ppo {tp:.3g} s "
                   f"(parameters {ms['grpo'].get('num_params') or 0:,} vs {ms['ppo'].get('num_params') or 0:,}).")
    return out


def summary_markdown(doc, se, ff, st, ov, figures: dict) -> str:
    meta = doc["meta"]
    host = meta.get("host", {})
    tab = meta.get("table", {})
    run = meta.get("run", {})
    S = meta["seeds"]
    thresholds = se["thresholds"]
    names = list(doc["methods"])
    norm = reference_norm_utility(doc)
    L = ["# E5 training-strategy comparison — summary", ""]
    if not doc.get("complete", False):
        L += ["> **Incomplete run**: training was interrupted; only the finished methods below are reported.", ""]
    L += [
        f"- **Run**: `{meta.get('command', '?')}` ({meta.get('created', '?')}); methods {', '.join(names)}; "
        f"{S} seeds ({meta.get('seed_keys', '')}); up to {_steps(run.get('total_env_steps'))} env steps per method and seed, "
        f"{run.get('env_steps_per_update', '?')} per update, evaluated every {run.get('eval_every', '?')} updates.",
        f"- **Reward**: {meta.get('reward', 'quality − λ·overshoot')}; **λ = {meta['lam']}**; "
        f"**budgets** {meta['budgets']} × baseline.",
        f"- **Table**: {tab.get('source', '?')} `{tab.get('path', '?')}` (sha256 {tab.get('sha256_16', '?')}), "
        f"{tab.get('num_requests', '?')} requests × {tab.get('num_configs', '?')} configs.",
        f"- **Host**: jax {host.get('jax_version', '?')}, backend {host.get('backend', '?')} ({host.get('device_kind', '?')}), "
        f"{host.get('cpu', '?')} × {host.get('cpu_count', '?')}.",
    ]
    ref = doc["references"]
    rl = []
    for r in REFERENCE_NAMES:
        mo = ref[r]["mean_over_budgets"]
        rl.append(f"{r} U = {mo['utility']:.3f} (normalized {norm[r]['mean']:.2f}), quality {mo['quality_mean']:.3f}, "
                  f"p95 {mo['latency_p95_ms']:,.0f} ms, SLO violations {_pct(mo['slo_violation_rate'])}")
    L += [f"- **References** (val split, mean over budgets): " + "; ".join(rl) + ".",
          "- Normalized utility = (U − U_random) / (U_oracle − U_random) per budget, averaged over budgets.", ""]

    L += ["## Final results", "",
          "Final eval point, greedy policy, val split, mean over budgets. ± = 95% Student-t CI half-width across seeds; "
          "[ ] = 95% percentile-bootstrap CI of the IQM. Env steps to a threshold: mean over the seeds that reached it "
          "(seeds reaching it / seeds). Training time: all seeds together, compile excluded.", ""]
    thr_cols = [f"steps to {t['label']}" for t in thresholds]
    hdr = ["method", "norm. utility IQM [95% CI]", "sample-efficiency AUC IQM [95% CI]", "quality", "p95 latency (ms)",
           "SLO violations", *thr_cols,
           "training time", "decision overhead"]
    L += ["| " + " | ".join(hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
    for n in names:
        fu = st["methods"][n]["final_utility_norm"]
        mob = ff["methods"][n]["mean_over_budgets"]
        m = doc["methods"][n]
        tt, ct = A.num(m.get("train_time_s")), A.num(m.get("compile_time_s"))
        ttxt = "—" if tt is None else f"{tt:.3g} s" + ("" if ct is None else f" (+{ct:.3g} s compile)")
        if ov and n in ov["methods"] and ov["methods"][n]["decision_ms"].get("p50") is not None:
            d = ov["methods"][n]["decision_ms"]
            otxt = f"{d['p50']:.3g} ms p50 / {_f(d['p95'], 3)} ms p95"
        else:
            otxt = "not measured"
        au = (se.get("auc") or {}).get("methods", {}).get(n)
        row = [f"**{n}**", f"{_f(fu['iqm'])} [{_f(fu['ci_low'])}, {_f(fu['ci_high'])}]",
               f"{_f(au['iqm'])} [{_f(au['ci_low'])}, {_f(au['ci_high'])}]" if au else "—",
               _pm(mob["quality_mean"]) if "quality_mean" in mob else "—",
               _pm(mob["latency_p95_ms"], _steps) if "latency_p95_ms" in mob else "—",
               _pm(mob["slo_violation_rate"], _pct) if "slo_violation_rate" in mob else "—",
               *[_thr_cell(se["methods"][n].get(t["name"])) for t in thresholds], ttxt, otxt]
        L.append("| " + " | ".join(row) + " |")
    for r in ("oracle", "full", "random"):
        mo = ref[r]["mean_over_budgets"]
        row = [f"*{r}*", f"{norm[r]['mean']:.3f}", f"{norm[r]['mean']:.3f}", f"{mo['quality_mean']:.3f}", f"{mo['latency_p95_ms']:,.0f}",
               _pct(mo["slo_violation_rate"]), *["(reference)"] * len(thresholds), "—", "—"]
        L.append("| " + " | ".join(row) + " |")
    L += [""]
    L += ["Thresholds (`e5_sample_efficiency.json`), with what the references reach:", ""]
    L += [f"- {t['label']}: {t['definition']} ({_reachability(t)})." for t in thresholds]
    L += ["", "\"k held\": seeds that still meet the threshold at the final eval point (the others reached it and fell back).", ""]

    L += ["## The four key questions, as measured", ""]
    L += ["**1. Which method is most sample-efficient?** (`e5_sample_efficiency.json`, `figures/e5_sample_efficiency.png`)", ""]
    L += [f"- {s}" for s in _answer_sample_efficiency(se, thresholds, S)] + [""]
    L += ["**2. Which method is most stable across seeds?** (`e5_stability_analysis.json`, `figures/e5_stability.png`)", ""]
    L += [f"- {s}" for s in _answer_stability(st, S)] + [""]
    L += ["**3. What is the overhead cost of each method?** (`e5_training_curves.json` timings"
          + (", `e5_overhead_analysis.json`" if ov else "") + ")", ""]
    L += [f"- {s}" for s in _answer_overhead(doc, ov)] + [""]
    L += ["**4. How do the final frontiers compare?** (`e5_final_frontiers.json`, `figures/e5_final_frontiers.png`)", ""]
    L += [f"- {s}" for s in _answer_frontier(ff, st, S)] + [""]
    exp = _expected_findings(se, st, doc, thresholds)
    if exp:
        L += ["**The seed's expected findings, checked**", ""] + [f"- {s}" for s in exp] + [""]

    L += ["## Figures", ""]
    captions = {
        "learning": "Learning curves: normalized greedy val utility (left) and training reward (right) vs env steps, mean ± std over seeds.",
        "slo": "SLO violation rate vs env steps (left) and per budget at the end (right).",
        "quality": "Mean quality vs env steps, with the full config, 90%-of-full threshold and oracle.",
        "sample_efficiency": "Env steps to reach each threshold, per seed; × = never reached.",
        "frontiers": "Final p95 latency vs quality per budget, per method, over the oracle and the fixed-config Pareto front.",
        "stability": "Across-seed reward std vs env steps (left); final normalized utility per seed with IQM and bootstrap CI (right).",
        "overhead": "Decision-time percentiles and training-time breakdown per method.",
    }
    for key, fname in FIGURES.items():
        if key in figures:
            L += [f"**{captions[key]}**", "", f"![{fname}]({FIG_DIR}/{fname})", ""]
    if "overhead" not in figures:
        L += ["*(No overhead figure: decision overhead was not measured in this run.)*", ""]
    L += ["## Files", "",
          f"- `{CURVES}`: per-eval-point curves, per seed and per budget (the source of everything here).",
          f"- `{SAMPLE_EFFICIENCY}`: env steps and wall time to each threshold, per seed.",
          f"- `{FRONTIERS}`: final per-budget metrics with 95% CIs, references, fixed-config Pareto front.",
          f"- `{STABILITY}`: across-seed and within-run variability, IQM + bootstrap CIs, probability of improvement.",
          f"- `{OVERHEAD}`: " + ("decision and training overhead." if ov else "not present in this run."),
          "- Rebuild all derived files from the JSON alone: `e5jax report <this directory>`. Field definitions: `docs/outputs.md`.",
          ""]
    return "\n".join(L)


# --------------------------------------------------------------------------------------------- entry points


def write_outputs(out: Path, thresholds=None) -> list[Path]:
    """Read ``out/e5_training_curves.json`` and write every derived JSON, figure and summary.md; return their paths."""
    from e5jax import figures as F

    out = Path(out)
    doc = load_curves(out)
    if thresholds is None:  # the run's own (recorded in its meta), so a rebuilt report matches the run's
        thresholds = doc["meta"].get("run", {}).get("thresholds") or None
    th = resolve_thresholds(doc, thresholds)
    se = sample_efficiency(doc, th)
    ov = load_overhead(out)
    ff = final_frontiers(doc, ov)
    st = stability_analysis(doc, se)
    written = []
    for name, obj in ((SAMPLE_EFFICIENCY, se), (FRONTIERS, ff), (STABILITY, st)):
        write_json(out / name, obj)
        written.append(out / name)
    # figures are drawn from the JSON round trip (None -> NaN), exactly what `e5jax report` would see
    se_j, ff_j, st_j = (json.loads(json.dumps(to_jsonable(x))) for x in (se, ff, st))
    fd = out / FIG_DIR
    figs = {
        "learning": F.learning_curves(doc, {k: v["mean"] for k, v in reference_norm_utility(doc).items()}, th, fd / FIGURES["learning"]),
        "slo": F.slo_curves(doc, ff_j, th, fd / FIGURES["slo"]),
        "quality": F.quality_curves(doc, th, fd / FIGURES["quality"]),
        "sample_efficiency": F.sample_efficiency(se_j, fd / FIGURES["sample_efficiency"]),
        "frontiers": F.final_frontiers(ff_j, fd / FIGURES["frontiers"]),
        "stability": F.stability(doc, st_j, fd / FIGURES["stability"]),
    }
    p = F.overhead(ov, fd / FIGURES["overhead"]) if ov else None
    if p is not None:
        figs["overhead"] = p
    else:  # never leave a figure from an earlier report next to a summary that says "not measured"
        (fd / FIGURES["overhead"]).unlink(missing_ok=True)
    written += list(figs.values())
    text = summary_markdown(doc, se_j, ff_j, st_j, ov, figs)
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
