"""What a table offers a controller: the numbers `e5jax validate` prints.

All quantities are computed with the environment's own functions (e5jax.env), so the summary and the
training lab agree on rewards, the oracle and the evaluator.
"""

from __future__ import annotations

from collections import Counter

import jax.numpy as jnp
import numpy as np

from e5jax import analysis as A
from e5jax import env as E
from e5jax.table import ProfileTable, table_notes


def task_budget_lut_actions(env: E.EnvParams, requests=None) -> jnp.ndarray:
    """Best fixed config per (task, eval budget), chosen by mean reward over ``requests`` (default: all).

    Returns the configs it picks on the val grid, [B, Rv].
    """
    R = env.task.shape[0]
    req = jnp.arange(R) if requests is None else jnp.asarray(requests)
    rew = E.reward_matrix(env, req[None, :], env.budgets[:, None])  # [B, n, C]
    onehot = (env.task[req][:, None] == jnp.arange(env.num_tasks)[None]).astype(jnp.float32)  # [n, T]
    mean_rew = jnp.einsum("bnc,nt->btc", rew, onehot) / jnp.maximum(onehot.sum(0), 1)[None, :, None]
    best = jnp.argmax(mean_rew, -1)  # [B, T]
    vreq, _ = E.eval_grid(env)
    return jnp.take_along_axis(best, env.task[vreq], axis=1)


def oracle_ties(env: E.EnvParams, requests) -> dict:
    """How many configs tie for the oracle on ``requests`` [n], per evaluation budget (arrays [B]):

    * ``unique_share``: share of requests with exactly one optimal config (``E.oracle_set``, within env.oracle_tol);
    * ``mean_set_size``: mean number of optimal configs per request;
    * ``all_optimal_share``: share of requests for which every config is optimal (the config does not matter).
    """
    req = jnp.asarray(requests)
    n_opt = np.asarray(E.oracle_set(env, req[None, :], env.budgets[:, None]).sum(-1))  # [B, n]
    return {"unique_share": (n_opt == 1).mean(-1).tolist(), "mean_set_size": n_opt.mean(-1).tolist(),
            "all_optimal_share": (n_opt == env.num_configs).mean(-1).tolist()}


def quality_ties(quality: np.ndarray, requests: np.ndarray) -> dict:
    """Ties in the quality values themselves (exact equality, no reward involved) over ``requests`` of a [R, C] array:

    * ``all_equal``: requests whose quality is the same under every config (the config cannot matter for quality);
    * ``tied_at_max``: per request, the number of configs whose quality equals that request's maximum, summarized as
      ``unique_max`` (requests with exactly one config at the maximum), ``mean``, ``median`` and ``max``.
    """
    q = np.asarray(quality)[requests]
    n_max = (q == q.max(-1, keepdims=True)).sum(-1)
    return {"requests": int(len(q)), "all_equal": int((q == q[:, :1]).all(-1).sum()), "unique_max": int((n_max == 1).sum()),
            "tied_at_max_mean": float(n_max.mean()), "tied_at_max_median": float(np.median(n_max)), "tied_at_max_max": int(n_max.max())}


