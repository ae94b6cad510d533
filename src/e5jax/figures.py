"""The E5 figures (matplotlib, Agg), drawn from e5_training_curves.json and the derived analysis dicts.

Every function takes already-loaded data, draws one PNG and returns its path. Colours are fixed per method
so a method looks the same in every figure. Bands are mean ± sample std (ddof=1) across seeds. Which figures a
run has (file names, summary.md captions, the call drawing each) is the one list in ``e5jax.report.registry``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter, NullFormatter, PercentFormatter  # noqa: E402

from e5jax.analysis import arr  # noqa: E402
from e5jax.methods import METHODS  # noqa: E402

DPI = 120
_PALETTE = plt.get_cmap("tab10").colors
REF_STYLE = {
    "oracle": dict(color="#b8860b", ls="--", lw=1.3),
    "full": dict(color="black", ls=":", lw=1.3),
    "random": dict(color="grey", ls="-.", lw=1.1),
}
STEP_FMT = EngFormatter(sep="")


def method_color(name: str, names=()) -> tuple:
    """A method's own palette colour (``Method.color``); a method without one (or not registered) takes the next
    colour after every registered method's, in the order of ``names``."""
    own = {n: m.color for n, m in METHODS.items() if m.color is not None}
    if name in own:
        return _PALETTE[own[name] % len(_PALETTE)]
    extra = [n for n in names if n not in own]
    i = extra.index(name) if name in extra else len(extra)
    return _PALETTE[(max(own.values(), default=-1) + 1 + i) % len(_PALETTE)]


def _save(fig, path: Path, tight: bool = False) -> Path:
    """Write atomically (temp file + rename). Layouts are "constrained"; ``tight`` also fits text drawn
    outside the axes (one extra draw pass)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=DPI, **({"bbox_inches": "tight"} if tight else {}))
    plt.close(fig)
    tmp.replace(path)
    return path


def _mean_std(per_seed):
    a = arr(per_seed)
    if a.ndim == 1:
        a = a[None]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmean(a, 0)
        s = np.nanstd(a, 0, ddof=1) if a.shape[0] > 1 else np.full(a.shape[1], np.nan)
    return m, s


def _curve_axes(ax, doc, metric, ylabel, scale=1.0):
    names = list(doc["methods"])
    for name, m in doc["methods"].items():
        c = m["curves"].get(metric)
        if c is None:
            continue
        x = arr(m["env_steps"])
        mu, sd = _mean_std(c["per_seed"])
        mu, sd = mu * scale, sd * scale
        col = method_color(name, names)
        ax.plot(x, mu, "-o", ms=3, lw=1.8, color=col, label=name)
        if np.isfinite(sd).any():
            ax.fill_between(x, mu - np.nan_to_num(sd), mu + np.nan_to_num(sd), color=col, alpha=0.18, lw=0)
    _log_steps_axis(ax, doc)
    ax.set_xlabel("env steps (profiling calls) per seed, log scale (0 at the left)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _log_steps_axis(ax, doc) -> None:
    """Log env-step axis that still shows step 0: symlog, linear below the first positive eval point."""
    pos = [float(x) for m in doc["methods"].values() for x in np.asarray(arr(m["env_steps"])).reshape(-1) if x > 0]
    if pos:
        ax.set_xscale("symlog", linthresh=min(pos), linscale=0.35)
        ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(STEP_FMT)


def _ref_line(ax, y, kind, text, scale=1.0):
    if y is None or not np.isfinite(y):
        return
    ax.axhline(y * scale, **REF_STYLE[kind], label=text, zorder=1)


def _subtitle(doc) -> str:
    meta = doc["meta"]
    return (f"val split, greedy policy, mean over budgets {meta['budgets']} × baseline; λ={meta['lam']}; "
            f"band = ±1 std over {meta['seeds']} seeds")


def learning_curves(doc, refs_norm: dict, thresholds: list, path: Path) -> Path:
    """Normalized val utility (left) and raw training reward (right) vs env steps."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    ax = axes[0]
    _curve_axes(ax, doc, "val_utility_norm", "normalized utility  (U − U_rand) / (U_oracle − U_rand)")
    _ref_line(ax, 1.0, "oracle", "oracle (= 1)")
    _ref_line(ax, 0.0, "random", "random config (= 0)")
    _ref_line(ax, refs_norm.get("full"), "full", f"full config ({refs_norm.get('full', np.nan):.2f})")
    for t in thresholds:
        if t["metric"] == "val_utility_norm":
            ax.axhline(t["value"], color="green", lw=1, alpha=0.6, ls=(0, (4, 2)), label=f"threshold {t['label']}")
    lo = min(-0.3, np.nanmin([np.nanmin(arr(m["curves"]["val_utility_norm"]["mean"])) for m in doc["methods"].values()]))
    ax.set_ylim(max(lo, -3.0) - 0.05, 1.1)
    ax.set_title("Greedy val utility (normalized)")
    ax.legend(fontsize=8, loc="lower right", ncol=2)

    ax = axes[1]
    ref = doc["references"]
    _curve_axes(ax, doc, "train_utility", "mean reward of training samples (quality − λ·overshoot)")
    _ref_line(ax, ref["oracle"]["mean_over_budgets"]["utility"], "oracle", "oracle (val)")
    _ref_line(ax, ref["random"]["mean_over_budgets"]["utility"], "random", "random config (val)")
    ax.set_title("Reward seen during training (sampled actions)")
    ax.legend(fontsize=8, loc="lower right", ncol=2)
    fig.suptitle("E5 learning curves — utility vs env steps\n" + _subtitle(doc), fontsize=10)
    return _save(fig, path)


