"""`e5jax sweep`: every learned method tuned with the same budget, and the comparison across lambda.

One compile per method and phase: a method's trials x seeds are rows of one vmapped program (its traced
hyperparameters, ``Config.TRACED``, are per-row values in the state; ``engine.with_hp``), and lambda is a per-row
value of the environment (``engine.row_env``). The rows are sharded over ``jax.devices()`` (padded to a multiple
of the device count), so several accelerators, or several hosts after ``jax.distributed.initialize()``, share
them through JAX's own partitioning.

Three phases, each method's result written to ``sweep.json`` as soon as it is done (a rerun with the same spec,
table and base config skips what is there):

1. **tune**: per method, ``trials`` settings (trial 0 = the base config's defaults; the others drawn at random
   from the method's search space, or a full grid) x ``seeds`` tuning seeds (the same seeds for every trial), at
   the base config's env-step budget, trained on the train requests left after carving a tuning split from
   train (``ProfileTable.tuning_split``) and scored on that tuning split, never on val: final normalized utility
   and sample-efficiency AUC (both recorded; ``select`` picks the one that chooses);
2. **compare**: every method of the base config on the real split with ``final_seeds`` fresh seeds
   (``base_seed + 1``): the default settings and, for tuned methods, the chosen settings, in one program;
3. **lambda**: every method at each lambda in ``lams`` (default settings, ``seeds`` seeds) with each lambda's
   own oracle and random references.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from e5jax import analysis as A
from e5jax import engine
from e5jax import env as E
from e5jax.config import ConfigError, RunConfig, load_config, read_toml
from e5jax.errors import UsageError
from e5jax.io import atomic_write, read_json, write_json
from e5jax.methods import METHODS
from e5jax.methods import common as C
from e5jax.methods.common import LearnerConfig
from e5jax.run import compile_method, env_steps_axis, init_method, table_provenance, train_chunks
from e5jax.table import ProfileTable, default_table_path, load_table

SCHEMA = "e5jax/sweep/v1"
FILE = "sweep.json"
SUMMARY = "summary.md"
FIG_SCORES = "figures/sweep_scores.png"
FIG_LAM = "figures/lam_robustness.png"
DISTS = ("log", "uniform")  # {log = [lo, hi]} log-uniform, {uniform = [lo, hi]}; a list = choices (grid axis)
POSITIVE = ("lr", "clip_eps")  # must be > 0 (DPO's beta too); every other traced value >= 0


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    config: str = ""  # base protocol TOML (run settings, method defaults); "" = the built-in default
    methods: tuple = ("supervised", "ppo", "dpo", "grpo")  # methods tuned
    trials: int = 16  # per method, the same for every method (trial 0 = the defaults)
    search: str = "random"  # random | grid
    seeds: int = 5  # tuning seeds per trial (shared by the trials); also the lambda phase's seeds
    final_seeds: int = 10  # fresh seeds for the default-vs-tuned comparison on val
    select: str = "final"  # final (final normalized utility) | auc (sample-efficiency AUC): the score that chooses
    tuning_fraction: float = 0.25  # of the train requests, per task
    tuning_seed: int = 0
    seed: int = 0  # draws of the random search
    lams: tuple = (0.5, 1.0, 2.0, 4.0, 8.0)  # lambda robustness ([] = skip)
    phases: tuple = ("tune", "compare", "lambda")
    space: dict = dataclasses.field(default_factory=dict)  # method -> {hyperparameter: distribution}


def _fail(msg: str):
    raise UsageError(f"sweep spec: {msg}")


def load_spec(path: str | Path) -> SweepSpec:
    raw = read_toml(path, UsageError)
    unknown = sorted(set(raw) - {"sweep", "space"})
    if unknown:
        _fail(f"unknown section [{unknown[0]}] (sections: [sweep], [space.<method>])")
    vals = dict(raw.get("sweep", {}))
    names = {f.name for f in dataclasses.fields(SweepSpec)} - {"space"}
    bad = sorted(set(vals) - names)
    if bad:
        _fail(f"[sweep] unknown key {bad[0]!r} (known: {', '.join(sorted(names))})")
    vals = {k: tuple(v) if isinstance(v, list) else v for k, v in vals.items()}
    try:
        spec = SweepSpec(**vals, space=dict(raw.get("space", {})))
    except TypeError as e:
        _fail(str(e))
    return spec


def check_spec(spec: SweepSpec, cfgs: dict) -> None:
    """Every problem as one line (UsageError); ``cfgs``: the base config's method configs."""
    for k in ("trials", "seeds", "final_seeds"):
        v = getattr(spec, k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            _fail(f"[sweep] {k} must be an integer >= 1, got {v!r}")
    if spec.search not in ("random", "grid"):
        _fail(f"[sweep] search must be random or grid, got {spec.search!r}")
    if spec.select not in ("final", "auc"):
        _fail(f"[sweep] select must be final or auc, got {spec.select!r}")
    if not (isinstance(spec.tuning_fraction, float) and 0 < spec.tuning_fraction < 1):
        _fail(f"[sweep] tuning_fraction must be a number in (0, 1), got {spec.tuning_fraction!r}")
    bad_phase = [x for x in spec.phases if x not in ("tune", "compare", "lambda")]
    if bad_phase or not spec.phases:
        _fail(f"[sweep] phases must be a non-empty subset of tune, compare, lambda, got {list(spec.phases)}")
    if any(not isinstance(x, (int, float)) or isinstance(x, bool) or not (math.isfinite(x) and x >= 0)
           for x in spec.lams) or len(set(spec.lams)) != len(spec.lams):
        _fail(f"[sweep] lams must be distinct finite numbers >= 0, got {list(spec.lams)}")
    if "lambda" in spec.phases and not spec.lams:
        _fail("[sweep] lams is empty but the lambda phase is on: give lambda values or drop the phase")
    for m in spec.methods:
        if m not in METHODS:
            _fail(f"[sweep] methods: unknown method {m!r} (choose from {', '.join(METHODS)})")
        if m not in cfgs:
            _fail(f"[sweep] methods: {m!r} is not in the base config's methods ({', '.join(cfgs)})")
        if not issubclass(METHODS[m].Config, LearnerConfig):
            _fail(f"[sweep] methods: {m!r} has no traced hyperparameters to tune (training-free)")
        if not spec.space.get(m):
            _fail(f"[space.{m}] is missing or empty: give at least one hyperparameter range")
    for m, space in spec.space.items():  # spaces of methods not tuned this time are checked too, then unused
        if m not in METHODS:
            _fail(f"[space.{m}]: unknown method {m!r} (choose from {', '.join(METHODS)})")
        if not isinstance(space, dict):
            _fail(f"[space.{m}] must be a table of hyperparameter = distribution")
        cls = METHODS[m].Config
        if not issubclass(cls, LearnerConfig):
            _fail(f"[space.{m}]: {m!r} has no traced hyperparameters to tune (training-free)")
        fields = {f.name for f in dataclasses.fields(cls)}
        for k, dist in space.items():
            where = f"[space.{m}] {k}"
            if k not in fields:
                _fail(f"{where}: unknown hyperparameter (traced: {', '.join(cls.TRACED)})")
            if k not in cls.TRACED:
                _fail(f"{where} is static (changing it recompiles the program): sweep it with one config per value "
                      f"(traced: {', '.join(cls.TRACED)})")
            values = _dist_values(dist, where, spec.search)
            lo_ok = (lambda v: v > 0) if k in POSITIVE or (m == "dpo" and k == "beta") else (lambda v: v >= 0)
            if not all(lo_ok(v) for v in values):
                _fail(f"{where}: values must be {'> 0' if k in POSITIVE or k == 'beta' else '>= 0'}, got {values}")
            if k == "label_smoothing" and max(values) >= 0.5:
                _fail(f"{where}: label smoothing must be < 0.5, got {values}")
    if spec.search == "grid":
        for m in spec.methods:  # (only the tuned ones)
            n = math.prod(len(v) for v in spec.space[m].values())
            if n != spec.trials:
                _fail(f"[space.{m}]: the grid has {n} points but trials = {spec.trials} (every method gets the same "
                      "number of trials)")


def _dist_values(dist, where: str, search: str) -> list:
    """The numbers a distribution names (its bounds, or its choices), checked."""
    if isinstance(dist, list):
        if not dist:
            _fail(f"{where}: empty list of values")
        vals = dist
    elif isinstance(dist, dict):
        if search == "grid":
            _fail(f"{where}: grid search needs a list of values, got {dist}")
        if len(dist) != 1 or next(iter(dist)) not in DISTS:
            _fail(f"{where}: give {{log = [lo, hi]}}, {{uniform = [lo, hi]}} or a list of values, got {dist}")
        kind, vals = next(iter(dist.items()))
        if not (isinstance(vals, list) and len(vals) == 2):
            _fail(f"{where}: {kind} needs [lo, hi], got {vals!r}")
        if not vals[0] < vals[1]:
            _fail(f"{where}: empty range {vals} (need lo < hi)")
        if kind == "log" and vals[0] <= 0:
            _fail(f"{where}: a log range needs lo > 0, got {vals}")
    else:
        _fail(f"{where}: give {{log = [lo, hi]}}, {{uniform = [lo, hi]}} or a list of values, got {dist!r}")
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) for v in vals):
        _fail(f"{where}: values must be finite numbers, got {vals}")
    return [float(v) for v in vals]


