"""``e5_decisions.json``: every ordering the run summary states, decided by ``e5jax.decide`` (two-level bootstrap
over seeds and val requests) from the run's greedy val actions (``e5_val_actions.npz``), and the sentences that
state them with their conditions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from e5jax import decide as D
from e5jax.report.analyses import auc_range, report_meta, sample_efficiency_auc
from e5jax.report.load import DECISIONS, schema

ACTIONS = "e5_val_actions.npz"

# question key -> (metric key of decide.run_metrics, statistic, higher is better, label)
QUESTIONS = {
    "final_utility": ("final", "mean", True, "final normalized utility"),
    "auc": ("auc", "mean", True, "sample-efficiency AUC"),
    "slo_violation": ("slo", "mean", False, "final SLO violation rate"),
    "quality": ("quality", "mean", True, "final quality"),
    "stability": ("final", "std", False, "across-seed std of final normalized utility"),
}


def load_actions(out: Path) -> dict | None:
    """The run's ``e5_val_actions.npz`` as {"quality", "latency_norm", "budgets", "lam", "methods": {m: actions}};
    None when absent (a run written before it existed)."""
    p = Path(out) / ACTIONS
    if not p.is_file():
        return None
    with np.load(p) as z:
        d = {k: z[k] for k in ("quality", "latency_norm", "budgets", "lam")}
        d["methods"] = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("actions/")}
    return d


def method_metrics(doc: dict, acts: dict | None) -> tuple[dict, str]:
    """{question metric: {method: decide.Metric}} and the level of data they rest on ("requests" or "seeds")."""
    names = list(doc["methods"])
    if acts is not None and all(n in acts["methods"] for n in names):
        rew = D.request_rewards(acts["quality"], acts["latency_norm"], acts["budgets"], float(acts["lam"]))
        rng = auc_range(doc)
        per = {n: D.run_metrics(acts["methods"][n], rew, acts["quality"], acts["latency_norm"], acts["budgets"],
                                np.asarray(doc["methods"][n]["env_steps_per_seed"], np.float64), rng) for n in names}
        return {k: {n: per[n][k] for n in names} for k in ("final", "auc", "slo", "quality")}, "requests"
    # no per-request data: seed-only decisions from the curves (the request level cannot be resampled)
    from e5jax import analysis as A

    out = {"final": {}, "auc": {}, "slo": {}, "quality": {}}
    auc = sample_efficiency_auc(doc)["methods"]
    for n, m in doc["methods"].items():
        c = m["curves"]
        out["final"][n] = D.Metric.per_seed(A.arr(c["val_utility_norm"]["per_seed"])[:, -1])
        out["auc"][n] = D.Metric.per_seed(auc[n]["per_seed"])
        out["slo"][n] = D.Metric.per_seed(A.arr(c["val_slo_violation_rate"]["per_seed"])[:, -1])
        out["quality"][n] = D.Metric.per_seed(A.arr(c["val_quality_mean"]["per_seed"])[:, -1])
    return out, "seeds"


def conditions(doc: dict) -> dict:
    """What every answer of this run holds under (item 9 of the conclusions contract)."""
    meta = doc["meta"]
    mc = meta.get("method_configs", {})
    heads = sorted({c.get("head", "factored") if not c.get("joint") else "joint" for c in mc.values() if "lr" in c})
    tab = meta.get("table", {})
    return {"settings": "default (untuned) hyperparameters of the run config", "lam": meta["lam"],
            "table": tab.get("path"), "table_sha256_16": tab.get("sha256_16"), "heads": heads,
            "seeds": meta["seeds"], "budgets": meta["budgets"]}


def decisions_analysis(doc: dict, acts: dict | None) -> dict:
    metrics, level = method_metrics(doc, acts)
    R = next(iter(metrics["final"].values())).requests
    qs = {}
    for q, (key, stat, higher, label) in QUESTIONS.items():
        res = D.compare(metrics[key], higher=higher, statistic=stat)
        res["label"] = label
        qs[q] = res
    return {
        "schema": schema(DECISIONS),
        "meta": report_meta(doc),
        "definition": (f"decide.compare: the statistic over seeds (mean, or std for stability) with {D.CONFIDENCE:.0%} "
                       f"percentile bootstrap CIs ({D.N_BOOT} replicates, seed {D.SEED}) at two levels: seeds only (val "
                       f"requests fixed) and two-level (seeds resampled per method, then the {R} val requests resampled, "
                       "shared by every method); a pair is '>' or '<' when the two-level CI of the difference excludes "
                       "0, else 'unresolved'; winners = every method not separated from the best point estimate; "
                       "deterministic = identical per-request results for every seed"),
        "data_level": level,
        "val_requests": R,
        "conditions": conditions(doc),
        "questions": qs,
    }


# ------------------------------------------------------------------------------------------------ prose
def _fin(x) -> bool:
    return x is not None and bool(np.isfinite(x))


def winners_sentence(res: dict) -> str:
    w = res["winners"]
    if not w:
        return "no method has a value"
    if len(w) == 1:
        return f"**{w[0]}** alone (separated from every other method)"
    return ("**{" + ", ".join(w) + "}** — not separated from each other (best point estimate: "
            f"{res['best']})")


def method_cell(res: dict, m: str, pct: bool = False) -> str:
    r = res["methods"][m]
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.3f}")
    cs = r["ci_seeds"]
    c2 = r["ci_two_level"]
    g = (lambda c: "[—]" if not all(_fin(x) for x in c) else f"[{f(c[0])}, {f(c[1])}]")
    det = " (deterministic)" if r["deterministic"] else ""
    return f"{f(r['value'])} {g(cs)} {g(c2)}{det}" if _fin(r["value"]) else "—"


def pairs_sentence(res: dict) -> str:
    """'a ≻ b, a ≻ c; unresolved: b ~ c' where 'a ≻ b' reads 'a is better than b' (for a lower-is-better metric,
    a's value is the smaller)."""
    resolved, unresolved = [], []
    for row in res["pairs"].values():
        if row["decision"] == "unresolved":
            unresolved.append(f"{row['a']} ~ {row['b']}")
        else:
            worse = row["b"] if row["better"] == row["a"] else row["a"]
            resolved.append(f"{row['better']} ≻ {worse}")
    s = "resolved (better ≻ worse): " + (", ".join(resolved) or "none")
    s += "; unresolved: " + (", ".join(unresolved) or "none")
    return s


def question_lines(dec: dict, q: str, pct: bool = False) -> list[str]:
    """The answer to one question: winner set, the best's two CIs, every pair's decision, and the resolution."""
    res = dec["questions"][q]
    better = "higher" if res["higher_is_better"] else "lower"
    lines = [f"Winner ({res['label']}, {better} is better; {res['statistic']} over seeds): " + winners_sentence(res) + "."]
    lines.append("Pairs (resolved when the two-level 95% CI of the difference excludes 0): " + pairs_sentence(res) + ".")
    flips = [f"{r['a']} vs {r['b']}" for r in res["pairs"].values()
             if r["decision_seeds"] != "unresolved" and r["decision"] == "unresolved"]
    if flips and dec["data_level"] == "requests":
        lines.append("Resolved over seeds only but not once val requests are resampled: " + ", ".join(flips) + ".")
    return lines


def conditions_line(dec: dict) -> str:
    c = dec["conditions"]
    lvl = (f"two-level bootstrap over {c['seeds']} seeds and {dec['val_requests']} val requests"
           if dec["data_level"] == "requests" else f"bootstrap over {c['seeds']} seeds only (no per-request data)")
    return (f"Conditions of every answer below: {c['settings']}; λ = {c['lam']}; one table ({c['table']}, sha256 "
            f"{c['table_sha256_16']}); policy head {', '.join(c['heads']) or '—'}; resolution: {lvl}, "
            f"{D.CONFIDENCE:.0%} percentile CIs ({D.N_BOOT} replicates). Tuned settings, other λ and other tables: "
            "`e5jax sweep` and `e5jax robustness`.")


def decisions_table(dec: dict) -> list[str]:
    """Markdown table: per method, each question's value with its seed-only and two-level CIs."""
    qs = [("final_utility", False), ("auc", False), ("slo_violation", True), ("stability", False)]
    names = list(dec["questions"]["final_utility"]["methods"])
    L = ["| method | " + " | ".join(dec["questions"][q]["label"] for q, _ in qs) + " | request sensitivity (sd) |",
         "|---|" + "---|" * (len(qs) + 1)]
    for m in names:
        cells = [method_cell(dec["questions"][q], m, pct) for q, pct in qs]
        sd = dec["questions"]["final_utility"]["methods"][m]["request_sd"]
        L.append(f"| {m} | " + " | ".join(cells) + (f" | {sd:.4f} |" if _fin(sd) else " | — |"))
    return L


def decide_from_args(args) -> int:
    """`e5jax decide DIR A B`: every question's decision between two methods of a finished run (reads only)."""
    from e5jax.errors import UsageError
    from e5jax.report.load import ReportError, read_checked

    try:
        dec = read_checked(Path(args.dir) / DECISIONS, f"{args.dir}: no {DECISIONS} (run `e5jax report {args.dir}` to "
                                                       "derive it)")
    except ReportError as e:
        raise UsageError(str(e)) from None
    run = list(dec["questions"]["final_utility"]["methods"])
    for m in (args.a, args.b):
        if m not in run:
            raise UsageError(f"decide: {m!r} was not run in {args.dir} (its methods: {', '.join(run)})")
    if args.a == args.b:
        raise UsageError("decide: give two different methods")
    print(conditions_line(dec))
    for q, res in dec["questions"].items():
        r = D.pair(res, args.a, args.b)
        better = "higher" if res["higher_is_better"] else "lower"
        diff = "—" if r["diff"] is None else f"{r['diff']:+.4f}"
        print(f"{q:14s} {res['statistic']} ({better} is better): {args.a} − {args.b} = {diff}, two-level CI "
              f"{D.fmt_ci(r['ci_two_level'], 4)}, seeds only {D.fmt_ci(r['ci_seeds'], 4)} -> {r['decision']}"
              + (f" ({r['better']} better)" if r["better"] else ""))
    return 0