def table_summary(table: ProfileTable, lam: float = 2.0, oracle_tol: float = E.ORACLE_TOL) -> dict:
    env = E.make_env_params(table, lam=lam, oracle_tol=oracle_tol)
    budgets = [float(b) for b in np.asarray(env.budgets)]
    refs = {k: {m: np.asarray(v).tolist() for m, v in d.items()} for k, d in E.evaluate_references(env).items()}
    lut_actions = task_budget_lut_actions(env)  # [B, Rv]
    lut = {m: np.asarray(v) for m, v in E.evaluate_actions(env, lut_actions).items()}
    vreq, vbud = E.eval_grid(env)
    val_opt = np.asarray(E.oracle_set(env, vreq, vbud))  # [B, Rv, C]
    # where the request matters: val requests whose optimal set misses the config their task's LUT picks
    lut_missed = ~np.take_along_axis(val_opt, np.asarray(lut_actions)[..., None], -1)[..., 0]  # [B, Rv]
    u_r = np.asarray(refs["random"]["utility"])
    u_o = np.asarray(refs["oracle"]["utility"])
    ctx = A.normalized_utility(lut["utility"], u_r, u_o)

    # oracle diversity within each (task, budget), over all requests of the table. The first-argmax oracle names
    # one config where several tie (a tie-break), so coverage is counted on the optimal sets instead.
    R = table.num_requests
    req = jnp.arange(R)
    orc = np.asarray(E.oracle_config(env, req[None, :], env.budgets[:, None]))  # [B, R] tie-break choice
    opt = np.asarray(E.oracle_set(env, req[None, :], env.budgets[:, None]))  # [B, R, C]
    unique = opt.sum(-1) == 1  # [B, R]
    tasks = table.task_types
    diversity = {}
    for t in table.task_names:
        m = tasks == t
        diversity[t] = []
        for bi in range(len(budgets)):
            cnt = Counter(orc[bi, m].tolist())
            diversity[t].append({"distinct_oracle_configs": len(cnt),  # of the tie-break choice
                                 "share_not_covered": 1.0 - float(opt[bi, m].mean(0).max())})
    hist, tie_break = [], []
    for bi in range(len(budgets)):
        c, n = Counter(orc[bi].tolist()).most_common(1)[0]  # the first-argmax oracle's modal config
        tie_break.append([table.config_label(int(c)), int(n), int(((orc[bi] == c) & unique[bi]).sum())])
        n_opt = opt[bi].sum(0)  # [C] requests for which the config is optimal
        n_uni = (opt[bi] & unique[bi][:, None]).sum(0)  # ... for which it is the only optimal config
        top = np.argsort(-n_opt, kind="stable")[:5]
        hist.append([[table.config_label(int(c)), int(n_opt[c]), int(n_uni[c])] for c in top if n_opt[c] > 0])
    val = table.split_indices("val")

    smallest = 0
    value_ties = {"quality": {split: quality_ties(table.quality, idx) for split, idx in (("val", val), ("all", np.arange(R)))}}
    if table.exact_match is not None:
        value_ties["exact_match"] = {split: quality_ties(table.exact_match, idx) for split, idx in (("val", val), ("all", np.arange(R)))}
    return {
        "requests": {s: {t: int(((table.split == s) & (tasks == t)).sum()) for t in table.task_names} for s in ("train", "val")},
        "grid": {k: v.tolist() for k, v in table.knobs.items()},
        "num_configs": table.num_configs,
        "features": list(table.feature_names),
        "latency_ms_range": [float(table.latency_ms.min()), float(table.latency_ms.max())],
        "quality_range": [float(table.quality.min()), float(table.quality.max())],
        "lam": lam,
        "budgets": budgets,
        "full_config_quality_per_task": {t: float(table.quality[tasks == t, table.full_config].mean()) for t in table.task_names},
        "full_config_exact_match_per_task": None if table.exact_match is None else
        {t: float(table.exact_match[tasks == t, table.full_config].mean()) for t in table.task_names},
        "value_ties": value_ties,
        "full_config_latency_ms_mean": float(table.latency_ms[:, table.full_config].mean()),
        "smallest_config_latency_ms_mean": float(table.latency_ms[:, smallest].mean()),
        "smallest_over_full_latency_mean": float((table.latency_ms[:, smallest] / table.latency_ms[:, table.full_config]).mean()),
        "references_val": refs,
        "oracle_slo_violation_rate_val": refs["oracle"]["slo_violation_rate"],
        "feasible_share_val": [float((np.asarray(env.latency_norm)[table.split == "val"].min(-1) <= b).mean()) for b in budgets],
        "oracle_tol": oracle_tol,
        "oracle_ties_val": oracle_ties(env, val),
        "oracle_ties_all": oracle_ties(env, req),
        "oracle_diversity": diversity,
        "oracle_histogram_top5": hist,
        "oracle_tie_break_modal": tie_break,
        "task_budget_lut_normalized_utility_val": ctx.tolist(),
        "context_value": float(A.mean_over_budgets(ctx)),
        "lut_choice_not_optimal_val": lut_missed.mean(-1).tolist(),
        "oracle_gap_by_full_quality": oracle_gap_sources(table, lam=lam),
        "context_value_by_feature": feature_ceiling(table, lam=lam),
        "notes": table_notes(table),
    }


