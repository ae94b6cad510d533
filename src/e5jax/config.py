"""Run configuration: TOML -> (RunConfig, per-method frozen configs). Built-in defaults = experiments/e5_default.toml."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

from e5jax.env import EVAL_BUDGETS, ORACLE_TOL
from e5jax.methods import METHODS
from e5jax.methods.common import LearnerConfig, check_config


class ConfigError(ValueError):
    """A bad run configuration (one line, exit 2)."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seeds: int = 5
    base_seed: int = 0
    methods: tuple = tuple(METHODS)
    lam: float = 2.0
    budgets: tuple = EVAL_BUDGETS
    latency_noise: bool = False
    oracle_tol: float = ORACLE_TOL  # configs within this (absolute, reward units) of the best reward are all optimal
    total_env_steps: int = 204800
    env_steps_per_update: int = 256
    eval_every: int = 40
    thresholds: str = ""  # sample-efficiency thresholds (e5jax.report.parse_thresholds); "" = the defaults
    checkpoint_every_chunks: int = 0  # orbax checkpoint every N chunks (0: by time only)
    checkpoint_every_s: float = 60.0  # ... or when this many seconds passed since the last one (0: never by time)

    @property
    def num_updates(self) -> int:
        return self.num_chunks * self.eval_every

    @property
    def num_chunks(self) -> int:
        return max(1, -(-(self.total_env_steps // self.env_steps_per_update) // self.eval_every))


def _check_schedule(run: RunConfig) -> None:
    """Refuse a schedule whose whole chunks of ``eval_every`` updates would train past ``total_env_steps``."""
    updates = run.total_env_steps // run.env_steps_per_update
    if updates % run.eval_every == 0:
        return
    over = run.num_updates
    divisors = [d for d in range(1, updates + 1) if updates % d == 0]
    near = sorted(divisors, key=lambda d: (abs(d - run.eval_every), d))[:2]
    raise ConfigError(
        f"[run] eval_every ({run.eval_every}) does not divide the {updates} updates of total_env_steps "
        f"({run.total_env_steps}) / env_steps_per_update ({run.env_steps_per_update}): whole chunks would train "
        f"{over} updates ({over * run.env_steps_per_update:,} env steps, over the budget); use an eval_every that "
        f"divides {updates} (e.g. {' or '.join(map(str, sorted(near)))}) or total_env_steps = "
        f"{over * run.env_steps_per_update}")


def _build(cls, values: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    vals = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for k, v in vals.items():
        _check_type(v, types[k], f"{where} {k}")
    try:
        return cls(**vals)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def _check_type(v, annotation: str, where: str) -> None:
    """A TOML value against its dataclass field's annotation: bool, int, float, str, tuple (of numbers)."""
    ann = annotation.split("|")[0].strip().split("[")[0]
    ok = {"bool": lambda x: isinstance(x, bool),
          "int": lambda x: isinstance(x, int) and not isinstance(x, bool),
          "float": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
          "str": lambda x: isinstance(x, str),
          "tuple": lambda x: isinstance(x, tuple)}.get(ann)
    if ok is not None and not ok(v):
        want = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                "tuple": "a list"}[ann]
        raise ConfigError(f"{where} must be {want}, got {v!r}")


def read_toml(path: str | Path, error=ConfigError) -> dict:
    """A TOML file as a dict; a missing or malformed file raises ``error`` with one line naming it."""
    p = Path(path)
    if not p.is_file():
        raise error(f"--config {p}: no such file")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise error(f"--config {p}: not valid TOML ({e})") from None


def load_config(path: str | Path | None = None, seeds: int | None = None, methods: str | None = None,
                thresholds: str | None = None):
    """(RunConfig, {method: config}) from a TOML file (None: the built-in defaults); ``seeds``, ``methods`` (comma-
    separated) and ``thresholds`` override its ``[run]`` values."""
    return config_from_dict({} if path is None else read_toml(path), seeds, methods, thresholds)


def config_from_dict(raw: dict, seeds: int | None = None, methods: str | None = None, thresholds: str | None = None):
    """As ``load_config``, from the TOML file's dict (``{"run": {...}, "learner": {...}, "<method>": {...}}``; lists
    for tuples): a run's recorded ``meta.run`` with its ``meta.method_configs`` rebuilds that run's configs."""
    unknown = sorted(set(raw) - {"run", "learner", *METHODS})
    if unknown:
        raise ConfigError(f"config: unknown section [{unknown[0]}]")
    run_vals = dict(raw.get("run", {}))
    if seeds is not None:
        run_vals["seeds"] = seeds
    if thresholds is not None:
        run_vals["thresholds"] = thresholds
    if methods is not None:
        run_vals["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    run = _build(RunConfig, run_vals, "[run]")
    bad = [m for m in run.methods if m not in METHODS]
    if bad or not run.methods:
        raise ConfigError(f"unknown method {bad[0] if bad else '(none given)'!r} (choose from {', '.join(METHODS)})")
    if run.seeds < 1:
        raise ConfigError(f"[run] seeds must be >= 1, got {run.seeds}")
    if run.checkpoint_every_chunks < 0 or run.checkpoint_every_s < 0:
        raise ConfigError("[run] checkpoint_every_chunks and checkpoint_every_s must be >= 0 (0 = off)")
    if run.eval_every < 1:
        raise ConfigError(f"[run] eval_every must be >= 1 (updates between evaluations), got {run.eval_every}")
    if run.env_steps_per_update < 8:
        raise ConfigError(f"[run] env_steps_per_update must be >= 8, got {run.env_steps_per_update}")
    if run.total_env_steps < run.env_steps_per_update or run.total_env_steps % run.env_steps_per_update:
        raise ConfigError(f"[run] total_env_steps ({run.total_env_steps}) must be a positive multiple of "
                          f"env_steps_per_update ({run.env_steps_per_update})")
    _check_schedule(run)
    if not (math.isfinite(run.lam) and run.lam >= 0):
        raise ConfigError(f"[run] lam must be a finite number >= 0 (the overshoot penalty), got {run.lam!r}")
    if not (math.isfinite(run.oracle_tol) and run.oracle_tol >= 0):
        raise ConfigError(f"[run] oracle_tol must be a finite number >= 0 (reward units within which configs tie "
                          f"for the oracle), got {run.oracle_tol!r}")
    if not run.budgets:
        raise ConfigError("[run] budgets is empty: give at least one budget fraction in (0, 1]")
    if any(not isinstance(b, (int, float)) or isinstance(b, bool) or not (0 < b <= 1) for b in run.budgets):
        raise ConfigError(f"[run] budgets must be fractions in (0, 1] of the full config's latency, got {list(run.budgets)}")
    if len(set(run.budgets)) != len(run.budgets):
        raise ConfigError(f"[run] budgets must be distinct, got {list(run.budgets)}")
    from e5jax.report import ReportError, parse_thresholds

    if not isinstance(run.thresholds, str):
        raise ConfigError(f"[run] thresholds must be a string like \"slo=0.05,gaps=0.5/0.8\", got {run.thresholds!r}")
    try:
        parse_thresholds(run.thresholds)
    except ReportError as e:
        raise ConfigError(str(e)) from None
    learner = dict(raw.get("learner", {}))
    _build(LearnerConfig, learner, "[learner]")  # check keys early
    cfgs = {}
    for name in run.methods:
        cls = METHODS[name].Config
        vals = {"env_steps_per_update": run.env_steps_per_update}
        if issubclass(cls, LearnerConfig):
            vals.update(learner)
        vals.update(raw.get(name, {}))
        cfg = _build(cls, vals, f"[{name}]")
        problem = check_config(METHODS[name], cfg)
        if problem:
            raise ConfigError(f"[{name}]: {problem}")
        cfgs[name] = cfg
    return run, cfgs
