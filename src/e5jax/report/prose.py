"""summary.md: the run's final-results table and the seed's four questions answered in prose from the measured
numbers (the derived JSON as written, None -> NaN), with the figures and the files of the run."""

from __future__ import annotations

import numpy as np

from e5jax import analysis as A
from e5jax.methods import METHODS
from e5jax.report import decisions as DQ
from e5jax.report.load import CURVES, FIG_DIR, FRONTIERS, OVERHEAD, REFERENCE_NAMES, SAMPLE_EFFICIENCY, STABILITY
from e5jax.report.registry import FIGURE_LIST
from e5jax.report.thresholds import reference_norm_utility

def _f(x, nd=3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _pct(x, nd=1) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.{nd}f}%"


def _steps(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:,.0f}"


def _pm(c, fmt=_f) -> str:
    m, hi = c["mean"], c["ci_high"]
    if m is None or not np.isfinite(m):
        return "—"
    if hi is None or not np.isfinite(hi):
        return fmt(m)
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


def _answer_sample_efficiency(se, thresholds, S, with_auc: bool = True) -> list[str]:
    out = []
    head = _answer_auc(se, S) if with_auc else None
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


def _answer_stability_decided(dec) -> list[str]:
    """Stability from the decision rule: the std across seeds compared with its two-level CI among the methods whose
    result depends on the seed; deterministic methods said apart, with their sensitivity to the val requests."""
    res = dec["questions"]["stability"]
    fin = dec["questions"]["final_utility"]["methods"]
    det = [m for m, r in res["methods"].items() if r["deterministic"]]
    out = []
    if det:
        out.append("Deterministic (the final policy does not depend on the seed, so its std of 0 says nothing about "
                   "robustness): " + ", ".join(det) + ".")
    sto = {m: r for m, r in res["methods"].items() if m not in det}
    if len(sto) >= 2:
        sub = {"methods": sto, "pairs": {k: v for k, v in res["pairs"].items() if v["a"] in sto and v["b"] in sto}}
        w = DQ.D.winner_set(sto, sub["pairs"], higher=False)
        sub.update(w, higher_is_better=False, statistic="std", label=res["label"])
        dd = {**dec, "questions": {**dec["questions"], "_sto": sub}}
        out += [f"Among the seed-dependent methods — {x}" for x in DQ.question_lines(dd, "_sto")]
    sens = {m: r["request_sd"] for m, r in fin.items() if DQ._fin(r["request_sd"])}
    if sens:
        out.append("Sensitivity to the val requests (std of the mean final normalized utility over request resamples, "
                   "seeds held fixed; meaningful for deterministic methods too): "
                   + ", ".join(f"{m} {v:.4f}" for m, v in sorted(sens.items(), key=lambda kv: kv[1])) + ".")
    return out


def _answer_stability(st, S, with_ranking: bool = True) -> list[str]:
    ms = st["methods"]
    names = list(ms)
    sd = {n: ms[n]["final_utility_norm"]["std"] for n in names}
    valid = [n for n in names if sd[n]["std"] is not None and np.isfinite(sd[n]["std"])] if with_ranking else []
    out = []
    if with_ranking and not valid:
        return [f"With {S} seed(s) there is no across-seed spread to compare."]
    if not valid:
        return out + _stability_details(ms, names)
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
    return out + _stability_details(ms, names)


def _stability_details(ms, names) -> list[str]:
    out = []
    w = {n: ms[n]["final_utility_norm"]["ci_high"] - ms[n]["final_utility_norm"]["ci_low"] for n in names
         if ms[n]["final_utility_norm"]["ci_low"] is not None and np.isfinite(ms[n]["final_utility_norm"]["ci_low"])}
    if w:
        nb = min(w, key=w.get)
        out.append(f"Narrowest 95% bootstrap CI of the IQM over seeds (descriptive): {nb} (width {_f(w[nb])}); widest: "
                   f"{max(w, key=w.get)} ({_f(max(w.values()))}).")
    tr = {n: ms[n]["mean_across_seed_std_val_utility"] for n in names if ms[n]["mean_across_seed_std_val_utility"] is not None}
    if tr:
        a, b = min(tr, key=tr.get), max(tr, key=tr.get)
        out.append(f"Across-seed std of val utility averaged over training (reward units, `e5_stability.png` left; "
                   f"point estimates, not decided): lowest {a} {_f(tr[a], 4)}, highest {b} {_f(tr[b], 4)}.")
    wr = {n: ms[n]["within_run_std"]["val_utility_norm"]["mean"] for n in names
          if "val_utility_norm" in ms[n]["within_run_std"] and ms[n]["within_run_std"]["val_utility_norm"]["mean"] is not None
          and np.isfinite(ms[n]["within_run_std"]["val_utility_norm"]["mean"])}
    if wr:
        a, b = min(wr, key=wr.get), max(wr, key=wr.get)
        k = ms[a]["within_run_std"]["val_utility_norm"]["num_points"]
        out.append(f"Within-run variability after convergence (std of normalized utility over the last {k} eval points, "
                   f"mean over seeds; point estimates, not decided): lowest {a} {_f(wr[a])}, highest {b} {_f(wr[b])}.")
    fails = {n: ms[n]["num_failed_updates"]["total"] for n in names if ms[n]["num_failed_updates"] and ms[n]["num_failed_updates"]["total"] is not None}
    if fails:
        if all(v == 0 for v in fails.values()):
            out.append(f"Failed (non-finite, skipped) updates: none in any method or seed ({', '.join(fails)}).")
        else:
            out.append("Failed (non-finite, skipped) updates, total over seeds: "
                       + ", ".join(f"{n} {v:.0f}" for n, v in fails.items()) + ".")
    return out