def feature_ceiling(table: ProfileTable, lam: float = 2.0) -> dict:
    """Per varying feature column: the normalized utility on val of the perfect-knowledge LUT keyed on (task, the
    feature's bins) (``feature_lut(fit="all")``: every request's rewards known), i.e. the context value with that one
    feature known — the most a lookup on it can add over the task LUT (the context value). A diagnostic of the table,
    not of a controller (one that reads several features at once is not bounded by it)."""
    return {c: feature_lut(table, (c,), lam=lam, fit="all")["normalized_utility"] for c in table.varying_features()}


def format_summary(s: dict, source: str = "") -> str:
    L = []
    L.append(f"table {source}".rstrip())
    for split, d in s["requests"].items():
        L.append(f"  {split:5s}: {sum(d.values()):5d} requests  " + "  ".join(f"{t}={n}" for t, n in d.items()))
    L.append(f"  grid: {s['num_configs']} configs  " + "  ".join(f"{k}={v}" for k, v in s["grid"].items()))
    L.append(f"  features: {', '.join(s['features'])}")
    L.extend(f"  note: {n}" for n in s.get("notes", []))
    lo, hi = s["latency_ms_range"]
    ql, qh = s["quality_range"]
    L.append(f"  latency_ms in [{lo:.2f}, {hi:.2f}]  quality in [{ql:.3f}, {qh:.3f}]")
    L.append(
        f"  mean latency: full config {s['full_config_latency_ms_mean']:.1f} ms, smallest "
        f"{s['smallest_config_latency_ms_mean']:.1f} ms (smallest/full = {s['smallest_over_full_latency_mean']:.3f} per request)"
    )
    L.append("  full-config quality per task: " + "  ".join(f"{t}={q:.3f}" for t, q in s["full_config_quality_per_task"].items()))
    if s.get("full_config_exact_match_per_task") is not None:
        L.append("  column exact_match (the greedy answer's exact match, beside the graded quality); full config per task: "
                 + "  ".join(f"{t}={q:.3f}" for t, q in s["full_config_exact_match_per_task"].items()))
    L.append("  value ties (exact equality of the column's values per request; no reward involved):")
    for col, d in s.get("value_ties", {}).items():
        for split, v in d.items():
            L.append(f"    {col:11s} {split:3s}: {v['all_equal']:5d} of {v['requests']} requests equal under all configs; "
                     f"configs tied at the request's maximum: 1 for {v['unique_max']} requests, mean {v['tied_at_max_mean']:.2f}, "
                     f"median {v['tied_at_max_median']:g}, max {v['tied_at_max_max']}")
    L.append(f"  reward = quality - {s['lam']} * max(0, latency/baseline - b); val split references per budget b:")
    L.append("    b      " + "".join(f"{b:>8.2f}" for b in s["budgets"]))
    for name in ("oracle", "full", "random"):
        r = s["references_val"][name]
        L.append(f"    {name:7s}U" + "".join(f"{x:8.3f}" for x in r["utility"]))
        L.append(f"    {name:7s}V" + "".join(f"{x:8.1%}" for x in r["slo_violation_rate"]))
    L.append("    feasible" + "".join(f"{x:8.1%}" for x in s["feasible_share_val"])
             + "   (share of val requests with at least one config within budget)")
    L.append("    taskLUT " + "".join(f"{x:8.3f}" for x in s["task_budget_lut_normalized_utility_val"])
             + "   (normalized utility of the perfect-knowledge task x budget LUT)")
    L.append(f"  context value (task x budget LUT normalized utility, mean over budgets): {s['context_value']:.3f}")
    by_feature = s.get("context_value_by_feature")
    if by_feature:
        ranked = sorted(by_feature.items(), key=lambda kv: -kv[1])
        L.append("    with one feature known (a LUT on task x the feature's bins, fitted on every request: what a lookup on "
                 "it can add): " + ", ".join(f"{c} {v:.3f} ({v - s['context_value']:+.3f})" for c, v in ranked[:4])
                 + (f", ... ({len(ranked)} features)" if len(ranked) > 4 else ""))
    if "lut_choice_not_optimal_val" in s:
        L.append("    LUT!=opt" + "".join(f"{x:8.1%}" for x in s["lut_choice_not_optimal_val"])
                 + "   (share of val requests whose optimal set misses their task's LUT config)")
    g = s.get("oracle_gap_by_full_quality")
    if g:
        lo, hi = g["bins"]
        if lo["share_of_gap"] is not None and lo["val_requests"] > 0:
            L.append(f"  the oracle's lead over the train-fitted task LUT: {lo['share_of_gap']:.0%} of it in the "
                     f"{lo['share_of_val_requests']:.0%} of val requests whose full-config quality is < {hi['full_quality'][0]:g}; "
                     f"there the oracle's config at b={s['budgets'][-1]:.2f} has {lo['oracle_quality_over_full']:+.3f} quality "
                     "over the full config's" + (" (a degraded config answering better than the full model: no request "
                                                 "feature need predict it)" if lo["oracle_quality_over_full"] > 0.01 else "")
                     + "; experiments/oracle_gap.py")
    L.append(f"  oracle ties (configs within {s['oracle_tol']:g} of the best reward are all optimal), per budget b:")
    L.append("    b              " + "".join(f"{b:>8.2f}" for b in s["budgets"]))
    for split in ("val", "all"):
        ti = s[f"oracle_ties_{split}"]
        L.append(f"    unique   {split:5s} " + "".join(f"{x:8.1%}" for x in ti["unique_share"])
                 + "   (share of requests with exactly one optimal config)")
        L.append(f"    set size {split:5s} " + "".join(f"{x:8.2f}" for x in ti["mean_set_size"])
                 + "   (mean number of optimal configs)")
        L.append(f"    all opt  {split:5s} " + "".join(f"{x:8.1%}" for x in ti["all_optimal_share"])
                 + "   (share of requests for which every config is optimal)")
    L.append("  oracle diversity within (task, budget): distinct first-argmax oracle configs (a tie-break where the "
             "optimal set has several members) / share of requests whose optimal set misses the config optimal "
             "for the most of them")
    for t, rows in s["oracle_diversity"].items():
        L.append(f"    {t:12s}" + "".join(f"  {r['distinct_oracle_configs']:3d}/{r['share_not_covered']:4.0%}" for r in rows))
    L.append("  configs optimal for the most requests per budget (top 5; all requests): config x requests for which "
             "it is optimal (of them, the only optimal config)")
    for b, h in zip(s["budgets"], s["oracle_histogram_top5"]):
        L.append(f"    b={b:.2f}: " + "; ".join(f"{c} x{n} ({u} unique)" for c, n, u in h))
    L.append("  the first-argmax oracle's most frequent config per budget (all requests; where configs tie it names the "
             "lowest index): config x requests (of them, where it is the only optimal config)")
    for b, (c, n, u) in zip(s["budgets"], s["oracle_tie_break_modal"]):
        L.append(f"    b={b:.2f}: {c} x{n} ({u} unique)")
    return "\n".join(L)


