"""The sweep's three phases (tune, compare, lambda): each method's rows (trials or settings x seeds, padded and
sharded over the devices), initialised, compiled and trained by the host loop (``e5jax.loop``), scored per row,
and its per-row greedy val configs saved under ``per_request/`` for the request-level decisions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from e5jax import analysis as A
from e5jax import decide as D
from e5jax import engine
from e5jax import env as E
from e5jax.config import RunConfig
from e5jax.io import atomic_write
from e5jax.loop import compile_method, compile_pool, env_steps_axis, init_method, train_chunks
from e5jax.methods import METHODS
from e5jax.methods import common as C
from e5jax.sweep.spec import draw_trials, edge_report
from e5jax.table import ProfileTable


def sweep_config(name: str, cfg, settings: list[dict]):
    """The static config for rows with these traced settings: the method's ``static_for`` when it has one (GRPO
    compiles its KL term only for a static beta > 0), else the config as it is."""
    static_for = METHODS[name].static_for
    return static_for(cfg, settings) if static_for else cfg


def sweep_rows(name: str, cfg, settings: list[dict], repeat: int):
    """(static config, per-row hp) for these settings, each repeated over ``repeat`` seeds. A name the static config
    compiles out (GRPO's beta when every row has beta = 0, e.g. one trial or a tuned beta of 0) is left out of the
    rows: it equals the static value on every row, so nothing is lost."""
    cfg = sweep_config(name, cfg, settings)
    names = C.traced_names(cfg)
    hp = {}
    for k in settings[0] if settings else ():
        vals = np.repeat([s[k] for s in settings], repeat)
        if k in names:
            hp[k] = vals
        elif not np.all(vals == getattr(cfg, k)):
            raise ValueError(f"{k} is compiled out of this config but the rows set it to {sorted(set(vals))}")
    return cfg, hp


# ----------------------------------------------------------------------------- rows
def pad_rows(x, n_dev: int):
    """Pad the leading (row) axis to a multiple of ``n_dev`` by repeating the first row."""
    n = x.shape[0]
    pad = (-n) % n_dev
    return x if pad == 0 else jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)], 0)


def row_keys(base_seed: int, seeds: int, repeats: int) -> jax.Array:
    """[repeats * seeds] keys: seed i's key (``engine.seed_keys``) for every block of rows (common random numbers)."""
    return jnp.tile(engine.seed_keys(base_seed, seeds), (repeats, 1))


def init_rows(name: str, cfg, run: RunConfig, env: E.EnvParams, keys, hp: dict, env_rows: dict | None = None):
    """Initialise every row (one program), the rows (keys, traced hyperparameters ``hp``, env overrides
    ``env_rows``) padded and sharded over the devices."""
    n_dev = len(jax.devices())
    keys = engine.shard_seeds(pad_rows(keys, n_dev))
    rows = lambda d: {k: engine.shard_seeds(pad_rows(jnp.asarray(v, jnp.float32), n_dev)) for k, v in d.items()}  # noqa: E731
    return init_method(name, cfg, run, env, keys=keys, hp=rows(hp) or None, env_rows=rows(env_rows or {}) or None)


def train_rows(prepared, n: int, run: RunConfig, env: E.EnvParams, pbar=None, label: str = "") -> dict:
    """Train every row of a prepared program; per-row eval arrays on the host, padding dropped (``actions``: the
    greedy val configs [n, E, B, Rv] at every eval point, for the request-level bootstrap)."""
    tr = train_chunks(prepared, run, env, pbar, label=label)
    ev = {k: np.stack([np.asarray(e[k]) for e in tr.evals], 1)[:n] for k in ("utility", "slo_violation_rate", "quality_mean")}
    actions = np.stack([np.asarray(e["actions"]) for e in tr.evals], 1)[:n].astype(np.int16)
    return {"steps": env_steps_axis(tr.step_inc)[:n], **ev, "actions": actions, "compile_s": prepared.compile_s,
            "train_s": float(sum(tr.chunk_s)), "rows": n, "devices": len(jax.devices())}


def run_phase(jobs: dict, run: RunConfig, env: E.EnvParams, pbar, on_done) -> None:
    """``jobs``: {method: (cfg, keys, hp, env_rows, label)}. Every method is initialised in this thread, then its
    program compiled in a thread pool (compiles only: ``loop.compile_pool``), and trained here, method by method, as
    soon as its program is ready; ``on_done(method, result)`` after each."""
    def init(m):
        cfg, keys, hp, env_rows, _ = jobs[m]
        return init_rows(m, cfg, run, env, keys, hp, env_rows)

    with compile_pool(list(jobs), init, env, init_first=True) as compiled:
        for m, (_, keys, _, _, label) in jobs.items():
            on_done(m, train_rows(compiled[m], keys.shape[0], run, env, pbar, label))


def refs_at(env: E.EnvParams, lam: float) -> dict:
    r = E.evaluate_references(env.replace(lam=jnp.float32(lam)))
    return {k: {m: np.asarray(v) for m, v in d.items()} for k, d in r.items()}


def row_scores(res: dict, refs: list[dict], lo: float, hi: float) -> dict:
    """Per row: final normalized utility, its AUC over log env steps in [lo, hi], final SLO violation and quality.
    ``refs[i]``: row i's references (its lambda's random and oracle utility per budget)."""
    u_r = np.stack([r["random"]["utility"] for r in refs])[:, None, :]
    u_o = np.stack([r["oracle"]["utility"] for r in refs])[:, None, :]
    curve = A.mean_over_budgets(A.normalized_utility(res["utility"], u_r, u_o))  # [N, E]
    auc = np.array([A.auc_log_steps(res["steps"][i], curve[i], lo, hi) for i in range(len(curve))])
    return {"final": curve[:, -1], "auc": auc, "slo": res["slo_violation_rate"][:, -1].mean(-1),
            "quality": res["quality_mean"][:, -1].mean(-1)}


def _summ(x) -> dict:
    x = np.asarray(x, np.float64)
    return {**A.iqm_ci(x), "std": float(x.std(ddof=1)) if x.size > 1 else float("nan"), "per_seed": x}


# ----------------------------------------------------------------------------- per-request results
PER_REQUEST = "per_request"


def save_actions(out: Path, name: str, res: dict) -> str:
    """A phase's per-row greedy val configs [N, E, B, Rv] and env steps [N, E] -> ``per_request/<name>.npz``."""
    rel = f"{PER_REQUEST}/{name}.npz"
    atomic_write(out / rel, lambda f: np.savez_compressed(f, actions=res["actions"], steps=res["steps"]), binary=True)
    return rel


def save_val(out: Path, env: E.EnvParams) -> None:
    val = np.asarray(env.val_idx)
    arrays = {"quality": np.asarray(env.quality)[val], "latency_norm": np.asarray(env.latency_norm)[val],
              "budgets": np.asarray(env.budgets)}
    atomic_write(out / PER_REQUEST / "val.npz", lambda f: np.savez_compressed(f, **arrays), binary=True)


def row_metrics(out: Path, rel: str, rows: slice, lam: float, auc_range: tuple) -> dict:
    """decide.Metric per question for the rows ``rows`` of a saved phase (their lambda's rewards)."""
    with np.load(out / PER_REQUEST / "val.npz") as z:
        q, lat, b = z["quality"], z["latency_norm"], z["budgets"]
    with np.load(out / rel) as z:
        acts, steps = z["actions"][rows], z["steps"][rows]
    rew = D.request_rewards(q, lat, b, lam)
    return D.run_metrics(acts, rew, q, lat, b, steps, auc_range)


# ----------------------------------------------------------------------------- phases
def choose(trials: list[dict]) -> tuple[dict, dict]:
    """The trial with the best mean final normalized utility and the one with the best mean AUC (tuning split)."""
    idx = {"final": int(np.nanargmax([t["final_mean"] for t in trials])),
           "auc": int(np.nanargmax([t["auc_mean"] for t in trials]))}
    return idx, {k: trials[i]["settings"] for k, i in idx.items()}


def phase_tune(spec, run, cfgs, table: ProfileTable, doc, save, pbar, lam: float | None = None, key: str = "tune"):
    """Tune every method on the tuning split at ``lam`` (default: the run's), choosing by final utility and by AUC
    from the same trials. Random search runs ``1 + widen_rounds`` rounds of ``trials`` fresh trials for every method
    (the same budget for each); before a round, a range whose chosen value sits within ``edge_margin`` of an edge
    is widened. The choice is made over every round's trials. Grid search: one round (lists are never widened)."""
    tune_table = table.tuning_split(spec.tuning_fraction, seed=spec.tuning_seed)
    lam = run.lam if lam is None else float(lam)
    env = E.env_from_run(run, tune_table).replace(lam=jnp.float32(lam))
    refs = refs_at(env, lam)
    lo, hi = float(run.env_steps_per_update), float(run.total_env_steps)
    out = doc.setdefault(key, {})
    S = spec.seeds
    for m in spec.methods:
        out.setdefault(m, {"lam": lam, "spaces": [spec.space_of(m)], "trials": [], "rounds": 0, "done": False,
                           "default": {k: float(getattr(cfgs[m], k)) for k in spec.space_of(m)}, "train_s": 0.0,
                           "compile_s": 0.0})
    while True:
        todo = {m: draw_trials(spec, m, cfgs[m], out[m]["spaces"][-1], out[m]["rounds"])
                for m in spec.methods if not out[m]["done"]}
        if not todo:
            return
        jobs = {}
        for m, t in todo.items():
            cfg, hp = sweep_rows(m, cfgs[m], t, S)
            jobs[m] = (cfg, row_keys(run.base_seed, S, len(t)), hp, None, f"{key} {m} round {out[m]['rounds']} {len(t)}x{S}")
        if pbar is not None and any(out[m]["rounds"] > 0 for m in todo):
            pbar.total += sum(out[m]["rounds"] > 0 for m in todo) * run.num_chunks
            pbar.refresh()

        def done(m, res):
            T = len(todo[m])
            o = out[m]
            sc = row_scores(res, [refs] * (T * S), lo, hi)
            per_trial = {k: v.reshape(T, S) for k, v in sc.items()}
            o["trials"] += [{"settings": t, "round": o["rounds"], "final_mean": float(per_trial["final"][i].mean()),
                             "auc_mean": float(per_trial["auc"][i].mean()), "final_per_seed": per_trial["final"][i],
                             "auc_per_seed": per_trial["auc"][i]} for i, t in enumerate(todo[m])]
            o["rounds"] += 1
            o["chosen_trial"], o["chosen"] = choose(o["trials"])
            o["edges"] = edge_report(spec, m, o["spaces"][-1], o["chosen"])
            wid = dict(o["spaces"][-1])
            for h in o["edges"]:
                if h["widened_to"] is not None:
                    wid[h["hyperparameter"]] = h["widened_to"]
            if spec.search == "random" and o["rounds"] <= spec.widen_rounds:
                # every method runs 1 + widen_rounds rounds of fresh trials (an equal tuning budget, whether or not
                # its choice sits at an edge); a range whose chosen value does is widened for the next round
                o["spaces"].append(wid)
            else:
                o["done"] = True
            o.update(rows=o.get("rows", 0) + res["rows"], devices=res["devices"],
                     compile_s=o["compile_s"] + res["compile_s"], train_s=o["train_s"] + res["train_s"],
                     env_steps_per_row=float(res["steps"][:, -1].mean()))
            o["env_steps_per_s"] = float(o["env_steps_per_row"] * o["rows"] / max(o["train_s"], 1e-9))
            save()

        run_phase(jobs, run, env, pbar, done)


SETTINGS = ("default", "tuned_final", "tuned_auc")


def compared_settings(doc: dict, m: str, key: str = "tune") -> dict:
    """{setting: traced values or None (= the config's own)} a method is compared at."""
    t = doc.get(key, {}).get(m)
    if not t or "chosen" not in t:
        return {"default": None}
    return {"default": t["default"], "tuned_final": t["chosen"]["final"], "tuned_auc": t["chosen"]["auc"]}


def time_per_update(name: str, cfg, settings: dict, run: RunConfig, env: E.EnvParams, rows: int) -> dict:
    """Measured seconds per update of each setting's own program (``rows`` rows; settings that compile to the same
    static config share one measurement): 3 chunks, the minimum of chunks 2-3 divided by the chunk's updates (each
    chunk ends with one val evaluation, included)."""
    short = dataclasses.replace(run, total_env_steps=3 * run.eval_every * run.env_steps_per_update, eval_every=run.eval_every)
    cache, out = {}, {}
    for s, v in settings.items():
        c, hp = sweep_rows(name, cfg, [v] if v else [], rows)
        sig = repr(c)
        if sig not in cache:
            p = compile_method(init_rows(name, c, short, env, engine.seed_keys(0, rows), hp), env)
            tr = train_chunks(p, short, env)
            cache[sig] = min(tr.chunk_s[1:]) / run.eval_every
        out[s] = {"s_per_update": cache[sig], "static_config": sig}
    return out


def phase_compare(spec, run, cfgs, table, doc, save, pbar, out_dir: Path):
    env = E.env_from_run(run, table)
    refs = refs_at(env, run.lam)
    lo, hi = float(run.env_steps_per_update), float(run.total_env_steps)
    save_val(out_dir, env)
    out = doc.setdefault("compare", {})
    F = spec.final_seeds
    settings, jobs = {}, {}
    for m in run.methods:
        if m in out:
            continue
        settings[m] = compared_settings(doc, m)
        keys = row_keys(run.base_seed + 1, F, len(settings[m]))  # fresh seeds: never used by tuning
        cfg, hp = sweep_rows(m, cfgs[m], [v for v in settings[m].values() if v], F)
        jobs[m] = (cfg, keys, hp, None, f"compare {m} {len(settings[m])}x{F}")

    def done(m, res):
        sc = row_scores(res, [refs] * (len(settings[m]) * F), lo, hi)
        out[m] = {s: {"settings": v, "rows": [i * F, (i + 1) * F], **{k: _summ(sc[k][i * F:(i + 1) * F]) for k in sc}}
                  for i, (s, v) in enumerate(settings[m].items())}
        out[m]["per_request"] = save_actions(out_dir, f"compare_{m}", res)
        for s in settings[m]:  # each setting's mean with its seed-only and two-level CIs
            met = row_metrics(out_dir, out[m]["per_request"], slice(*out[m][s]["rows"]), run.lam, (lo, hi))
            out[m][s]["ci"] = {k: D.compare({m: met[k]}, higher=True)["methods"][m] for k in ("final", "auc", "slo", "quality")}
        if len(settings[m]) > 1:  # the cost of the settings compared, measured (not assumed)
            cost = time_per_update(m, cfgs[m], settings[m], run, env, F)
            for s in settings[m]:
                out[m][s]["cost"] = cost[s]
        save()

    run_phase(jobs, run, env, pbar, done)


def phase_lambda(spec, run, cfgs, table, doc, save, pbar, out_dir: Path):
    """Every method at each lambda with that lambda's oracle and random references: learned methods at the settings
    tuned for final utility at lambda = run.lam (recorded), or, with ``retune``, tuned at each lambda on its own."""
    env = E.env_from_run(run, table)
    lams = [float(x) for x in spec.lams]
    if spec.retune:
        for x in lams:
            phase_tune(spec, run, cfgs, table, doc, save, pbar, lam=x, key=f"tune_lam{x:g}")
    refs = [refs_at(env, x) for x in lams]
    lo, hi = float(run.env_steps_per_update), float(run.total_env_steps)
    save_val(out_dir, env)
    out = doc.setdefault("lambda", {"lams": lams, "methods": {}})
    out["oracle"] = {"slo": [float(r["oracle"]["slo_violation_rate"].mean()) for r in refs],
                     "quality": [float(r["oracle"]["quality_mean"].mean()) for r in refs],
                     "full_config_slo": [float(r["full"]["slo_violation_rate"].mean()) for r in refs]
                     if "full" in refs[0] else None}
    S, L = spec.seeds, len(lams)
    settings, jobs = {}, {}
    for m in run.methods:
        if m in out["methods"]:
            continue
        per_lam = [compared_settings(doc, m, f"tune_lam{x:g}" if spec.retune else "tune") for x in lams]
        tuned = [p.get("tuned_final") for p in per_lam]
        settings[m] = {"setting": ("tuned_final at each lambda" if spec.retune else
                                   f"tuned_final at lambda = {run.lam:g}") if tuned[0] else "default",
                       "per_lambda": tuned}
        cfg, hp = sweep_rows(m, cfgs[m], tuned if tuned[0] else [], S)
        jobs[m] = (cfg, row_keys(run.base_seed, S, L), hp, {"lam": np.repeat(lams, S)}, f"lambda {m} {L}x{S}")

    def done(m, res):
        sc = row_scores(res, [r for r in refs for _ in range(S)], lo, hi)
        out["methods"][m] = {k: [_summ(v[i * S:(i + 1) * S]) for i in range(L)] for k, v in sc.items()}
        out["methods"][m].update(settings[m], per_request=save_actions(out_dir, f"lambda_{m}", res))
        save()

    run_phase(jobs, run, env, pbar, done)