def _set(names: list) -> str:
    """One name, or a set of several in braces."""
    return names[0] if len(names) == 1 else "{" + ", ".join(names) + "}"


def _answer_overhead(doc, ov) -> list[str]:
    meta = doc["meta"]
    host = meta.get("host", {})
    ms = doc["methods"]
    tt = {n: A.num(m.get("train_time_s")) for n, m in ms.items()}
    tt = {n: v for n, v in tt.items() if v is not None}
    # training time below resolution (its chunks' time less their evaluations lies within the timings' noise)
    low = {n: A.num(m.get("train_time_resolution_s")) for n, m in ms.items()
           if m.get("train_time_s") is None and m.get("train_time_below_resolution")}
    out = []
    if tt or low:
        order = sorted(tt, key=tt.get)
        txt = (f"Training wall time for all {meta['seeds']} seeds together (vmapped; backend {host.get('backend', '?')}, "
               f"{host.get('device_kind', '?')}; compile and the val evaluations inside the training chunks excluded): "
               + ", ".join([f"{n} {tt[n]:.3g} s" for n in order]
                           + [f"{n} below resolution (< {r:.2g} s)" if r is not None else f"{n} below resolution"
                              for n, r in low.items()]))
        # fastest / slowest by the resolution rule: a method whose time ± its resolution overlaps the fastest's
        # (slowest's) is not separated from it; a time below resolution lies in [0, resolution]
        iv = {n: (tt[n], A.num(ms[n].get("train_time_resolution_s")) or 0.0) for n in order}
        iv.update({n: (r / 2, r / 2) for n, r in low.items() if r is not None})
        if len(iv) > 1:
            fast, slow = A.overlap_set(iv, lowest=True), A.overlap_set(iv, lowest=False)
            txt += (" — none separated from the others: each time ± its resolution overlaps the fastest's"
                    if len(fast) == len(iv) else
                    f" — fastest **{_set(fast)}**, slowest {_set(slow)} (a time ± its resolution that overlaps the "
                    "fastest's or the slowest's is not separated from it)")
        out.append(txt + ".")
        ev = {n: A.num(m.get("eval_time_s")) for n, m in ms.items() if A.num(m.get("eval_time_s")) is not None}
        if ev:
            out.append("Val evaluation inside the training chunks (reported apart: eval points x the compiled "
                       "evaluation's time per call): " + ", ".join(f"{n} {v:.3g} s" for n, v in ev.items()) + ".")
        ct = {n: A.num(m.get("compile_time_s")) for n, m in ms.items() if A.num(m.get("compile_time_s")) is not None}
        if ct:
            out.append("One-off compile time: " + ", ".join(f"{n} {v:.3g} s" for n, v in ct.items()) + ".")
        per_k = {n: tt[n] / (A.arr(ms[n]["env_steps"])[-1] / 1000) for n in tt if A.arr(ms[n]["env_steps"])[-1] > 0}
        if per_k:
            out.append("Per 1,000 env steps: " + ", ".join(f"{n} {v * 1000:.3g} ms" for n, v in per_k.items()) + ".")
    pc = {n: m.get("num_params") for n, m in ms.items() if m.get("num_params")}
    if pc:
        out.append("Trainable parameters (critics included): " + ", ".join(f"{n} {v:,}" for n, v in pc.items())
                   + "; the training-free methods have none.")
    if ov:
        d = {n: v["decision_ms"] for n, v in ov["methods"].items() if v["decision_ms"].get("p50") is not None}
        if d:
            order = sorted(d, key=lambda n: d[n]["p50"])
            g = lambda v: "—" if v is None else f"{v:.3g}"  # noqa: E731
            txt = ("Decision time per request (p50 / p95 ms, `e5_overhead_analysis.json`): "
                   + ", ".join(f"{n} {g(d[n]['p50'])} / {g(d[n]['p95'])}" for n in order))
            blocks = {n: d[n].get("block_p50") for n in order}
            if len(order) > 1 and all(b and len(b) == len(blocks[order[0]]) >= 2 for b in blocks.values()):
                # not separated from the cheapest (most expensive): the 95% CI over the interleaved rounds of the
                # ratio of the two methods' round medians does not exclude "no more expensive" (cheaper)
                c, e = order[0], order[-1]
                lo = [c] + [n for n in order[1:] if not A.paired_ratio_ci(blocks[n], blocks[c])[0] > 1]  # NaN: not
                hi = [e] + [n for n in order[:-1] if not A.paired_ratio_ci(blocks[e], blocks[n])[0] > 1]  # separated
                txt += (f" — none separated from the others (the 95% CI of each one's ratio of round medians to the "
                        f"cheapest's, over the {len(blocks[c])} interleaved rounds, includes 1)." if len(lo) == len(order)
                        else f" — cheapest (p50) **{_set(lo)}**, most expensive {_set(hi)} (a method whose 95% CI of the "
                        f"ratio of round medians to the cheapest's or the most expensive's, over the "
                        f"{len(blocks[c])} interleaved rounds, includes 1 is not separated from it).")
            elif len(order) > 1:
                txt += (f" — lowest p50 {order[0]}, highest {order[-1]} (point estimates: this file has no interleaved "
                        "rounds to decide them).")
            else:
                txt += "."
            out.append(txt)
        comps = {n: ([f"{k} {x:.3g}" for k, x in v["training"]["components"].items()]
                     + [f"{k} below resolution (< {r:.2g})" for k, r in (v["training"].get("below_resolution") or {}).items()])
                 for n, v in ov["methods"].items()}
        comps = {n: c for n, c in comps.items() if c}
        if comps:
            out.append("Training-time components (s over the run; a derived piece within the timings' noise is below "
                       "resolution): " + "; ".join(f"{n}: " + ", ".join(c) for n, c in comps.items()) + ".")
    else:
        out.append("Controller decision overhead per request: not measured in this run (no `e5_overhead_analysis.json`).")
    return out