LUT_RULES = ("mean_reward", "label_mode", "label_mode_factored")


def best_per_group(rew: np.ndarray, groups: np.ndarray, members: np.ndarray, rule: str = "mean_reward",
                    knob_sizes: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    """Per budget and group, the config a LUT picks from the group's ``members`` ([B, G]), and which groups have
    members ([G]). ``rew`` [B, R, C], ``groups`` [R] ints in 0..G-1, ``members`` [R] bool. ``rule`` (LUT_RULES):

    * ``mean_reward``: the best mean reward (the expected-utility choice);
    * ``label_mode``: the config most often *labelled optimal* — each member's optimal set (``env.optimal_set``,
      tolerance ``env.ORACLE_TOL``) counts 1/|set| for each of its configs — what a maximum-likelihood fit to oracle
      labels predicts when its model can express the joint distribution (exactly so where every set has one
      member, as on the shapes tables; with ties the 1/|set| split stands in for the set likelihood's own fit);
    * ``label_mode_factored``: the same counts as per-knob marginals (``knob_sizes``, row-major grid), each knob's
      most frequent level: the greedy action of a factored policy fitted to those labels.
    """
    onehot = (groups[:, None] == np.arange(groups.max() + 1)[None]) & members[:, None]  # [R, G]
    counts = onehot.sum(0)
    if rule == "mean_reward":
        score = np.einsum("brc,rg->bgc", rew, onehot) / np.maximum(counts, 1)[None, :, None]
        return score.argmax(-1), counts > 0
    if rule not in LUT_RULES:
        raise ValueError(f"rule must be one of {', '.join(LUT_RULES)}, got {rule!r}")
    opt = np.asarray(E.optimal_set(rew, E.ORACLE_TOL), float)
    score = np.einsum("brc,rg->bgc", opt / opt.sum(-1, keepdims=True), onehot.astype(float))  # [B, G, C]
    if rule == "label_mode":
        return score.argmax(-1), counts > 0
    if int(np.prod(knob_sizes)) != rew.shape[-1]:
        raise ValueError(f"label_mode_factored: knob sizes {tuple(knob_sizes)} do not make {rew.shape[-1]} configs")
    grid = score.reshape(score.shape[:2] + tuple(knob_sizes))
    k = len(knob_sizes)
    levels = [grid.sum(axis=tuple(2 + j for j in range(k) if j != i)).argmax(-1) for i in range(k)]  # per knob [B, G]
    return np.ravel_multi_index(tuple(levels), tuple(knob_sizes)), counts > 0


def feature_bins(table: ProfileTable, column: str, bins: int = 4) -> np.ndarray:
    """[R] the feature ``column`` as a LUT key: its values when it has at most ``bins`` distinct ones, else the index
    of its train-quantile bin (0 .. bins-1; cut points at the train split's 1/bins, 2/bins, ... quantiles)."""
    x = np.asarray(table.features[:, list(table.feature_names).index(column)], float)
    if len(np.unique(x)) > bins:
        x = np.searchsorted(np.quantile(x[table.split == "train"], np.linspace(0, 1, bins + 1)[1:-1]), x)
    return x


def feature_lut(table: ProfileTable, columns=(), lam: float = 2.0, fit: str = "train", bins: int = 4,
                rule: str = "mean_reward") -> dict:
    """Normalized utility on val of a lookup table keyed on (task, binned ``columns``): per budget, each key's config
    is the one with the best mean reward over the ``fit`` split's requests of that key ("train": what a controller
    could learn; "val": the in-sample ceiling; "all": perfect knowledge); a val key never seen in ``fit`` falls back
    to its task's choice. A feature with more than ``bins`` distinct values is cut at its train quantiles. Whether
    this beats the task LUT (``columns=()``; with ``fit="all"`` it is the context value) says whether the features
    predict which config a request needs. ``rule`` (``best_per_group``): how a key's config is picked from its fit
    requests — the best mean reward (default), or the config most often labelled optimal (jointly or per knob), the
    choice a classifier of oracle labels makes. Scored by ``env.evaluate_actions`` like every controller."""
    env = E.make_env_params(table, lam=lam, oracle_tol=E.ORACLE_TOL)
    R = table.num_requests
    rew = np.asarray(E.reward_matrix(env, jnp.arange(R)[None, :], env.budgets[:, None]))  # [B, R, C]
    train = table.split == "train"
    fitted = {"train": train, "val": table.split == "val", "all": np.ones(R, bool)}[fit]
    cols = [np.asarray(table.task_types).astype(str)]
    for c in columns:
        cols.append(np.char.mod("%g", feature_bins(table, c, bins)))
    key = np.unique(np.stack(cols, -1), axis=0, return_inverse=True)[1].reshape(-1)  # [R] (task, bins) code
    task = np.asarray(env.task)
    by_key, seen = best_per_group(rew, key, fitted, rule, env.knob_sizes)
    by_task, _ = best_per_group(rew, task, fitted, rule, env.knob_sizes)
    choice = np.where(seen[key][None], by_key[:, key], by_task[:, task])  # [B, R]
    vreq, _ = E.eval_grid(env)
    actions = np.take_along_axis(choice, np.asarray(vreq), -1)  # [B, Rv]
    u = np.asarray(E.evaluate_actions(env, jnp.asarray(actions))["utility"])
    refs = E.evaluate_references(env)
    norm = A.normalized_utility(u, np.asarray(refs["random"]["utility"]), np.asarray(refs["oracle"]["utility"]))
    val = np.asarray(vreq[0])
    return {"columns": list(columns), "fit": fit, "rule": rule, "keys_on_val": int(len(np.unique(key[val]))),
            "normalized_utility_per_budget": np.asarray(norm).tolist(),
            "normalized_utility": float(A.mean_over_budgets(norm)),
            "val_actions": actions}  # [B, Rv] configs chosen for the val requests (feature_lut_decision's input)


def feature_lut_decision(table: ProfileTable, columns, lam: float = 2.0, fit: str = "train", base=(),
                         rule: str = "mean_reward", base_rule: str = "mean_reward", bins: int = 4) -> dict:
    """Is the LUT on ``columns`` better than the LUT on ``base`` (default: the task LUT), both fitted on ``fit``, by
    the lab's decision rule (``e5jax.decide.compare``: normalized utility on val, a paired bootstrap over the val
    requests, 95% CI of the difference)? A LUT is deterministic, so the request level is the only uncertainty.
    Returns the ``decide.pair`` row (a = columns, b = base: ``diff``, ``ci_two_level``, ``decision``: ">", "<" or
    "unresolved") with both LUTs' values. ``rule`` / ``base_rule``: each side's ``feature_lut`` rule (the two
    sides may differ in their rule alone); ``bins``: ``feature_lut``'s."""
    from e5jax import decide as D

    env = E.make_env_params(table, lam=lam, oracle_tol=E.ORACLE_TOL)
    val = np.asarray(E.eval_grid(env)[0][0])
    rew = D.request_rewards(np.asarray(env.quality)[val], np.asarray(env.latency_norm)[val], np.asarray(env.budgets),
                            float(env.lam))  # [B, Rv, C]
    u_rand, u_orc = rew.mean(-1), rew.max(-1)
    bi, ri = np.arange(rew.shape[0])[:, None], np.arange(rew.shape[1])[None, :]

    def metric(cols, r):
        a = np.asarray(feature_lut(table, cols, lam=lam, fit=fit, bins=bins, rule=r)["val_actions"])
        return D.Metric((rew[bi, ri, a] - u_rand)[None], u_orc - u_rand)

    a, b = "+".join(columns) or "task", "+".join(base) or "task"
    if rule != base_rule:
        a, b = f"{a} ({rule})", f"{b} ({base_rule})"
    if a == b:
        raise ValueError(f"feature_lut_decision: the same LUT on both sides ({a})")
    res = D.compare({a: metric(tuple(columns), rule), b: metric(tuple(base), base_rule)})
    row = D.pair(res, a, b)
    return {"columns": list(columns), "base": list(base), "rule": rule, "base_rule": base_rule, "fit": fit,
            "value": res["methods"][a]["value"],
            "base_value": res["methods"][b]["value"], "diff": row["diff"], "ci": row["ci_two_level"],
            "decision": row["decision"], "confidence": res["confidence"], "n_boot": res["n_boot"]}


def oracle_gap_sources(table: ProfileTable, lam: float = 2.0, edges=(0.5,)) -> dict:
    """Where the per-request oracle's lead over the task LUT comes from: val requests binned by the quality the *full*
    config gets on them (``edges`` cut [0, 1]). Per bin: its requests' share of the summed gap (oracle reward minus
    the train-fitted task LUT's, mean over budgets), the mean quality the oracle config at the largest budget has above
    the full config's (where positive, the oracle profits from a degraded config answering better than the full model)
    and the share of each knob level among those oracle configs,
    and the task LUT's normalized utility on the bin's requests alone (``feature_lut`` on the sub-table, fitted on
    train and on all). The full config's quality is an outcome, not a feature: a diagnostic of the table, never a
    controller input. A gap that sits in the bins the model gets wrong is the model's error pattern, which request
    features need not predict."""
    env = E.make_env_params(table, lam=lam, oracle_tol=E.ORACLE_TOL)
    R = table.num_requests
    rew = np.asarray(E.reward_matrix(env, jnp.arange(R)[None, :], env.budgets[:, None]))  # [B, R, C]
    train, val = table.split == "train", table.split == "val"
    task = np.asarray(env.task)
    by_task, _ = best_per_group(rew, task, train)  # [B, T]
    chosen = np.take_along_axis(rew, by_task[:, task][..., None], -1)[..., 0]  # [B, R]
    gap = (rew.max(-1) - chosen).mean(0)  # [R], mean over budgets
    q = np.asarray(table.quality, float)
    full = q[:, table.full_config]
    top = rew[-1].argmax(-1)  # [R] the oracle's config at the largest budget
    above = q[np.arange(R), top] - full
    levels = table.config_levels()[top]  # [R, K]
    cuts = [0.0, *map(float, edges), 1.0]
    label = np.clip(np.searchsorted(np.asarray(edges, float), full, side="right"), 0, len(cuts) - 2)
    total = float(gap[val].sum())
    bins = []
    for i in range(len(cuts) - 1):
        m = label == i
        row = {"full_quality": [cuts[i], cuts[i + 1]], "val_requests": int((m & val).sum()),
               "share_of_val_requests": float((m & val).sum() / max(val.sum(), 1)),
               "share_of_gap": float(gap[m & val].sum() / total) if total > 0 else None,
               "mean_gap": float(gap[m & val].mean()) if (m & val).any() else None,
               "oracle_quality_over_full": float(above[m & val].mean()) if (m & val).any() else None,
               "oracle_levels_at_largest_budget": {
                   k: {int(v): float(np.mean(levels[m & val, j] == v)) for v in table.knobs[k]}
                   for j, k in enumerate(table.knob_names)} if (m & val).any() else None,
               "task_lut_train": None, "task_lut_all": None}
        if (m & val).sum() >= 2 and (m & train).any():
            sub = table.take(m)
            row["task_lut_train"] = feature_lut(sub, (), lam=lam, fit="train")["normalized_utility"]
            row["task_lut_all"] = feature_lut(sub, (), lam=lam, fit="all")["normalized_utility"]
        bins.append(row)
    return {"lam": lam, "edges": list(map(float, edges)), "val_requests": int(val.sum()),
            "task_lut_train": feature_lut(table, (), lam=lam, fit="train")["normalized_utility"],
            "task_lut_all": feature_lut(table, (), lam=lam, fit="all")["normalized_utility"], "bins": bins}
