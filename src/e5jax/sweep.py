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

import dataclasses
import hashlib
import itertools
import json
import math
import sys
import time
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from e5jax import analysis as A
from e5jax import decide as D
from e5jax import engine
from e5jax import env as E
from e5jax.config import ConfigError, RunConfig, load_config, read_toml
from e5jax.errors import UsageError
from e5jax.io import atomic_write, read_json, write_json
from e5jax.loop import compile_method, compile_pool, env_steps_axis, init_method, train_chunks
from e5jax.methods import METHODS
from e5jax.methods import common as C
from e5jax.methods.common import LearnerConfig
from e5jax.run import table_provenance
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
    widen_rounds: int = 1  # times a range whose chosen value lies within edge_margin of an edge is widened and re-tuned
    edge_margin: float = 0.1  # of the range (log scale for log ranges)
    retune: bool = False  # lambda phase: tune at every lambda (rows x lambdas: a GPU job) instead of lambda = run.lam's
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
    if "select" in vals:
        _fail("[sweep] select is gone: the sweep chooses by final utility (the frontier question) and by AUC (the "
              "sample-efficiency question) from the same trials; remove the key")
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
    if not isinstance(spec.widen_rounds, int) or isinstance(spec.widen_rounds, bool) or spec.widen_rounds < 0:
        _fail(f"[sweep] widen_rounds must be an integer >= 0, got {spec.widen_rounds!r}")
    if not (isinstance(spec.edge_margin, float) and 0 <= spec.edge_margin < 0.5):
        _fail(f"[sweep] edge_margin must be a number in [0, 0.5), got {spec.edge_margin!r}")
    if not isinstance(spec.retune, bool):
        _fail(f"[sweep] retune must be true or false, got {spec.retune!r}")
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


def draw_trials(spec: SweepSpec, method: str, cfg, space: dict | None = None, round_: int = 0) -> list[dict]:
    """The method's trials: {hyperparameter: value}. Random search: in round 0 trial 0 = the base config's values,
    the others drawn independently (log-uniform, uniform or a choice), seeded by (spec.seed, the method's *name*,
    the round); a widening round (``round_`` > 0, ``space`` widened) draws ``trials`` new ones. Grid: every point."""
    space = spec.space[method] if space is None else space
    if spec.search == "grid":
        keys = list(space)
        return [dict(zip(keys, map(float, point))) for point in itertools.product(*(space[k] for k in keys))]
    rng = np.random.default_rng([spec.seed, zlib.crc32(method.encode()), round_])
    trials = [{k: float(getattr(cfg, k)) for k in space}] if round_ == 0 else []
    for _ in range(spec.trials - len(trials)):
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
    """Train every row of a prepared program; per-row eval arrays on the host, padding dropped (``actions``: the
    greedy val configs [n, E, B, Rv] at every eval point, for the request-level bootstrap)."""
    tr = train_chunks(prepared, run, env, pbar, label=label)
    ev = {k: np.stack([np.asarray(e[k]) for e in tr.evals], 1)[:n] for k in ("utility", "slo_violation_rate", "quality_mean")}
    actions = np.stack([np.asarray(e["actions"]) for e in tr.evals], 1)[:n].astype(np.int16)
    return {"steps": env_steps_axis(tr.step_inc)[:n], **ev, "actions": actions, "compile_s": prepared.compile_s,
            "train_s": float(sum(tr.chunk_s)), "rows": n, "devices": len(jax.devices())}