def draw_trials(spec: SweepSpec, method: str, cfg) -> list[dict]:
    """The method's trials: {hyperparameter: value}. Random search: trial 0 = the base config's values, the others
    drawn independently (log-uniform, uniform or a choice), seeded by (spec.seed, method). Grid: every point."""
    space = spec.space[method]
    if spec.search == "grid":
        keys = list(space)
        return [dict(zip(keys, map(float, point))) for point in itertools.product(*(space[k] for k in keys))]
    rng = np.random.default_rng([spec.seed, list(METHODS).index(method)])
    trials = [{k: float(getattr(cfg, k)) for k in space}]
    for _ in range(spec.trials - 1):
        t = {}
        for k, dist in space.items():
            if isinstance(dist, list):
                t[k] = float(dist[rng.integers(len(dist))])
            elif "log" in dist:
                lo, hi = dist["log"]
                t[k] = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            else:
                lo, hi = dist["uniform"]
                t[k] = float(rng.uniform(lo, hi))
        trials.append(t)
    return trials


def sweep_config(cfg, settings: list[dict]):
    """The static config for rows with these traced settings: the method's own ``Config.with_traced`` when it has
    one (GRPO compiles its KL term only for a static beta > 0), else the config as it is."""
    return cfg.with_traced(settings) if hasattr(cfg, "with_traced") else cfg


