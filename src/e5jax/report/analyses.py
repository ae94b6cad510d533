"""The derived analyses of a run, each a pure function of the curves document: sample efficiency (threshold
crossings and the AUC), final frontiers, stability. Each returns the dict written as its JSON file."""

from __future__ import annotations

import copy
import warnings

import numpy as np

from e5jax import analysis as A
from e5jax.report.load import CURVES, FRONTIERS, REFERENCE_NAMES, SAMPLE_EFFICIENCY, STABILITY, schema
from e5jax.report.thresholds import reference_norm_utility

FRONTIER_METRICS = {  # output name -> per_budget key in the curves file
    "quality_mean": "val_quality_mean",
    "latency_p95_ms": "val_latency_p95_ms",
    "latency_p95_norm": "val_latency_p95_norm",
    "slo_violation_rate": "val_slo_violation_rate",
    "utility": "val_utility",
    "utility_norm": "val_utility_norm",
}


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