def slo_curves(doc, frontiers: dict, thresholds: list, path: Path) -> Path:
    """SLO violation rate vs env steps (left) and per budget at the final eval point (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.3, 1]}, layout="constrained")
    ax = axes[0]
    ref = doc["references"]
    _curve_axes(ax, doc, "val_slo_violation_rate", "SLO violation rate (latency > budget), %", scale=100)
    _ref_line(ax, ref["oracle"]["mean_over_budgets"]["slo_violation_rate"], "oracle", "oracle", 100)
    _ref_line(ax, ref["full"]["mean_over_budgets"]["slo_violation_rate"], "full", "full config", 100)
    _ref_line(ax, ref["random"]["mean_over_budgets"]["slo_violation_rate"], "random", "random config", 100)
    for t in thresholds:
        if t["metric"] == "val_slo_violation_rate":
            ax.axhline(100 * t["value"], color="green", lw=1, alpha=0.6, ls=(0, (4, 2)), label=f"threshold {t['label']}")
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_ylim(bottom=0)
    ax.set_title("SLO violations vs env steps (mean over budgets)")
    ax.legend(fontsize=8, ncol=2, loc="upper right")

    ax = axes[1]
    budgets = frontiers["budgets"]
    names = list(frontiers["methods"])
    w = 0.8 / max(len(names), 1)
    xb = np.arange(len(budgets))
    for i, name in enumerate(names):
        d = frontiers["methods"][name]["per_budget"]["slo_violation_rate"]
        mu, lo, hi = (100 * arr(d[k]) for k in ("mean", "ci_low", "ci_high"))
        err = np.vstack([np.nan_to_num(mu - np.maximum(lo, 0)), np.nan_to_num(np.minimum(hi, 100) - mu)])  # a rate is in [0, 100]
        ax.bar(xb + (i - (len(names) - 1) / 2) * w, mu, w, yerr=err, capsize=2, color=method_color(name, names),
               label=name, error_kw=dict(lw=0.8))
    o = 100 * arr(frontiers["references"]["oracle"]["per_budget"]["slo_violation_rate"])
    ax.plot(xb, o, "*", color=REF_STYLE["oracle"]["color"], ms=11, mec="black", mew=0.5, label="oracle", zorder=5)
    ax.set_xticks(xb, [f"{b:g}" for b in budgets])
    ax.set_xlabel("latency budget b (fraction of the request's full-config latency)")
    ax.set_ylabel("SLO violation rate, % (final, 95% CI)")
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set_title("Per budget at the final eval point")
    ax.set_ylim(0, 128)
    ax.set_yticks(range(0, 101, 20))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, ncol=4, loc="upper center")
    fig.suptitle("E5 SLO violation rate\n" + _subtitle(doc), fontsize=10)
    return _save(fig, path)


def quality_curves(doc, thresholds: list, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8.5, 5), layout="constrained")
    ref = doc["references"]
    _curve_axes(ax, doc, "val_quality_mean", "mean quality (expected task score, 0–1)")
    _ref_line(ax, ref["oracle"]["mean_over_budgets"]["quality_mean"], "oracle", "oracle")
    _ref_line(ax, ref["full"]["mean_over_budgets"]["quality_mean"], "full", "full config")
    _ref_line(ax, ref["random"]["mean_over_budgets"]["quality_mean"], "random", "random config")
    for t in thresholds:
        if t["metric"] == "val_quality_mean":
            ax.axhline(t["value"], color="green", lw=1, alpha=0.6, ls=(0, (4, 2)), label=f"threshold {t['label']}")
    ax.set_title("E5 quality vs env steps\n" + _subtitle(doc), fontsize=10)
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    return _save(fig, path)


def sample_efficiency(se: dict, path: Path) -> Path:
    """Panel 1: the sample-efficiency AUC per method (seeds, IQM and its CI). Then one panel per threshold: env steps
    to reach it (log axis), per-seed dots, mean bar, seeds that never reached it marked at the right."""
    thr = se["thresholds"]
    names = list(se["methods"])
    au = se.get("auc")
    P = len(thr) + (1 if au else 0)
    cols = min(P, 3)
    rows = -(-P // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.9 * cols, (0.45 * len(names) + 2.3) * rows), squeeze=False,
                             layout="constrained")
    flat = list(axes.reshape(-1))
    for ax in flat[P:]:
        ax.set_visible(False)
    rng = np.random.default_rng(0)
    if au:
        ax = flat.pop(0)
        for i, name in enumerate(names):
            a = au["methods"].get(name) or {}
            col = method_color(name, names)
            ps = np.array([np.nan if v is None else v for v in a.get("per_seed", [])], float)
            ax.scatter(ps, i + rng.uniform(-0.15, 0.15, ps.size), s=22, color=col, zorder=3, alpha=0.8)
            if a.get("iqm") is not None and np.isfinite(a["iqm"]):
                lo, hi = a.get("ci_low"), a.get("ci_high")
                if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
                    ax.plot([lo, hi], [i, i], color=col, lw=5, alpha=0.35, solid_capstyle="butt")
                ax.plot([a["iqm"]] * 2, [i - 0.3, i + 0.3], color="black", lw=2)
        lo_s, hi_s = au["env_steps_range"]
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_xlabel("normalized utility averaged over log env steps")
        ax.set_title(f"sample-efficiency AUC ({STEP_FMT(lo_s)}–{STEP_FMT(hi_s)} env steps)\n"
                     "dots: seeds; black: IQM; band: 95% bootstrap CI", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    xmax = max([float(se["max_env_steps"].get(n) or 0) for n in names] + [1.0])
    xmin = max(1.0, float((au or {}).get("env_steps_range", [1.0])[0]) / 2)
    nr_x = xmax * 3
    for ax, t in zip(flat, thr):
        for i, name in enumerate(names):
            r = se["methods"][name][t["name"]]
            col = method_color(name, names)
            ps = r["env_steps_per_seed"]
            held = r.get("env_steps_held_per_seed") or ps
            jit = rng.uniform(-0.18, 0.18, len(ps))
            hit = np.array([max(v, xmin) for v in ps if v is not None], dtype=float)
            # one collection per kind of dot (not one per seed: drawing many collections is slow)
            ys = i + jit
            miss = [y for v, y in zip(ps, ys) if v is None]
            if miss:
                ax.scatter([nr_x] * len(miss), miss, marker="x", s=34, color="crimson", zorder=3)
            for still in (True, False):  # filled: still meets it at the end of the run; hollow: reached it, then fell back
                pts = [(max(v, xmin), y) for v, h, y in zip(ps, held, ys) if v is not None and (h is not None) == still]
                if pts:
                    ax.scatter(*zip(*pts), s=28, color=col if still else "white", edgecolor="black" if still else col,
                               lw=0.4 if still else 1.2, zorder=3)
            if hit.size:
                ax.plot([np.exp(np.log(hit).mean())] * 2, [i - 0.3, i + 0.3], color=col, lw=2.5, zorder=2)
            ax.text(nr_x * 3.2, i, f"{r['seeds_reached']}/{r['seeds_total']}", va="center", ha="right", fontsize=8,
                    fontweight="bold")
        ax.set_xscale("log")
        ax.axvspan(xmax * 1.8, xmax * 5, color="crimson", alpha=0.07)
        ax.set_xlim(xmin / 1.5, nr_x * 3.4)
        ticks = [x for x in 10.0 ** np.arange(0, 9) if xmin <= x <= xmax]
        ax.set_xticks(ticks + [nr_x], [STEP_FMT(x) for x in ticks] + ["not\nreached"])
        ax.minorticks_off()
        ax.set_xlabel(f"env steps to first reach it (per seed; ≤ {STEP_FMT(xmin)} drawn at {STEP_FMT(xmin)})", fontsize=8)
        o = t.get("reference_values", {}).get("oracle")
        bf = (t.get("best_fixed_config") or {}).get("value")
        ax.set_title(f"{t['label']}\n(oracle: {_fmt_thr(o, t)}; best fixed config: {_fmt_thr(bf, t)})", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(len(names) - 0.5, -0.5)
    fig.suptitle("E5 sample efficiency (val, mean over budgets) — AUC and env steps to reach each threshold\n"
                 "dots: seeds (hollow: reached it but no longer meets it at the end); bar: geometric mean over seeds that "
                 "reached it; ×: never reached; k/S: seeds reaching it; resolution: eval points", fontsize=9.5)
    return _save(fig, path)


def _fmt_thr(v, t) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if "slo" in t["metric"] else f"{v:.3f}"


def _budget_labels(budgets, xs, ys, span, eps=0.07):
    """One label per cluster of nearly coincident points (budget-insensitive policies): "b=0.35,0.5"."""
    clusters = []  # [x, y, [budgets]]
    for b, x, y in zip(budgets, xs, ys):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        for c in clusters:
            if abs(c[0] - x) / span[0] < eps and abs(c[1] - y) / span[1] < eps:
                c[2].append(b)
                break
        else:
            clusters.append([x, y, [b]])
    return [(",".join(f"{b:g}" for b in c[2]) if len(c[2]) < len(budgets) else "all b", c[0], c[1]) for c in clusters]


def final_frontiers(ff: dict, path: Path) -> Path:
    """Per method: final (p95 latency, quality) at each budget with 95% CIs, over the oracle and fixed configs."""
    names = list(ff["methods"])
    n = len(names)
    ncol = min(3, n)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.3 * nrow), sharex=True, sharey=True, squeeze=False, layout="constrained")
    fx = ff["fixed_configs"]
    all_lat, all_q = arr(fx["latency_p95_ms"]), arr(fx["quality_mean"])
    front = fx["pareto_front"]
    f_lat = [p["latency_p95_ms"] for p in front]
    f_q = [p["quality_mean"] for p in front]
    ref = ff["references"]
    o_lat, o_q = arr(ref["oracle"]["per_budget"]["latency_p95_ms"]), arr(ref["oracle"]["per_budget"]["quality_mean"])
    full_lat, full_q = ref["full"]["mean_over_budgets"]["latency_p95_ms"], ref["full"]["mean_over_budgets"]["quality_mean"]
    budgets = ff["budgets"]
    pts_l = np.concatenate([all_lat.reshape(-1), o_lat.reshape(-1)] + [arr(ff["methods"][n]["per_budget"]["latency_p95_ms"]["mean"]) for n in names])
    pts_q = np.concatenate([all_q.reshape(-1), o_q.reshape(-1)] + [arr(ff["methods"][n]["per_budget"]["quality_mean"]["mean"]) for n in names])
    span = (np.nanmax(pts_l) - np.nanmin(pts_l) or 1.0, np.nanmax(pts_q) - np.nanmin(pts_q) or 1.0)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        name = names[k]
        if all_lat.size:
            ax.scatter(all_lat, all_q, s=9, color="lightgrey", zorder=1, label="fixed configs")
        if f_lat:
            ax.step(f_lat, f_q, where="post", color="dimgrey", lw=1.4, zorder=2, label="fixed-config Pareto front")
        ax.plot(o_lat, o_q, "--*", color=REF_STYLE["oracle"]["color"], ms=9, mec="black", mew=0.4, zorder=3,
                label="oracle (per budget)")
        ax.plot([full_lat], [full_q], "X", color="black", ms=9, zorder=4, label="full config")
        pb = ff["methods"][name]["per_budget"]
        lat, q = pb["latency_p95_ms"], pb["quality_mean"]
        lm, qm = arr(lat["mean"]), arr(q["mean"])
        xerr = np.vstack([np.nan_to_num(lm - arr(lat["ci_low"])), np.nan_to_num(arr(lat["ci_high"]) - lm)])
        yerr = np.vstack([np.nan_to_num(qm - arr(q["ci_low"])), np.nan_to_num(arr(q["ci_high"]) - qm)])
        col = method_color(name, names)
        ax.errorbar(lm, qm, xerr=xerr, yerr=yerr, fmt="-o", color=col, ms=5, lw=1.6, capsize=2, zorder=5,
                    label=f"{name} (final, 95% CI)")
        for j, (text, x, y) in enumerate(_budget_labels(budgets, lm, qm, span)):
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, -11 if j % 2 == 0 else 5), fontsize=7.5,
                        color=col, fontweight="bold")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if k % ncol == 0:
            ax.set_ylabel("mean quality (0–1)")
        if k // ncol == nrow - 1 or k + ncol >= n:
            ax.set_xlabel("p95 latency over val requests (ms)")
            ax.tick_params(labelbottom=True)
        if k == 0:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("E5 final frontiers — p95 latency vs quality per budget (labels: budget b); val split, greedy policy, "
                 f"final eval point; {ff['meta']['seeds']} seeds", fontsize=10)
    return _save(fig, path)


def stability(doc, st: dict, path: Path) -> Path:
    """Across-seed reward std vs env steps (left) and final normalized utility per seed with IQM + CI (right)."""
    names = list(st["methods"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.3, 1]}, layout="constrained")
    ax = axes[0]
    for name in names:
        s = st["methods"][name]["across_seed_std"]
        ax.plot(arr(s["env_steps"]), arr(s["val_utility"]), "-o", ms=3, lw=1.8, color=method_color(name, names), label=name)
    ax.xaxis.set_major_formatter(STEP_FMT)
    ax.set_xlabel("env steps (profiling calls) per seed")
    ax.set_ylabel("std across seeds of greedy val utility (reward units)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(f"Reward std across {doc['meta']['seeds']} seeds (ddof=1)")

    ax = axes[1]
    for i, name in enumerate(names):
        f = st["methods"][name]["final_utility_norm"]
        col = method_color(name, names)
        ps = arr(f["per_seed"])
        ax.scatter(ps, np.full(ps.shape, i) + np.linspace(-0.15, 0.15, ps.size), s=22, color=col, edgecolor="black",
                   lw=0.4, zorder=3)
        v, lo, hi = (np.nan if f[k] is None else f[k] for k in ("iqm", "ci_low", "ci_high"))
        if np.isfinite(lo):
            ax.plot([lo, hi], [i - 0.32] * 2, color=col, lw=3, solid_capstyle="butt", zorder=2)
        ax.plot([v], [i - 0.32], "D", color="black", ms=5, zorder=4)
    ax.axvline(1.0, **REF_STYLE["oracle"], label="oracle")
    ax.axvline(0.0, **REF_STYLE["random"], label="random config")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.6)
    ax.set_xlabel("final normalized utility")
    ax.set_title("Final normalized utility: seeds (dots), IQM (◆) and 95% bootstrap CI (bar)", fontsize=9.5)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower left")
    fig.suptitle("E5 stability", fontsize=11)
    return _save(fig, path)


def overhead(ov: dict, path: Path) -> Path | None:
    """Decision latency percentiles (left) and training-time breakdown (right) from e5_overhead_analysis.json."""
    methods = ov.get("methods") or {}
    names = list(methods)
    dec = {n: methods[n].get("decision_ms") or {} for n in names}
    tr = {n: methods[n].get("training") or {} for n in names}
    has_dec = any(isinstance(d, dict) and any(isinstance(d.get(p), (int, float)) for p in ("p50", "p95", "p99")) for d in dec.values())
    has_tr = any(isinstance(t.get("total_s"), (int, float)) or t.get("components") for t in tr.values())
    if not names or not (has_dec or has_tr):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained")
    ax = axes[0]
    pct = ("p50", "p95", "p99")
    w = 0.8 / len(pct)
    x = np.arange(len(names))
    for j, p in enumerate(pct):
        vals = [dec[n].get(p) if isinstance(dec[n].get(p), (int, float)) else np.nan for n in names]
        ax.bar(x + (j - 1) * w, vals, w, label=p, color=plt.get_cmap("Blues")(0.4 + 0.25 * j), edgecolor="black", lw=0.4)
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylabel("decision time per request (ms, log scale)")
    ax.set_title("Controller decision overhead" if has_dec else "Controller decision overhead (not measured)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)

    ax = axes[1]
    comp = {n: {c: float(v) for c, v in (tr[n].get("components") or {}).items()  # never a negative or missing time
                if isinstance(v, (int, float)) and np.isfinite(v) and v > 0} for n in names}
    below = {n: tr[n].get("below_resolution") or {} for n in names}
    comps = []
    for n in names:
        for c in [*comp[n], *below[n]]:
            if c not in comps:
                comps.append(c)
    bottom = np.zeros(len(names))
    cmap = plt.get_cmap("Set2")
    drawn = []
    for j, c in enumerate(comps):
        vals = np.array([comp[n].get(c, 0.0) for n in names])
        if not np.any(vals > 0):
            continue
        ev = c == "evaluation"
        ax.bar(x, vals, 0.6, bottom=bottom, label="val evaluation (not training)" if ev else c, color=cmap(j % 8),
               edgecolor="black", lw=0.4, hatch="//" if ev else None)
        bottom += vals
        drawn.append(c)

    def pos(v):
        return float(v) if isinstance(v, (int, float)) and np.isfinite(v) and v > 0 else np.nan

    whole = np.array([pos(tr[n].get("whole_s")) for n in names])  # the run's chunk time (training + evaluations)
    tot = np.array([pos(tr[n].get("total_s")) for n in names])  # training time, evaluations excluded
    # an older file without whole_s: the remainder of total_s as "other" (never negative)
    rest = np.where(np.isfinite(tot) & ~np.isfinite(whole), np.maximum(np.nan_to_num(tot) - bottom, 0), 0)
    if np.any(rest > 1e-9):
        ax.bar(x, rest, 0.6, bottom=bottom, label="other", color="lightgrey", edgecolor="black", lw=0.4)
    if np.any(np.isfinite(whole)):
        ax.scatter(x, whole, marker="_", s=900, color="black", lw=1.5, zorder=4,
                   label="run's chunk time (training + evaluation)")
    for i, n in enumerate(names):
        top = np.nanmax([bottom[i] + rest[i], whole[i] if np.isfinite(whole[i]) else 0.0])
        lines = [f"train {tot[i]:.3g} s" if np.isfinite(tot[i]) else (
            f"train < {tr[n]['train_time_resolution_s']:.2g} s"
            if isinstance(tr[n].get("train_time_resolution_s"), (int, float)) else "")]
        lines += [f"{c} < {r:.2g} s" for c, r in below[n].items() if isinstance(r, (int, float))]
        txt = "\n".join(t for t in lines if t)
        if txt:
            ax.annotate(txt, (i, top), textcoords="offset points", xytext=(0, 3), ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, max(1e-9, float(np.nanmax([*(bottom + rest), *np.nan_to_num(whole)]))) * 1.3)
    ax.set_xticks(x, names)
    ax.set_ylabel("seconds over the run (all seeds)")
    ax.set_title("Training-time breakdown (\"< r s\": below resolution r, not drawn)", fontsize=9.5)
    ax.grid(alpha=0.3, axis="y")
    if drawn or np.any(rest > 1e-9) or np.any(np.isfinite(whole)):
        ax.legend(fontsize=7)
    fig.suptitle("E5 overhead comparison (from e5_overhead_analysis.json)", fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------------------- sweep (e5jax sweep)
def sweep_scores(doc: dict, path: Path) -> Path:
    """Per tuned method (rows) and hyperparameter (columns): each trial's mean final normalized utility (dots) and
    AUC (crosses) on the tuning split vs the value (log axis for log ranges); the default trial, the trial chosen by
    final utility and the one chosen by AUC marked; the last searched range shaded."""
    tune = {m: t for m, t in doc["tune"].items() if "chosen_trial" in t}
    rows = list(tune)
    space = {m: tune[m]["spaces"][-1] for m in rows}
    ncol = max(len(space[m]) for m in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(3.2 * ncol, 2.6 * len(rows)), squeeze=False, layout="constrained")
    for i, m in enumerate(rows):
        trials = tune[m]["trials"]
        y = np.array([t["final_mean"] for t in trials], float)
        ya = np.array([t["auc_mean"] for t in trials], float)
        for j, k in enumerate(space[m]):
            ax = axes[i, j]
            x = np.array([t["settings"][k] for t in trials], float)
            ax.scatter(x, y, s=14, color=method_color(m, rows), label="final")
            ax.scatter(x, ya, s=14, marker="x", color=method_color(m, rows), alpha=0.6, label="AUC")
            ax.scatter(x[:1], y[:1], s=60, facecolors="none", edgecolors="black", label="default")
            cf, ca = tune[m]["chosen_trial"]["final"], tune[m]["chosen_trial"]["auc"]
            ax.scatter(x[cf:cf + 1], y[cf:cf + 1], marker="*", s=120, color="black", label="chosen (final)")
            ax.scatter(x[ca:ca + 1], ya[ca:ca + 1], marker="P", s=80, color="black", label="chosen (AUC)")
            d = space[m][k]
            if isinstance(d, dict):
                ax.axvspan(*next(iter(d.values())), color="0.9", zorder=-1)
            if isinstance(d, dict) and "log" in d:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(k)
            if j == 0:
                ax.set_ylabel(f"{m}\nscore (tuning split)")
            if i == 0 and j == 0:
                ax.legend(fontsize=6)
        for j in range(len(space[m]), ncol):
            axes[i, j].axis("off")
    return _save(fig, path)


def lam_robustness(doc: dict, path: Path) -> Path:
    """Final normalized utility, SLO violation and quality vs lambda per method (IQM over seeds with CI for the
    utility; means otherwise), with the oracle's own SLO violation and quality."""
    lam = doc["lambda"]
    x = np.asarray(lam["lams"], float)
    names = list(lam["methods"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    for m in names:
        r = lam["methods"][m]
        kw = dict(color=method_color(m, names), marker="o", ms=3, label=m)
        pl = doc.get("lambda_conclusions", {}).get("per_lambda", {})
        if all(m in pl.get(f"{v:g}", {}).get("methods", {}) for v in x):  # mean with its two-level CI
            d = [pl[f"{v:g}"]["methods"][m] for v in x]
            axes[0].plot(x, [e["value"] for e in d], **kw)
            axes[0].fill_between(x, [np.nan if e["ci_two_level"][0] is None else e["ci_two_level"][0] for e in d],
                                 [np.nan if e["ci_two_level"][1] is None else e["ci_two_level"][1] for e in d],
                                 color=kw["color"], alpha=0.15)
        else:
            axes[0].plot(x, np.array([v["iqm"] for v in r["final"]], float), **kw)
            axes[0].fill_between(x, [v["ci_low"] for v in r["final"]], [v["ci_high"] for v in r["final"]],
                                 color=kw["color"], alpha=0.15)
        axes[1].plot(x, [v["mean"] for v in r["slo"]], **kw)
        axes[2].plot(x, [v["mean"] for v in r["quality"]], **kw)
    axes[1].plot(x, lam["oracle"]["slo"], label="oracle", **REF_STYLE["oracle"])
    axes[2].plot(x, lam["oracle"]["quality"], label="oracle", **REF_STYLE["oracle"])
    for ax, lab in zip(axes, ("final normalized utility (mean, two-level 95% CI)", "SLO violation rate", "mean quality")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("lambda (overshoot penalty)")
        ax.set_ylabel(lab)
    axes[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[2].legend(fontsize=7, ncol=2)
    return _save(fig, path)


def robustness(doc: dict, path: Path) -> Path:
    """``e5jax robustness``: per question (a panel: final normalized utility, AUC, SLO violation, quality) and table
    (x), each method's mean over seeds with its two-level 95% CI; a filled marker = in that table's winner set (not
    separated from the best), hollow = separated from it."""
    qs = [q for q in ("final_utility", "auc", "slo_violation", "quality") if q in doc["questions"]]
    tables = list(doc["tables"])
    names = list(doc["meta"]["methods"])
    ncol = 2 if len(qs) > 1 else 1
    nrow = -(-len(qs) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(6.0, 1.6 * len(tables) + 2.5) * ncol / 1.3, 3.4 * nrow),
                             squeeze=False, layout="constrained")
    width = 0.8 / max(1, len(names))
    for ax, q in zip(axes.flat, qs):
        r = doc["questions"][q]
        for j, m in enumerate(names):
            x = np.arange(len(tables)) - 0.4 + width * (j + 0.5)
            v = np.array([np.nan if r["methods"][t][m]["value"] is None else r["methods"][t][m]["value"]
                          for t in tables], float)
            ci = np.array([[np.nan if c is None else c for c in r["methods"][t][m]["ci_two_level"]] for t in tables],
                          float)
            err = np.abs(np.stack([v - ci[:, 0], ci[:, 1] - v]))
            col = method_color(m, names)
            ax.errorbar(x, v, yerr=np.nan_to_num(err), fmt="none", ecolor=col, elinewidth=1.2, capsize=2)
            win = np.array([m in r["winners"][t] for t in tables])
            ax.scatter(x[win], v[win], s=28, color=col, edgecolors=col, zorder=3)
            ax.scatter(x[~win], v[~win], s=28, facecolors="white", edgecolors=col, zorder=3)
        ax.set_xticks(np.arange(len(tables)))
        q_kind = ["" if doc["tables"][t].get("quality_measured") else "\n(quality not measured)" for t in tables]
        ax.set_xticklabels([t + k for t, k in zip(tables, q_kind)], fontsize=8)
        ax.set_ylabel(r["label"] + (" (lower is better)" if not r["higher_is_better"] else ""), fontsize=8)
        if q == "slo_violation":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(qs):]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="none", marker="o", color=method_color(m, names), label=m) for m in names]
    handles += [Line2D([], [], ls="none", marker="o", color="grey", label="in the winner set"),
                Line2D([], [], ls="none", marker="o", color="grey", markerfacecolor="white",
                       label="separated from the best")]
    axes.flat[0].legend(handles=handles, fontsize=7, ncol=3)
    fig.suptitle(f"Mean over {doc['meta']['seeds']} seeds with two-level 95% CI (seeds, then val requests); "
                 f"λ = {doc['meta']['lam']}, default settings", fontsize=9)
    return _save(fig, path)