def sweep_rows(cfg, settings: list[dict], repeat: int):
    """(static config, per-row hp) for these settings, each repeated over ``repeat`` seeds. A name the static config
    compiles out (GRPO's beta when every row has beta = 0, e.g. one trial or a tuned beta of 0) is left out of the
    rows: it equals the static value on every row, so nothing is lost."""
    cfg = sweep_config(cfg, settings)
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


def init_rows(name: str, cfg, run: RunConfig, env: E.EnvParams, keys, hp: dict):
    """Initialise every row (one program), the rows padded and sharded over the devices."""
    n_dev = len(jax.devices())
    keys = engine.shard_seeds(pad_rows(keys, n_dev))
    hp = {k: engine.shard_seeds(pad_rows(jnp.asarray(v, jnp.float32), n_dev)) for k, v in hp.items()}
    return init_method(name, cfg, run, env, keys=keys, hp=hp or None)


def train_rows(prepared, n: int, run: RunConfig, env: E.EnvParams, pbar=None, label: str = "") -> dict:
    """Train every row of a prepared program; per-row eval arrays on the host, padding dropped."""
    tr = train_chunks(prepared, run, env, pbar, label=label)
    ev = {k: np.stack([np.asarray(e[k]) for e in tr.evals], 1)[:n] for k in ("utility", "slo_violation_rate", "quality_mean")}
    return {"steps": env_steps_axis(tr.step_inc)[:n], **ev, "compile_s": prepared.compile_s,
            "train_s": float(sum(tr.chunk_s)), "rows": n, "devices": len(jax.devices())}


