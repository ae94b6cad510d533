"""The sweep spec (``[sweep]`` and ``[space.<method>]`` of the spec TOML): its fields and checks, the trials drawn
from each method's search space, and the range edges a chosen value may sit at (and how a range is widened)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import zlib
from pathlib import Path

import numpy as np

from e5jax.config import read_toml
from e5jax.errors import UsageError
from e5jax.methods import METHODS
from e5jax.methods.common import domain_text, in_domain

DISTS = ("log", "uniform")  # {log = [lo, hi]} log-uniform, {uniform = [lo, hi]}; a list = choices (grid axis)


def tunable() -> tuple:
    """The registered methods with traced hyperparameters (the sweep's default methods)."""
    return tuple(n for n, m in METHODS.items() if m.traced)


def default_space(method: str) -> dict:
    """The search space declared on the method's traced config fields (``common.traced``: range and scale)."""
    return {k: {"log" if meta["scale"] == "log" else "uniform": list(meta["search"])}
            for k, meta in METHODS[method].traced.items()}


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    config: str = ""  # base protocol TOML (run settings, method defaults); "" = the built-in default
    methods: tuple = dataclasses.field(default_factory=tunable)  # methods tuned (default: every one with traced hps)
    trials: int = 16  # per method, the same for every method (trial 0 = the defaults)
    search: str = "random"  # random | grid
    seeds: int = 5  # tuning seeds per trial (shared by the trials); also the lambda phase's seeds
    final_seeds: int = 10  # fresh seeds for the default-vs-tuned comparison on val
    widen_rounds: int = 1  # extra rounds of fresh trials, run by every method (random search; an equal budget):
    # before each, a range whose chosen value lies within edge_margin of an edge is widened
    edge_margin: float = 0.1  # of the range (log scale for log ranges)
    retune: bool = False  # lambda phase: tune at every lambda (rows x lambdas: a GPU job) instead of lambda = run.lam's
    tuning_fraction: float = 0.25  # of the train requests, per task
    tuning_seed: int = 0
    seed: int = 0  # draws of the random search
    lams: tuple = (0.5, 1.0, 2.0, 4.0, 8.0)  # lambda robustness ([] = skip)
    phases: tuple = ("tune", "compare", "lambda")
    space: dict = dataclasses.field(default_factory=dict)  # method -> {hyperparameter: distribution} (else declared)

    def space_of(self, method: str) -> dict:
        """The method's search space: its ``[space.<method>]``, else the ranges declared on its config fields."""
        return self.space.get(method) or default_space(method)


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
        if not METHODS[m].traced:
            _fail(f"[sweep] methods: {m!r} has no traced hyperparameters to tune (training-free)")
        if m in spec.space and not spec.space[m]:
            _fail(f"[space.{m}] is empty: give at least one hyperparameter range (or drop the section: the ranges "
                  "declared on the config then apply)")
    for m, space in spec.space.items():  # spaces of methods not tuned this time are checked too, then unused
        if m not in METHODS:
            _fail(f"[space.{m}]: unknown method {m!r} (choose from {', '.join(METHODS)})")
        if not isinstance(space, dict):
            _fail(f"[space.{m}] must be a table of hyperparameter = distribution")
        traced = METHODS[m].traced
        if not traced:
            _fail(f"[space.{m}]: {m!r} has no traced hyperparameters to tune (training-free)")
        fields = {f.name for f in dataclasses.fields(METHODS[m].Config)}
        for k, dist in space.items():
            where = f"[space.{m}] {k}"
            if k not in fields:
                _fail(f"{where}: unknown hyperparameter (traced: {', '.join(traced)})")
            if k not in traced:
                _fail(f"{where} is static (changing it recompiles the program): sweep it with one config per value "
                      f"(traced: {', '.join(traced)})")
            values = _dist_values(dist, where, spec.search)
            if not all(in_domain(traced[k], v) for v in values):
                _fail(f"{where}: values must be {domain_text(traced[k])}, got {values}")
    if spec.search == "grid":
        for m in spec.methods:  # (only the tuned ones)
            n = math.prod(len(v) for v in spec.space_of(m).values())
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
    space = spec.space_of(method) if space is None else space
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


def widen(dist, side: str, domain: dict):
    """The range extended by half its width (log width for log ranges) on ``side``, within the field's valid range
    ``domain`` (its ``common.traced`` metadata: an open low bound is approached by at most halving); None when
    that bound stops it or for a list of choices (the user's grid: not changed)."""
    if not isinstance(dist, dict):
        return None
    kind, (lo, hi) = next(iter(dist.items()))
    hard_lo, hard_hi, positive = domain["low"], domain["high"], domain["low_open"]
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
            hits.append({"select": sel, "hyperparameter": k, "value": v, "position": pos, "edge": side,
                         "range": space[k], "widened_to": widen(space[k], side, METHODS[method].traced[k])})
    return hits
