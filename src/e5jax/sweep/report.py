"""The sweep's conclusions (per question, default vs tuned; per pair, across lambda), decided from the per-request
files by the two-level rule (``e5jax.decide``), and its report: ``summary.md`` and two figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from e5jax import decide as D
from e5jax.io import atomic_write
from e5jax.sweep.phases import PER_REQUEST, SETTINGS, row_metrics

SUMMARY = "summary.md"
FIG_SCORES = "figures/sweep_scores.png"
FIG_LAM = "figures/lam_robustness.png"


# ----------------------------------------------------------------------------- conclusions
QUESTIONS = {  # question -> (metric, statistic, higher is better, setting of the learned methods)
    "final_utility": ("final", "mean", True, "tuned_final"),
    "auc": ("auc", "mean", True, "tuned_auc"),
    "slo_violation": ("slo", "mean", False, "tuned_final"),
    "stability": ("final", "std", False, "tuned_final"),
}


def have_per_request(out_dir: Path, results) -> bool:
    """Whether every result's per-request file is on disk (a copy of sweep.json without ``per_request/``, e.g. the
    committed one, keeps the decisions it was written with instead of failing to recompute them)."""
    return (Path(out_dir) / PER_REQUEST / "val.npz").is_file() and all(
        (Path(out_dir) / r["per_request"]).is_file() for r in results if "per_request" in r)


def _setting_rows(r: dict, setting: str) -> tuple[str, slice]:
    s = setting if setting in r else "default"
    return s, slice(*r[s]["rows"])


def compare_answers(doc: dict, out_dir: Path, lam: float, auc_range: tuple) -> dict:
    """Per question: the decisions with every method at its defaults, and with the learned methods at the setting
    tuned for that question (final utility -> tuned_final, AUC -> tuned_auc); and, per pair, whether tuning changed
    the decision (decide.across over the two: holds / flips / unresolved)."""
    comp = {m: r for m, r in doc.get("compare", {}).items() if "per_request" in r}
    out = {}
    for q, (key, stat, higher, setting) in QUESTIONS.items():
        res = {}
        for label, st in (("default", "default"), ("tuned", setting)):
            ms = {m: row_metrics(out_dir, r["per_request"], _setting_rows(r, st)[1], lam, auc_range)[key]
                  for m, r in comp.items()}
            det = [m for m, x in ms.items() if x.deterministic] if stat == "std" else []
            # a deterministic method's std is 0 by construction: the std question is asked of the others only
            res[label] = D.compare({m: x for m, x in ms.items() if m not in det}, higher=higher, statistic=stat)
            res[label]["settings"] = {m: _setting_rows(r, st)[0] for m, r in comp.items() if m not in det}
            res[label]["deterministic"] = det
        pairs = {k: D.across({"default": res["default"]["pairs"][k]["decision"],
                              "tuned": res["tuned"]["pairs"][k]["decision"]})
                 for k in res["default"]["pairs"] if k in res["tuned"]["pairs"]}
        out[q] = {**res, "pairs_default_vs_tuned": pairs,
                  "winners_changed": set(res["default"]["winners"]) != set(res["tuned"]["winners"])}
    return out


def lambda_conclusions(doc: dict, out_dir: Path, auc_range: tuple) -> dict:
    """Final normalized utility at each lambda, decided by the rule (two-level CI of each pair's difference), and per
    pair the verdict across lambdas: holds (resolved the same way at every lambda), flips (resolved in opposite
    directions somewhere) or unresolved; the winner set per lambda."""
    lam = doc["lambda"]
    S = doc["spec"]["seeds"]
    per = {}
    for i, x in enumerate(lam["lams"]):
        ms = {m: row_metrics(out_dir, r["per_request"], slice(i * S, (i + 1) * S), x, auc_range)["final"]
              for m, r in lam["methods"].items() if "per_request" in r}
        per[f"{x:g}"] = D.compare(ms, higher=True)
    first = next(iter(per.values()))
    verdicts = {k: D.across({x: per[x]["pairs"][k]["decision"] for x in per}) for k in first["pairs"]}
    return {"per_lambda": {x: {"winners": r["winners"], "best": r["best"],
                               "pairs": {k: v["decision"] for k, v in r["pairs"].items()},
                               "methods": {m: {"value": v["value"], "ci_two_level": v["ci_two_level"]}
                                           for m, v in r["methods"].items()}} for x, r in per.items()},
            "pairs": verdicts,
            "holds_at_every_lambda": [_verdict_text(k, v) for k, v in verdicts.items() if v["verdict"] == "holds"],
            "flips": [_verdict_text(k, v) for k, v in verdicts.items() if v["verdict"] == "flips"],
            "unresolved": [k for k, v in verdicts.items() if v["verdict"] == "unresolved"],
            "winner_per_lambda": {x: r["winners"] for x, r in per.items()}}


def _verdict_text(pair_key: str, v: dict) -> str:
    a, b = pair_key.split(" vs ")
    if v["verdict"] == "holds":
        return f"{a} > {b}" if v["direction"] == ">" else f"{b} > {a}"
    where = {">": [], "<": []}
    for x, d in v["where"].items():
        if d in where:
            where[d].append(x)
    return f"{a} vs {b}: {a} ahead at lambda = {', '.join(where['>'])}, {b} ahead at lambda = {', '.join(where['<'])}"


def _cell(r: dict, pct: bool = False) -> str:
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.3f}")
    v, c = r["value"], r["ci_two_level"]
    if v is None or not np.isfinite(v):
        return "—"
    ok = all(x is not None and np.isfinite(x) for x in c)
    return f"{f(v)} [{f(c[0])}, {f(c[1])}]" if ok else f(v)


def summary_markdown(doc: dict, out_dir: Path | None = None) -> str:
    """``summary.md``: the protocol line, then a section per phase that ran (tuning, default vs tuned, lambda)."""
    L = [f"# E5 sweep — {doc['meta']['created']}", "",
         f"Base protocol: {doc['meta']['base_config'] or 'built-in default'}; table {doc['meta']['table']}; "
         f"lambda = {doc['meta']['lam']} outside the lambda phase; env-step budget {doc['meta']['total_env_steps']:,} per "
         f"row; devices {doc['meta']['devices']}.", ""]
    if doc.get("tune"):
        L += _tune_section(doc)
    if doc.get("compare"):
        L += _compare_section(doc, out_dir)
    if doc.get("lambda", {}).get("methods"):
        L += _lambda_section(doc)
    return "\n".join(L)


def _tune_section(doc: dict) -> list[str]:
    spec = doc["spec"]
    L = ["## Tuning (tuning split carved from train; never val)", "",
         f"{spec['trials']} trials x {spec['seeds']} seeds per method and round ({spec['search']} search, trial 0 = "
         f"the defaults), same env-step budget. Two choices from the same trials: by final normalized utility "
         f"(answers the frontier question) and by AUC (answers the sample-efficiency question), each the best "
         f"mean over seeds. " + (f"Every method runs {1 + spec['widen_rounds']} round(s) of fresh trials (the same "
         f"tuning budget); a chosen value within {spec['edge_margin']:.0%} of a range edge (log scale for log "
         f"ranges) widens that range for the next round. " if spec["search"] == "random" else "")
         + "The choice is made over every round's trials.", "",
         "| method | default final / AUC | chosen by final: final / AUC | settings | chosen by AUC: final / AUC | "
         "settings | rounds | train s |", "|---|---|---|---|---|---|---|---|"]
    for m, t in doc["tune"].items():
        if "chosen" not in t:
            continue
        d = t["trials"][0]
        cf, ca = t["trials"][t["chosen_trial"]["final"]], t["trials"][t["chosen_trial"]["auc"]]
        st = lambda c: ", ".join(f"{k}={v:.3g}" for k, v in c["settings"].items())  # noqa: E731
        L.append(f"| {m} | {d['final_mean']:.3f} / {d['auc_mean']:.3f} | {cf['final_mean']:.3f} / {cf['auc_mean']:.3f} "
                 f"| {st(cf)} | {ca['final_mean']:.3f} / {ca['auc_mean']:.3f} | {st(ca)} | {t['rounds']} | "
                 f"{t['train_s']:.1f} |")
    L.append("")
    for m, t in doc["tune"].items():
        if t["spaces"][-1] != t["spaces"][0]:
            L.append(f"- **{m}**: ranges widened for a later round: "
                     + "; ".join(f"{k}: {t['spaces'][0][k]} -> {t['spaces'][-1][k]}" for k in t["spaces"][-1]
                                 if t["spaces"][-1][k] != t["spaces"][0][k]) + ".")
        for h in t.get("edges", []):
            L.append(f"- **{m}** (chosen by {h['select']}): {h['hyperparameter']} = {h['value']:.3g} lies at "
                     f"{h['position']:.0%} of its range {h['range']} ({h['edge']} edge)"
                     + (" — at a hard bound or a list of choices: not widened" if h["widened_to"] is None else
                        " — still at the edge after the last widening round: the optimum may lie outside"))
    L += ["", f"![scores vs hyperparameters]({FIG_SCORES})", ""]
    return L


def _compare_section(doc: dict, out_dir: Path | None) -> list[str]:
    spec = doc["spec"]
    F = spec["final_seeds"]
    L = ["## Default vs tuned (val split, fresh seeds)", "",
         f"{F} fresh seeds per setting. Cells: mean over seeds [95% CI over seeds and val requests (two-level "
         "bootstrap)]. Cost: measured seconds per update of each setting's own program "
         f"({F} rows; equal when the settings compile to the same program).", "",
         "| method | setting | final norm. utility | AUC | std of final | SLO violation | quality | s / update |",
         "|---|---|---|---|---|---|---|---|"]
    ans = doc.get("answers", {})
    for m, r in doc["compare"].items():
        for s in SETTINGS:
            if s not in r:
                continue
            v, ci = r[s], r[s].get("ci", {})
            cell = lambda k, pct=False: _cell(ci[k], pct) if k in ci else "—"  # noqa: E731
            c = v.get("cost", {}).get("s_per_update")
            L.append(f"| {m} | {s} | {cell('final')} | {cell('auc')} | {v['final']['std']:.3f} | {cell('slo', True)} | "
                     f"{cell('quality')} | {'—' if c is None else f'{c * 1e3:.2f} ms'} |")
    some = next(iter(ans.values()), None) if ans else None
    vp = None if out_dir is None else Path(out_dir) / PER_REQUEST / "val.npz"
    R = "the val requests"
    if vp is not None and vp.is_file():
        with np.load(vp) as z:
            R = f"{z['quality'].shape[0]} val requests"
    L += ["", f"Conditions of these answers: table {doc['meta']['table']}; lambda = {doc['meta']['lam']}; policy head(s) "
          f"{', '.join(doc['meta'].get('heads', [])) or 'of the base config'}; {F} fresh seeds per setting; "
          f"resolution: 95% two-level bootstrap over the seeds and {R}"
          + ("" if some else " (no answers computed)") + ".", "",
          "Answers, each decided by the two-level CI of every pair's difference (a *winner* is every method not "
          "separated from the best); default = every method at its defaults, tuned = the learned methods at the "
          "setting tuned for that question:", ""]
    for q, c in ans.items():
        if c["tuned"].get("deterministic"):
            L.append(f"- **{q}**: deterministic (std 0 by construction, left out of this question): "
                     + ", ".join(c["tuned"]["deterministic"]) + ".")
        L.append(f"- **{q}** ({c['tuned']['statistic']} over seeds, {'higher' if c['tuned']['higher_is_better'] else 'lower'} is better): "
                 f"winners default {{{', '.join(c['default']['winners'])}}}, tuned {{{', '.join(c['tuned']['winners'])}}}"
                 + (" — the winner set CHANGED" if c["winners_changed"] else " — same winner set") + ".")
        fl = [k for k, v in c["pairs_default_vs_tuned"].items() if v["verdict"] == "flips"]
        nowres = [k for k, v in c["pairs_default_vs_tuned"].items()
                  if v["where"]["default"] == "unresolved" and v["where"]["tuned"] != "unresolved"]
        lost = [k for k, v in c["pairs_default_vs_tuned"].items()
                if v["where"]["default"] != "unresolved" and v["where"]["tuned"] == "unresolved"]
        L.append(f"  - orderings reversed by tuning (resolved both times, opposite ways): {', '.join(fl) or 'none'}; "
                 f"resolved only after tuning: {', '.join(nowres) or 'none'}; resolved only at the defaults: "
                 f"{', '.join(lost) or 'none'}.")
    costs = {m: {s: r[s]["cost"]["s_per_update"] for s in SETTINGS if s in r and "cost" in r[s]}
             for m, r in doc["compare"].items()}
    cl = [f"{m}: " + ", ".join(f"{s} {v * 1e3:.2f} ms" for s, v in c.items())
          + (f" (tuned_final / default = {c['tuned_final'] / c['default']:.2f}x)" if "tuned_final" in c else "")
          for m, c in costs.items() if c]
    if cl:
        L.append("- **cost** (measured per update, not assumed): " + "; ".join(cl) + ".")
    L.append("")
    return L


def _lambda_section(doc: dict) -> list[str]:
    spec = doc["spec"]
    lam = doc["lambda"]
    c = doc.get("lambda_conclusions", {})
    pl = c.get("per_lambda", {})
    L = ["## Robustness to lambda (val split)", "",
         "Learned methods: " + "; ".join(sorted({f"{r.get('setting', 'default')}" for r in lam["methods"].values()}))
         + f" ({spec['seeds']} seeds). Cells: mean final normalized utility [two-level 95% CI] against each "
         "lambda's own oracle and random, mean SLO violation in parentheses.", "",
         "| method | " + " | ".join(f"lambda={x:g}" for x in lam["lams"]) + " |",
         "|---|" + "---|" * len(lam["lams"])]
    for m, r in lam["methods"].items():
        cells = [(_cell(pl[f"{x:g}"]["methods"][m]) if m in pl.get(f"{x:g}", {}).get("methods", {}) else "—")
                 + f" (SLO {s['mean']:.0%})" for x, s in zip(lam["lams"], r["slo"])]
        L.append(f"| {m} | " + " | ".join(cells) + " |")
    L.append("| oracle SLO violation | " + " | ".join(f"{x:.0%}" for x in lam["oracle"]["slo"]) + " |")
    if c:
        L += ["", "Winner set per lambda: " + "; ".join(f"{k}: {{{', '.join(v)}}}"
                                                      for k, v in c["winner_per_lambda"].items()) + ".", "",
              "Orderings resolved the same way at every lambda: " + ("; ".join(c["holds_at_every_lambda"]) or "none")
              + ".", "",
              "Orderings resolved in opposite directions at two lambdas (flips): " + ("; ".join(c["flips"]) or "none")
              + ".", "",
              f"Unresolved at one lambda or more ({len(c['unresolved'])} pairs): " + (", ".join(c["unresolved"]) or "none")
              + "."]
        spread = {}
        for m in lam["methods"]:
            v = [pl[x]["methods"][m]["value"] for x in pl if m in pl[x]["methods"]]
            v = [x for x in v if x is not None and np.isfinite(x)]
            if len(v) > 1:
                spread[m] = max(v) - min(v)
        if spread:
            L += ["", "Sensitivity to lambda (max - min over lambda of the mean final normalized utility; a stability "
                  "measure that is meaningful for deterministic methods too): "
                  + ", ".join(f"{m} {v:.3f}" for m, v in sorted(spread.items(), key=lambda kv: kv[1])) + "."]
    L += ["", f"![lambda robustness]({FIG_LAM})", ""]
    return L


def write_report(doc: dict, out: Path) -> str:
    """The figures (``FIG_SCORES`` after tuning, ``FIG_LAM`` after the lambda phase) and ``summary.md`` in ``out``;
    returns the summary's text."""
    from e5jax import figures as Fg

    if doc.get("tune"):
        Fg.sweep_scores(doc, out / FIG_SCORES)
    if doc.get("lambda", {}).get("methods"):
        Fg.lam_robustness(doc, out / FIG_LAM)
    text = summary_markdown(doc, out)
    atomic_write(out / SUMMARY, lambda f: f.write(text + "\n"))
    return text
