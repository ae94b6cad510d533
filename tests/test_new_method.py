"""An eighth method, defined in this file and registered with one line, runs through the whole lab with no other file
edited: `e5jax run` (quick) with the overhead analysis, the report with its figures, and a one-trial sweep of its
traced hyperparameter (the default search range declared on its config field)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import pytest
from flax import struct

from conftest import make_known_oracle_table
from e5jax import env as E
from e5jax import policy as P
from e5jax.cli import main as cli_main
from e5jax.methods import METHODS, register
from e5jax.methods import common as C
from e5jax.report.load import FIG_DIR
from e5jax.report.registry import FIGURE_LIST


# ----------------------------------------------------------------------------- the method: an epsilon-greedy bandit
@dataclasses.dataclass(frozen=True)
class Config:
    env_steps_per_update: int = 256
    epsilon: float = C.traced(0.3, high=1.0, search=(0.05, 0.5), scale="linear")  # exploration rate


@struct.dataclass
class Table:
    reward_sum: jax.Array  # [T, B, C]
    count: jax.Array  # [T, C]
    step: jax.Array
    hp: Any  # {"epsilon": f32}
    cfg: Config = struct.field(pytree_node=False, default=Config())


def init(key, env, cfg: Config = Config()):
    T, B, n = env.num_tasks, env.budgets.shape[0], env.num_configs
    return Table(jnp.zeros((T, B, n)), jnp.zeros((T, n)), jnp.zeros((), jnp.int32), C.traced_hp(cfg), cfg)


def policy(state: Table) -> P.LookupPolicy:
    est = jnp.where(state.count[:, None, :] > 0, state.reward_sum / jnp.maximum(state.count, 1)[:, None, :], -jnp.inf)
    return P.LookupPolicy(jnp.where((state.count > 0).any(-1)[:, None], jnp.argmax(est, -1), est.shape[-1] - 1))


def collect(state: Table, env, keys):
    """N requests at an evaluation budget each: the table's best config, or a uniform one with probability epsilon."""
    k_req, k_b, k_explore, k_cfg = keys
    N = state.cfg.env_steps_per_update
    req, _, _ = E.sample_requests(k_req, env, N)
    bidx = jax.random.randint(k_b, (N,), 0, env.budgets.shape[0])
    greedy = policy(state).greedy(env, req, env.budgets[bidx], bidx)
    explore = jax.random.uniform(k_explore, (N,)) < state.hp["epsilon"]
    config = jnp.where(explore, jax.random.randint(k_cfg, (N,), 0, env.num_configs), greedy)
    q, lat = E.lookup(env, req, config)
    return env.task[req], config, E.reward_from(env, q[:, None], lat[:, None], env.budgets[None, :]), \
        E.reward_from(env, q, lat, env.budgets[bidx]).mean()


def learn(state: Table, env, batch, key):
    task, config, r_all, train_utility = batch
    state = state.replace(reward_sum=state.reward_sum.at[task, :, config].add(r_all),
                          count=state.count.at[task, config].add(1.0), step=state.step + 1)
    return state, {"train_utility": train_utility, "env_steps": jnp.asarray(config.shape[0], jnp.float32),
                   "loss": jnp.nan, "grad_norm": jnp.nan, "entropy": jnp.zeros(()), "kl_ref": jnp.nan,
                   "num_failed_updates": jnp.zeros(())}


METHOD = C.Method("eps_greedy", Config, init, collect, learn, policy, lambda cfg, env: cfg.env_steps_per_update,
                  keys=4)


# ----------------------------------------------------------------------------- through the lab
@pytest.fixture(scope="module")
def registered():
    register(METHOD)  # the one line a new method needs
    yield METHOD
    METHODS.pop(METHOD.name)


RUN = """[run]
seeds = 2
methods = ["lut", "eps_greedy"]
total_env_steps = 1024
env_steps_per_update = 64
eval_every = 8
"""


def test_an_eighth_method_runs_through_run_overhead_report_and_sweep(tmp_path, registered, monkeypatch):
    monkeypatch.setenv("E5JAX_OVERHEAD_DECISIONS", "50")
    monkeypatch.setenv("E5JAX_OVERHEAD_WARMUP", "10")
    monkeypatch.setenv("E5JAX_OVERHEAD_JAX_DECISIONS", "20")
    monkeypatch.setenv("E5JAX_OVERHEAD_REPEATS", "2")
    make_known_oracle_table(R=60).save(tmp_path / "t.npz")
    (tmp_path / "run.toml").write_text(RUN + "[eps_greedy]\nepsilon = 0.2\n")
    out = tmp_path / "run"
    assert cli_main(["run", "--config", str(tmp_path / "run.toml"), "--table", str(tmp_path / "t.npz"), "--out",
                     str(out), "--no-progress"]) == 0
    curves = json.loads((out / "e5_training_curves.json").read_text())
    m = curves["methods"]["eps_greedy"]
    assert m["env_steps"][-1] == 1024 and len(m["curves"]["val_utility_norm"]["per_seed"]) == 2  # its curve, per seed
    assert curves["meta"]["method_configs"]["eps_greedy"]["epsilon"] == 0.2  # its section of the TOML reached the config
    over = json.loads((out / "e5_overhead_analysis.json").read_text())["methods"]["eps_greedy"]
    assert over["decision_ms"]["p50"] > 0 and over["eager_agreement"]["fraction"] == 1.0  # exported and timed
    assert "collect" in over["training"]["components"]
    # each method's timing programs: trace / lower / compile seconds, or the method whose compile it shares
    tp = {n: json.loads((out / "e5_overhead_analysis.json").read_text())["methods"][n]["timing_programs_compile_s"]
          for n in ("lut", "eps_greedy")}
    assert "collect" in tp["lut"]["programs"]  # lut times its collect phase; learn is the remainder
    assert all(v[k] >= 0 for v in tp["lut"]["programs"].values() for k in ("trace_s", "lower_s", "compile_s"))
    assert tp["eps_greedy"] == {"shared_with": "lut"} or "collect" in tp["eps_greedy"]["programs"]
    ph = curves["meta"]["phases_s"]  # where the run's wall time went
    assert set(ph) == {"init_and_compile_s", "training_s", "overhead_analysis_s"} and min(ph.values()) > 0
    assert sum(ph.values()) == pytest.approx(curves["meta"]["total_wall_time_s"])
    summary = (out / "summary.md").read_text()
    assert "eps_greedy" in summary
    for fig in FIGURE_LIST:  # every figure of the run drawn, the new method among them
        assert (out / FIG_DIR / fig.file).stat().st_size > 0, fig.file
    assert "eps_greedy" in json.loads((out / "e5_decisions.json").read_text())["questions"]["final_utility"]["methods"]

    (tmp_path / "sweep.toml").write_text(f"""[sweep]
config = "{tmp_path / 'run.toml'}"
methods = ["eps_greedy"]
trials = 1
seeds = 2
final_seeds = 2
widen_rounds = 0
phases = ["tune"]
""")  # no [space.eps_greedy]: the search range declared on the field
    sw = tmp_path / "sweep"
    assert cli_main(["sweep", "--config", str(tmp_path / "sweep.toml"), "--table", str(tmp_path / "t.npz"), "--out",
                     str(sw), "--no-progress"]) == 0
    doc = json.loads((sw / "sweep.json").read_text())
    assert doc["tune"]["eps_greedy"]["spaces"][0]["epsilon"] == {"uniform": [0.05, 0.5]}
    assert doc["tune"]["eps_greedy"]["trials"][0]["settings"] == {"epsilon": 0.2}  # trial 0 = the base config
