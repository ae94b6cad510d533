"""Run configuration: TOML -> (RunConfig, per-method frozen configs). Built-in defaults = experiments/e5_default.toml."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from e5jax.env import EVAL_BUDGETS
from e5jax.methods import METHODS
from e5jax.methods.common import LearnerConfig
from e5jax.policy import HEADS


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
    total_env_steps: int = 204800
    env_steps_per_update: int = 256
    eval_every: int = 40
    thresholds: str = ""  # sample-efficiency thresholds (e5jax.report.parse_thresholds); "" = the defaults

    @property
    def num_updates(self) -> int:
        return self.num_chunks * self.eval_every

    @property
    def num_chunks(self) -> int:
        return max(1, -(-(self.total_env_steps // self.env_steps_per_update) // self.eval_every))


def _build(cls, values: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    vals = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**vals)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_config(path: str | Path | None = None, seeds: int | None = None, methods: str | None = None,
                thresholds: str | None = None):
    raw = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--config {p}: no such file")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--config {p}: not valid TOML ({e})") from None
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
        raise ConfigError(f"seeds must be >= 1, got {run.seeds}")
    if run.env_steps_per_update < 8 or run.eval_every < 1 or run.total_env_steps < run.env_steps_per_update:
        raise ConfigError("need env_steps_per_update >= 8, eval_every >= 1 and total_env_steps >= env_steps_per_update")
    if not run.budgets or any(not (0 < b <= 1.5) for b in run.budgets):
        raise ConfigError(f"budgets must be fractions in (0, 1.5], got {list(run.budgets)}")
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
        if isinstance(cfg, LearnerConfig) and cfg.head not in HEADS:
            raise ConfigError(f"[{name}]: head must be one of {', '.join(HEADS)}, got {cfg.head!r}")
        if isinstance(cfg, LearnerConfig) and cfg.env_steps_per_update % cfg.minibatches:
            raise ConfigError(f"[{name}]: env_steps_per_update must be divisible by minibatches")
        cfgs[name] = cfg
    return run, cfgs