def _answer_frontier(ff, st, S, with_ranking: bool = True) -> list[str]:
    ms = st["methods"]
    names = list(ms)
    fu = {n: ms[n]["final_utility_norm"] for n in names if ms[n]["final_utility_norm"]["iqm"] is not None
          and np.isfinite(ms[n]["final_utility_norm"]["iqm"]) and with_ranking}
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
    if per_b and with_ranking:  # with decisions, orderings come from the decision rule only
        out.append("Highest mean utility per budget (point estimates, not decided per budget): " + "; ".join(per_b) + ".")
    mob = {n: ff["methods"][n]["mean_over_budgets"] for n in ff["methods"]}
    q = {n: v["quality_mean"]["mean"] for n, v in mob.items() if "quality_mean" in v}
    lat = {n: v["latency_p95_ms"]["mean"] for n, v in mob.items() if "latency_p95_ms" in v}
    if q and lat and with_ranking:  # with decisions, the quality question is decided instead
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


def _expected_findings(se, st, doc, thresholds, dec=None) -> list[str]:
    """The seed's expected findings, checked against the measured numbers: for every method whose record names a
    method it is expected to beat (``Method.versus``), when both ran."""
    out = []
    for name, method in METHODS.items():
        if method.versus and {name, method.versus[0]} <= set(doc["methods"]):
            out += _versus(se, st, doc, thresholds, dec, name, *method.versus)
    return out