def run_phase(jobs: dict, run: RunConfig, env: E.EnvParams, pbar, on_done) -> None:
    """``jobs``: {method: (cfg, keys, hp, label)}. Every method is initialised in this thread, its program compiled
    in a thread pool (compiles only: ``run.compile_method``), and trained here, method by method, as soon as its
    program is ready; ``on_done(method, result)`` after each."""
    if not jobs:
        return
    inits = {m: init_rows(m, cfg, run, env, keys, hp) for m, (cfg, keys, hp, _) in jobs.items()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        futures = {m: pool.submit(compile_method, inits[m], env) for m in jobs}
        try:
            for m, (_, keys, _, label) in jobs.items():
                on_done(m, train_rows(futures[m].result(), keys.shape[0], run, env, pbar, label))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def refs_at(env: E.EnvParams, lam: float) -> dict:
    r = E.evaluate_references(env.replace(lam=jnp.float32(lam)))
    return {k: {m: np.asarray(v) for m, v in d.items()} for k, d in r.items()}


def row_scores(res: dict, refs: list[dict], lo: float, hi: float) -> dict:
    """Per row: final normalized utility, its AUC over log env steps in [lo, hi], final SLO violation and quality.
    ``refs[i]``: row i's references (its lambda's random and oracle utility per budget)."""
    u_r = np.stack([r["random"]["utility"] for r in refs])[:, None, :]
    u_o = np.stack([r["oracle"]["utility"] for r in refs])[:, None, :]
    curve = A.normalized_utility(res["utility"], u_r, u_o).mean(-1)  # [N, E]
    auc = np.array([A.auc_log_steps(res["steps"][i], curve[i], lo, hi) for i in range(len(curve))])
    return {"final": curve[:, -1], "auc": auc, "slo": res["slo_violation_rate"][:, -1].mean(-1),
            "quality": res["quality_mean"][:, -1].mean(-1)}


def _summ(x) -> dict:
    x = np.asarray(x, np.float64)
    return {**A.iqm_ci(x), "std": float(x.std(ddof=1)) if x.size > 1 else float("nan"), "per_seed": x}


# ----------------------------------------------------------------------------- phases
def _fingerprint(spec: SweepSpec, run: RunConfig, cfgs: dict, table_sha: str) -> str:
    blob = json.dumps({"spec": dataclasses.asdict(spec), "run": dataclasses.asdict(run),
                       "cfgs": {k: dataclasses.asdict(v) for k, v in cfgs.items()}, "table": table_sha},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def phase_tune(spec, run, cfgs, table: ProfileTable, doc, save, pbar):
    tune_table = table.tuning_split(spec.tuning_fraction, seed=spec.tuning_seed)
    env = E.env_from_run(run, tune_table)
    refs = refs_at(env, run.lam)
    lo, hi = float(run.env_steps_per_update), float(run.total_env_steps)
    out = doc.setdefault("tune", {})
    S = spec.seeds
    trials = {m: draw_trials(spec, m, cfgs[m]) for m in spec.methods if m not in out}
    jobs = {}
    for m, t in trials.items():
        cfg, hp = sweep_rows(cfgs[m], t, S)
        jobs[m] = (cfg, row_keys(run.base_seed, S, len(t)), hp, f"tune {m} {len(t)}x{S}")

    def done(m, res):
        T = len(trials[m])
        sc = row_scores(res, [refs] * (T * S), lo, hi)
        per_trial = {k: v.reshape(T, S) for k, v in sc.items()}
        score = {k: per_trial[k].mean(1) for k in ("final", "auc")}
        best = int(np.nanargmax(score[spec.select]))
        out[m] = {"trials": [{"settings": t, "final_mean": float(score["final"][i]), "auc_mean": float(score["auc"][i]),
                              "final_per_seed": per_trial["final"][i], "auc_per_seed": per_trial["auc"][i]}
                             for i, t in enumerate(trials[m])],
                  "chosen": trials[m][best], "chosen_trial": best,
                  "default": {k: float(getattr(cfgs[m], k)) for k in trials[m][0]},
                  "rows": res["rows"], "devices": res["devices"], "compile_s": res["compile_s"], "train_s": res["train_s"],
                  "env_steps_per_row": float(res["steps"][:, -1].mean()),
                  "env_steps_per_s": float(res["steps"][:, -1].sum() / max(res["train_s"], 1e-9))}
        save()

    run_phase(jobs, run, env, pbar, done)


def phase_compare(spec, run, cfgs, table, doc, save, pbar):
    env = E.env_from_run(run, table)
    refs = refs_at(env, run.lam)
    lo, hi = float(run.env_steps_per_update), float(run.total_env_steps)
    out = doc.setdefault("compare", {})
    F = spec.final_seeds
    settings, jobs = {}, {}
    for m in run.methods:
        if m in out:
            continue
        tuned = doc.get("tune", {}).get(m)
        settings[m] = {"default": None} if tuned is None else {"default": tuned["default"], "tuned": tuned["chosen"]}
        keys = row_keys(run.base_seed + 1, F, len(settings[m]))  # fresh seeds: never used by tuning
        cfg, hp = sweep_rows(cfgs[m], [v for v in settings[m].values() if v], F)
        jobs[m] = (cfg, keys, hp, f"compare {m} {len(settings[m])}x{F}")

    def done(m, res):
        sc = row_scores(res, [refs] * (len(settings[m]) * F), lo, hi)
        out[m] = {s: {"settings": v, **{k: _summ(sc[k][i * F:(i + 1) * F]) for k in sc}}
                  for i, (s, v) in enumerate(settings[m].items())}
        save()

    run_phase(jobs, run, env, pbar, done)


def phase_lambda(spec, run, cfgs, table, doc, save, pbar):
    env = E.env_from_run(run, table)
    lams = [float(x) for x in spec.lams]
    refs = [refs_at(env, x) for x in lams]
    lo, hi = float(run.env_steps_per_update), float(run.total_env_steps)
    out = doc.setdefault("lambda", {"lams": lams, "methods": {}})
    out["oracle"] = {"slo": [float(r["oracle"]["slo_violation_rate"].mean()) for r in refs],
                     "quality": [float(r["oracle"]["quality_mean"].mean()) for r in refs],
                     "full_config_slo": [float(r["full"]["slo_violation_rate"].mean()) for r in refs]
                     if "full" in refs[0] else None}
    S, L = spec.seeds, len(lams)
    jobs = {m: (cfgs[m], row_keys(run.base_seed, S, L), {"lam": np.repeat(lams, S)}, f"lambda {m} {L}x{S}")
            for m in run.methods if m not in out["methods"]}

    def done(m, res):
        sc = row_scores(res, [r for r in refs for _ in range(S)], lo, hi)
        out["methods"][m] = {k: [_summ(v[i * S:(i + 1) * S]) for i in range(L)] for k, v in sc.items()}
        save()

    run_phase(jobs, run, env, pbar, done)


# ----------------------------------------------------------------------------- conclusions
def answers(results: dict) -> dict:
    """{question: {"winner", "ranking"}} from one setting's per-method summaries {method: {final, auc, ...}}."""
    def rank(key, better):
        vals = {m: r[key]["iqm"] if better == "high" else r[key]["std"] for m, r in results.items()}
        order = sorted(vals, key=lambda m: (-vals[m] if better == "high" else vals[m]))
        out = {"winner": order[0], "ranking": order, "values": vals}
        if better == "high" and len(order) > 1:  # is the winner's CI clear of the runner-up's?
            w, r = results[order[0]][key], results[order[1]][key]
            out["separated_from_runner_up"] = bool(w["ci_low"] > r["ci_high"])
        return out

    return {"final_utility (frontier)": rank("final", "high"), "sample_efficiency (AUC)": rank("auc", "high"),
            "stability (std of final over seeds)": rank("final", "low")}


def compare_answers(doc: dict) -> dict:
    comp = doc.get("compare", {})
    default = {m: r["default"] for m, r in comp.items()}
    tuned = {m: r.get("tuned", r["default"]) for m, r in comp.items()}
    a, b = answers(default), answers(tuned)
    return {q: {"default": a[q], "tuned": b[q], "winner_changed": a[q]["winner"] != b[q]["winner"],
                "ranking_changed": a[q]["ranking"] != b[q]["ranking"]} for q in a}


def lambda_conclusions(lam: dict) -> dict:
    """Pairwise orderings (IQM of final normalized utility) at each lambda: which hold at every lambda, which flip."""
    ms = list(lam["methods"])
    val = {m: [x["iqm"] for x in lam["methods"][m]["final"]] for m in ms}
    holds, flips = [], []
    for a, b in itertools.combinations(ms, 2):
        sign = [np.sign(x - y) for x, y in zip(val[a], val[b])]
        if all(s > 0 for s in sign):
            holds.append(f"{a} > {b}")
        elif all(s < 0 for s in sign):
            holds.append(f"{b} > {a}")
        else:
            at = [f"{lmb:g}" for lmb, s in zip(lam["lams"], sign) if s > 0]
            flips.append(f"{a} vs {b}: {a} ahead at lambda = {', '.join(at) or 'none'}, behind or tied elsewhere")
    winners = [max(ms, key=lambda m: val[m][i]) for i in range(len(lam["lams"]))]
    return {"holds_at_every_lambda": holds, "flips": flips, "winner_per_lambda": dict(zip(map(str, lam["lams"]), winners))}


def summary_markdown(doc: dict) -> str:
    spec = doc["spec"]
    L = [f"# E5 sweep — {doc['meta']['created']}", "",
         f"Base protocol: {doc['meta']['base_config'] or 'built-in default'}; table {doc['meta']['table']}; "
         f"lambda = {doc['meta']['lam']} outside the lambda phase; env-step budget {doc['meta']['total_env_steps']:,} per "
         f"row; devices {doc['meta']['devices']}.", ""]
    if doc.get("tune"):
        L += ["## Tuning (tuning split carved from train; never val)", "",
              f"{spec['trials']} trials x {spec['seeds']} seeds per method ({spec['search']} search, trial 0 = the "
              f"defaults), same env-step budget; chosen by {spec['select']} (mean over seeds).", "",
              "| method | default final / AUC | best trial final / AUC | chosen settings | rows | train s | env-steps/s |",
              "|---|---|---|---|---|---|---|"]
        for m, t in doc["tune"].items():
            d, c = t["trials"][0], t["trials"][t["chosen_trial"]]
            st = ", ".join(f"{k}={v:.3g}" for k, v in t["chosen"].items())
            L.append(f"| {m} | {d['final_mean']:.3f} / {d['auc_mean']:.3f} | {c['final_mean']:.3f} / {c['auc_mean']:.3f} | "
                     f"{st} | {t['rows']} | {t['train_s']:.1f} | {t['env_steps_per_s']:,.0f} |")
        L += ["", f"![scores vs hyperparameters]({FIG_SCORES})", ""]
    if doc.get("compare"):
        F = spec["final_seeds"]
        L += ["## Default vs tuned (val split, fresh seeds)", "",
              f"IQM over {F} fresh seeds with a 95% percentile-bootstrap CI.", "",
              "| method | setting | final norm. utility | AUC | std of final | SLO violation | quality |",
              "|---|---|---|---|---|---|---|"]
        for m, r in doc["compare"].items():
            for s, v in r.items():
                f, a = v["final"], v["auc"]
                L.append(f"| {m} | {s} | {f['iqm']:.3f} [{f['ci_low']:.3f}, {f['ci_high']:.3f}] | "
                         f"{a['iqm']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}] | {f['std']:.3f} | "
                         f"{v['slo']['mean']:.1%} | {v['quality']['mean']:.3f} |")
        L += ["", "Which answers change when the learned methods are tuned:", ""]
        for q, c in doc["answers"].items():
            sep = {k: c[k].get("separated_from_runner_up") for k in ("default", "tuned")}
            ci = "" if sep["tuned"] is None else (
                f" (tuned winner's 95% CI {'clear of' if sep['tuned'] else 'overlaps'} the runner-up's; default winner's "
                f"{'clear of' if sep['default'] else 'overlaps'} it)")
            L.append(f"- **{q}**: default winner {c['default']['winner']}, tuned winner {c['tuned']['winner']} — "
                     f"{'winner CHANGED' if c['winner_changed'] else 'winner unchanged'}{ci}; ranking "
                     f"{'changed' if c['ranking_changed'] else 'unchanged'} ({' > '.join(c['tuned']['ranking'])}).")
        L += ["- **cost**: unchanged by construction: tuned values are traced (same program, same FLOPs per update, "
              "same env steps); decision cost depends on the head, not on these values.", ""]
    if doc.get("lambda", {}).get("methods"):
        lam = doc["lambda"]
        L += ["## Robustness to lambda (val split, default settings)", "",
              "| method | " + " | ".join(f"lambda={x:g}" for x in lam["lams"]) + " |",
              "|---|" + "---|" * len(lam["lams"])]
        for m, r in lam["methods"].items():
            L.append(f"| {m} | " + " | ".join(f"{f['iqm']:.3f} (SLO {s['mean']:.0%})" for f, s in zip(r["final"], r["slo"])) + " |")
        L.append("| oracle SLO violation | " + " | ".join(f"{x:.0%}" for x in lam["oracle"]["slo"]) + " |")
        c = doc["lambda_conclusions"]
        L += ["", "Cells: IQM of final normalized utility (each lambda against its own oracle and random), mean SLO "
              "violation in parentheses.", "",
              "Winner per lambda: " + ", ".join(f"{k}: {v}" for k, v in c["winner_per_lambda"].items()) + ".", "",
              "Orderings that hold at every lambda: " + ("; ".join(c["holds_at_every_lambda"]) or "none") + ".", "",
              "Orderings that flip: " + ("; ".join(c["flips"]) or "none") + ".", "",
              f"![lambda robustness]({FIG_LAM})", ""]
    return "\n".join(L)


# ----------------------------------------------------------------------------- command
def sweep_from_args(args) -> int:
    spec = load_spec(args.spec)
    try:
        run, cfgs = load_config(spec.config or None, methods=None)
    except ConfigError as e:
        raise UsageError(f"sweep spec config {spec.config!r}: {e}") from None
    check_spec(spec, cfgs)
    table_path = Path(args.table) if args.table else default_table_path()
    table = load_table(table_path)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    fp = _fingerprint(spec, run, cfgs, table_provenance(table, table_path)["sha256_16"])
    path = out / FILE
    doc = None
    if path.is_file() and not args.overwrite:
        old = read_json(path)
        if old.get("meta", {}).get("fingerprint") != fp:
            raise UsageError(f"--out {out}: holds a sweep with another spec, config or table; use another --out or "
                             "--overwrite")
        doc = old
        print(f"e5jax sweep: continuing {path} (finished parts are skipped)")
    if doc is None:
        doc = {"schema": SCHEMA, "complete": False, "spec": dataclasses.asdict(spec),
               "meta": {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
                        "fingerprint": fp, "base_config": spec.config, "table": str(table_path), "lam": run.lam,
                        "total_env_steps": run.total_env_steps, "devices": [str(d) for d in jax.devices()],
                        "seed_keys": {"tune, lambda": f"fold_in(PRNGKey({run.base_seed}), i)",
                                      "compare": f"fold_in(PRNGKey({run.base_seed + 1}), i) (fresh)"}}}
    out.mkdir(parents=True, exist_ok=True)

    def save():
        write_json(path, doc)

    n_tune = len(spec.methods) if "tune" in spec.phases else 0
    n_rest = len(run.methods) * (("compare" in spec.phases) + ("lambda" in spec.phases))
    t0 = time.perf_counter()
    with tqdm(total=(n_tune + n_rest) * run.num_chunks, desc="e5 sweep", unit="chunk", file=sys.stderr,
              disable=args.no_progress) as pbar:
        try:
            if "tune" in spec.phases:
                phase_tune(spec, run, cfgs, table, doc, save, pbar)
            if "compare" in spec.phases:
                phase_compare(spec, run, cfgs, table, doc, save, pbar)
                doc["answers"] = compare_answers(doc)
            if "lambda" in spec.phases and spec.lams:
                phase_lambda(spec, run, cfgs, table, doc, save, pbar)
                doc["lambda_conclusions"] = lambda_conclusions(doc["lambda"])
        except KeyboardInterrupt:
            save()
            print(f"\ninterrupted: finished parts are in {path}; rerun the same command to continue", file=sys.stderr)
            return 130
    doc["meta"]["wall_s_this_process"] = time.perf_counter() - t0
    doc["complete"] = True
    save()
    from e5jax import figures as Fg

    if doc.get("tune"):
        Fg.sweep_scores(doc, out / FIG_SCORES)
    if doc.get("lambda", {}).get("methods"):
        Fg.lam_robustness(doc, out / FIG_LAM)
    text = summary_markdown(doc)
    atomic_write(out / SUMMARY, lambda f: f.write(text + "\n"))
    print(text)
    return 0