def run_phase(jobs: dict, run: RunConfig, env: E.EnvParams, pbar, on_done) -> None:
    """``jobs``: {method: (cfg, keys, hp, label)}. Every method is initialised in this thread, then its program
    compiled in a thread pool (compiles only: ``loop.compile_pool``), and trained here, method by method, as soon as
    its program is ready; ``on_done(method, result)`` after each."""
    def init(m):
        cfg, keys, hp, _ = jobs[m]
        return init_rows(m, cfg, run, env, keys, hp)

    with compile_pool(list(jobs), init, env, init_first=True) as compiled:
        for m, (_, keys, _, label) in jobs.items():
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
def _fingerprint(spec: SweepSpec, run: RunConfig, cfgs: dict, table_sha: str) -> str:
    blob = json.dumps({"spec": dataclasses.asdict(spec), "run": dataclasses.asdict(run),
                       "cfgs": {k: dataclasses.asdict(v) for k, v in cfgs.items()}, "table": table_sha},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


HARD = {"label_smoothing": (0.0, 0.49)}  # hard bounds beyond POSITIVE (> 0) and the default (>= 0)


def edge_position(dist, v: float) -> float | None:
    """Where ``v`` lies in a distribution, in [0, 1] (log scale for log ranges; a list of choices: its index over the
    sorted choices); None for a list of one."""
    if not isinstance(dist, dict):
        vals = sorted(float(x) for x in dist)
        return None if len(vals) < 2 else vals.index(float(v)) / (len(vals) - 1)
    kind, (lo, hi) = next(iter(dist.items()))
    if kind == "log":  # a value <= 0 (e.g. GRPO's default beta = 0, outside a log range) sits below its low edge
        return 0.0 if v <= 0 else (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (v - lo) / (hi - lo)


def widen(dist, side: str, name: str, positive: bool):
    """The range extended by half its width (log width for log ranges) on ``side``; None when a hard bound stops it
    or for a list of choices (the user's grid: not changed)."""
    if not isinstance(dist, dict):
        return None
    kind, (lo, hi) = next(iter(dist.items()))
    hard_lo, hard_hi = HARD.get(name, (0.0, math.inf))
    if kind == "log":
        f = math.sqrt(hi / lo)
        new = [lo / f, hi] if side == "low" else [lo, min(hi * f, hard_hi)]
    else:
        w = (hi - lo) / 2
        nlo = lo - w
        if positive and nlo < lo / 2:  # a positive parameter: at most halved, never to 0
            nlo = lo / 2
        elif nlo < hard_lo:
            nlo = hard_lo
        new = [nlo, hi] if side == "low" else [lo, min(hi + w, hard_hi)]
    return None if new == [lo, hi] else {kind: new}


def edge_report(spec: SweepSpec, method: str, space: dict, chosen: dict) -> list[dict]:
    """Every chosen value (per selection) within ``edge_margin`` of a range edge, with the widened range (None: at a
    hard bound or a list of choices)."""
    hits = []
    for sel, settings in chosen.items():
        for k, v in settings.items():
            pos = edge_position(space[k], v)
            if pos is None or spec.edge_margin < pos < 1 - spec.edge_margin:
                continue
            side = "low" if pos <= spec.edge_margin else "high"
            positive = k in POSITIVE or (method == "dpo" and k == "beta")
            hits.append({"select": sel, "hyperparameter": k, "value": v, "position": pos, "edge": side,
                         "range": space[k], "widened_to": widen(space[k], side, k, positive)})
    return hits


def choose(trials: list[dict]) -> tuple[dict, dict]:
    """The trial with the best mean final normalized utility and the one with the best mean AUC (tuning split)."""
    idx = {"final": int(np.nanargmax([t["final_mean"] for t in trials])),
           "auc": int(np.nanargmax([t["auc_mean"] for t in trials]))}
    return idx, {k: trials[i]["settings"] for k, i in idx.items()}


def phase_tune(spec, run, cfgs, table: ProfileTable, doc, save, pbar, lam: float | None = None, key: str = "tune"):
    """Tune every method on the tuning split at ``lam`` (default: the run's), choosing by final utility and by AUC
    from the same trials; a range whose chosen value sits within ``edge_margin`` of an edge is widened and the
    method re-tuned with fresh trials (up to ``widen_rounds`` times), the choice made over every round's trials."""
    tune_table = table.tuning_split(spec.tuning_fraction, seed=spec.tuning_seed)
    lam = run.lam if lam is None else float(lam)
    env = E.env_from_run(run, tune_table).replace(lam=jnp.float32(lam))
    refs = refs_at(env, lam)
    lo, hi = float(run.env_steps_per_update), float(run.total_env_steps)
    out = doc.setdefault(key, {})
    S = spec.seeds
    for m in spec.methods:
        out.setdefault(m, {"lam": lam, "spaces": [spec.space[m]], "trials": [], "rounds": 0, "done": False,
                           "default": {k: float(getattr(cfgs[m], k)) for k in spec.space[m]}, "train_s": 0.0,
                           "compile_s": 0.0})
    while True:
        todo = {m: draw_trials(spec, m, cfgs[m], out[m]["spaces"][-1], out[m]["rounds"])
                for m in spec.methods if not out[m]["done"]}
        if not todo:
            return
        jobs = {}
        for m, t in todo.items():
            cfg, hp = sweep_rows(cfgs[m], t, S)
            jobs[m] = (cfg, row_keys(run.base_seed, S, len(t)), hp, f"{key} {m} round {out[m]['rounds']} {len(t)}x{S}")
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
            if wid != o["spaces"][-1] and o["rounds"] <= spec.widen_rounds:
                o["spaces"].append(wid)  # widen and re-tune with fresh trials
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
        c, hp = sweep_rows(cfg, [v] if v else [], rows)
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
        cfg, hp = sweep_rows(cfgs[m], [v for v in settings[m].values() if v], F)
        jobs[m] = (cfg, keys, hp, f"compare {m} {len(settings[m])}x{F}")

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
        cfg, hp = sweep_rows(cfgs[m], tuned if tuned[0] else [], S)
        hp["lam"] = np.repeat(lams, S)
        jobs[m] = (cfg, row_keys(run.base_seed, S, L), hp, f"lambda {m} {L}x{S}")

    def done(m, res):
        sc = row_scores(res, [r for r in refs for _ in range(S)], lo, hi)
        out["methods"][m] = {k: [_summ(v[i * S:(i + 1) * S]) for i in range(L)] for k, v in sc.items()}
        out["methods"][m].update(settings[m], per_request=save_actions(out_dir, f"lambda_{m}", res))
        save()

    run_phase(jobs, run, env, pbar, done)


# ----------------------------------------------------------------------------- conclusions
QUESTIONS = {  # question -> (metric, statistic, higher is better, setting of the learned methods)
    "final_utility": ("final", "mean", True, "tuned_final"),
    "auc": ("auc", "mean", True, "tuned_auc"),
    "slo_violation": ("slo", "mean", False, "tuned_final"),
    "stability": ("final", "std", False, "tuned_final"),
}


def _have_per_request(out_dir: Path, results) -> bool:
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
    spec = doc["spec"]
    L = [f"# E5 sweep — {doc['meta']['created']}", "",
         f"Base protocol: {doc['meta']['base_config'] or 'built-in default'}; table {doc['meta']['table']}; "
         f"lambda = {doc['meta']['lam']} outside the lambda phase; env-step budget {doc['meta']['total_env_steps']:,} per "
         f"row; devices {doc['meta']['devices']}.", ""]
    if doc.get("tune"):
        L += ["## Tuning (tuning split carved from train; never val)", "",
              f"{spec['trials']} trials x {spec['seeds']} seeds per method and round ({spec['search']} search, trial 0 = "
              f"the defaults), same env-step budget. Two choices from the same trials: by final normalized utility "
              f"(answers the frontier question) and by AUC (answers the sample-efficiency question), each the best "
              f"mean over seeds. A chosen value within {spec['edge_margin']:.0%} of a range edge (log scale for log "
              f"ranges) widens that range and re-tunes the method with fresh trials (up to {spec['widen_rounds']} "
              "round(s)); the choice is made over every round's trials.", "",
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
            if t.get("rounds", 0) > 1:
                L.append(f"- **{m}**: ranges widened and re-tuned ({t['rounds'] - 1} extra round(s)): "
                         + "; ".join(f"{k}: {t['spaces'][0][k]} -> {t['spaces'][-1][k]}" for k in t["spaces"][-1]
                                     if t["spaces"][-1][k] != t["spaces"][0][k]) + ".")
            for h in t.get("edges", []):
                L.append(f"- **{m}** (chosen by {h['select']}): {h['hyperparameter']} = {h['value']:.3g} lies at "
                         f"{h['position']:.0%} of its range {h['range']} ({h['edge']} edge)"
                         + (" — at a hard bound or a list of choices: not widened" if h["widened_to"] is None else
                            " — still at the edge after the last widening round: the optimum may lie outside"))
        L += ["", f"![scores vs hyperparameters]({FIG_SCORES})", ""]
    if doc.get("compare"):
        F = spec["final_seeds"]
        L += ["## Default vs tuned (val split, fresh seeds)", "",
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
    if doc.get("lambda", {}).get("methods"):
        lam = doc["lambda"]
        c = doc.get("lambda_conclusions", {})
        pl = c.get("per_lambda", {})
        L += ["## Robustness to lambda (val split)", "",
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
                        "heads": sorted({c.head_kind for c in cfgs.values() if isinstance(c, LearnerConfig)}),
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
            rng = (float(run.env_steps_per_update), float(run.total_env_steps))  # the AUC's env-step range
            if "compare" in spec.phases:
                phase_compare(spec, run, cfgs, table, doc, save, pbar, out)
                if _have_per_request(out, doc["compare"].values()) or "answers" not in doc:
                    doc["answers"] = compare_answers(doc, out, run.lam, rng)
                save()
            if "lambda" in spec.phases and spec.lams:
                phase_lambda(spec, run, cfgs, table, doc, save, pbar, out)
                if _have_per_request(out, doc["lambda"]["methods"].values()) or "lambda_conclusions" not in doc:
                    doc["lambda_conclusions"] = lambda_conclusions(doc, out, rng)
                save()
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
    text = summary_markdown(doc, out)
    atomic_write(out / SUMMARY, lambda f: f.write(text + "\n"))
    print(text)
    return 0