def _versus(se, st, doc, thresholds, dec, a: str, b: str, why: str) -> list[str]:
    """The expected findings "a needs fewer samples than b, is more stable and cheaper (why)"."""
    ms = doc["methods"]
    A_, B_ = a.upper(), b.upper()
    out = []
    if dec:
        words = {">": "greater", "<": "smaller", "unresolved": "not resolved"}
        for q, claim in (("auc", f"{A_} needs fewer samples than {B_} (AUC)"),
                         ("stability", f"{A_} is more stable than {B_} (std of final over seeds)"),
                         ("final_utility", f"{A_}'s final utility vs {B_}'s")):
            r = DQ.D.pair(dec["questions"][q], a, b)
            out.append(f"\"{claim}\" — {a} − {b} = {_f(r['diff'])}, two-level 95% CI {DQ.D.fmt_ci(r['ci_two_level'])}, "
                       f"seeds only {DQ.D.fmt_ci(r['ci_seeds'])}: {a}'s value is {words[r['decision']]}.")
    parts = []
    for t in thresholds:
        g, p = se["methods"][a].get(t["name"]), se["methods"][b].get(t["name"])
        if not g or not p:
            continue
        if g["seeds_reached"] == 0 and p["seeds_reached"] == 0:
            parts.append(f"{t['label']}: neither reached it (not testable)")
        elif g["seeds_reached"] != p["seeds_reached"]:
            parts.append(f"{t['label']}: {a} {g['seeds_reached']}/{g['seeds_total']} vs {b} {p['seeds_reached']}/{p['seeds_total']} seeds")
        else:
            ovl = _overlap(g["env_steps_min"], g["env_steps_max"], p["env_steps_min"], p["env_steps_max"])
            parts.append(f"{t['label']}: {a} {_steps(g['env_steps_mean'])} vs {b} {_steps(p['env_steps_mean'])} env steps"
                         + (" (per-seed ranges overlap: not resolved)" if ovl else
                            " (per-seed ranges do not overlap)" if ovl is False else ""))
    out.append(f"\"{A_} needs fewer samples than {B_}\" — " + "; ".join(parts) + ".")
    g, p = st["methods"][a]["final_utility_norm"]["std"], st["methods"][b]["final_utility_norm"]["std"]
    if not dec and g["std"] is not None and p["std"] is not None and np.isfinite(g["std"]) and np.isfinite(p["std"]):
        ovl = _overlap(g["ci_low"], g["ci_high"], p["ci_low"], p["ci_high"])
        verdict = ("lower" if g["std"] < p["std"] else "higher") + (" but the std CIs overlap (not resolved)" if ovl else "")
        out.append(f"\"{A_} is more stable than {B_}\" — final std {a} {_f(g['std'])} vs {b} {_f(p['std'])}: {verdict}.")
    tg, tp = A.num(ms[a].get("train_time_s")), A.num(ms[b].get("train_time_s"))
    if tg is not None and tp is not None:
        rg, rp = (A.num(ms[n].get("train_time_resolution_s")) for n in (a, b))
        sep = ""
        if rg is not None and rp is not None:  # the overhead answer's resolution rule
            tied = len(A.overlap_set({a: (tg, rg), b: (tp, rp)})) == 2
            sep = (f" — within their resolution (±{rg:.2g} / ±{rp:.2g} s): not separated" if tied
                   else f" — separated by more than their resolution (±{rg:.2g} / ±{rp:.2g} s)")
        out.append(f"\"{A_} has low overhead ({why})\" — training time {a} {tg:.3g} s vs {b} {tp:.3g} s "
                   f"(parameters {ms[a].get('num_params') or 0:,} vs {ms[b].get('num_params') or 0:,}){sep}.")
    return out


def _early_stops(doc) -> list[str]:
    """One bullet naming every method whose final env steps fall short of the budget, and why (its own env steps per
    update; a method whose env steps stop growing has labelled or profiled its whole train split)."""
    run = doc["meta"].get("run", {})
    total, per = run.get("total_env_steps"), run.get("env_steps_per_update")
    parts = []
    for n, m in doc["methods"].items():
        steps = A.arr(m["env_steps"])
        if total is None or not steps.size or steps[-1] >= total:
            continue
        own = m.get("env_steps_per_update")
        why = []
        if own is not None and per is not None and own != per:
            why.append(f"{own} env steps per update instead of {per} (whole requests of C env steps each)")
        if steps.size > 2 and steps[-1] == steps[-2]:
            finite = n in METHODS and METHODS[n].finite_data  # it labels or profiles a finite train split
            why.append("its env steps stop growing" + (" (every train request labelled or profiled)" if finite else ""))
        parts.append(f"{n} ends at {_steps(steps[-1])} of {_steps(total)} env steps"
                     + (f": {'; '.join(why)}" if why else ""))
    return [f"- **Early stops**: " + "; ".join(parts) + "."] if parts else []


def summary_markdown(doc, se, ff, st, ov, figures: dict | None, dec: dict | None = None) -> str:
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
        *_early_stops(doc),
        f"- **Reward**: {meta.get('reward', 'quality − λ·overshoot')}; **λ = {meta['lam']}**; "
        f"**budgets** {meta['budgets']} × baseline.",
        f"- **Table**: {tab.get('source', '?')} `{tab.get('path', '?')}` (sha256 {tab.get('sha256_16', '?')}), "
        f"{tab.get('num_requests', '?')} requests × {tab.get('num_configs', '?')} configs.",
        f"- **Host**: jax {host.get('jax_version', '?')}, backend {host.get('backend', '?')} ({host.get('device_kind', '?')}), "
        f"{host.get('cpu', '?')} × {host.get('cpu_count', '?')}"
        + (f" (family {host['cpu_signature'].get('cpu family', '?')} model {host['cpu_signature'].get('model', '?')}"
           + (f"; {', '.join(host['cpu_isa'])}" if host.get("cpu_isa") else "") + ")"
           if isinstance(host.get("cpu_signature"), dict) else "") + ".",
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
        res = A.num(m.get("train_time_resolution_s")) if m.get("train_time_below_resolution") else None
        ttxt = (("—" if res is None else f"< {res:.2g} s (below resolution)") if tt is None else f"{tt:.3g} s") + (
            "" if ct is None else f" (+{ct:.3g} s compile)")
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
    for r in REFERENCE_NAMES:
        mo = ref[r]["mean_over_budgets"]
        row = [f"*{r}*", f"{norm[r]['mean']:.3f}", f"{norm[r]['mean']:.3f}", f"{mo['quality_mean']:.3f}", f"{mo['latency_p95_ms']:,.0f}",
               _pct(mo["slo_violation_rate"]), *["(reference)"] * len(thresholds), "—", "—"]
        L.append("| " + " | ".join(row) + " |")
    L += [""]
    L += ["Thresholds (`e5_sample_efficiency.json`), with what the references reach:", ""]
    L += [f"- {t['label']}: {t['definition']} ({_reachability(t)})." for t in thresholds]
    L += ["", "\"k held\": seeds that still meet the threshold at the final eval point (the others reached it and fell back).", ""]

    if dec:
        L += ["## Decisions (`e5_decisions.json`)", "", DQ.conditions_line(dec), "",
              "Each cell: mean over seeds, [95% CI over seeds only], [95% CI over seeds and val requests (two-level)]. "
              "Orderings below are decided on the two-level CI of each pair's difference; a *winner* is every method "
              "not separated from the best. Request sensitivity: std of the method's mean over resamples of the val "
              "requests with its seeds held fixed.", ""]
        L += DQ.decisions_table(dec) + [""]
    L += ["## The four key questions, as measured", ""]
    L += ["**1. Which method is most sample-efficient?** (`e5_sample_efficiency.json`, `figures/e5_sample_efficiency.png`)", ""]
    if dec:
        L += [f"- {x}" for x in DQ.question_lines(dec, "auc")]
    L += [f"- {s}" for s in _answer_sample_efficiency(se, thresholds, S, with_auc=not dec)] + [""]
    L += ["**2. Which method is most stable across seeds?** (`e5_stability_analysis.json`, `figures/e5_stability.png`)", ""]
    if dec:
        L += [f"- {s}" for s in _answer_stability_decided(dec)]
    L += [f"- {s}" for s in _answer_stability(st, S, with_ranking=not dec)] + [""]
    L += ["**3. What is the overhead cost of each method?** (`e5_training_curves.json` timings"
          + (", `e5_overhead_analysis.json`" if ov else "") + ")", ""]
    L += [f"- {s}" for s in _answer_overhead(doc, ov)] + [""]
    L += ["**4. How do the final frontiers compare?** (`e5_final_frontiers.json`, `figures/e5_final_frontiers.png`)", ""]
    if dec:
        L += [f"- {x}" for x in DQ.question_lines(dec, "final_utility")]
        L += [f"- {x}" for x in DQ.question_lines(dec, "slo_violation")]
        L += [f"- {x}" for x in DQ.question_lines(dec, "quality")]
    L += [f"- {s}" for s in _answer_frontier(ff, st, S, with_ranking=not dec)] + [""]
    exp = _expected_findings(se, st, doc, thresholds, dec)
    if exp:
        L += ["**The seed's expected findings, checked**", ""] + [f"- {s}" for s in exp] + [""]

    L += ["## Figures", ""]
    if figures is None:
        L += ["*(Not drawn: the run was made with `--no-figures`; `e5jax report <this directory>` draws them.)*", ""]
    for fig in FIGURE_LIST:
        if figures and fig.key in figures:
            L += [f"**{fig.caption}**", "", f"![{fig.file}]({FIG_DIR}/{fig.file})", ""]
    if figures is not None and "overhead" not in figures:
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
