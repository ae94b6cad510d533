"""Training-free LUT: per (task_type, budget) the config with the best estimated reward.

Estimates come from the profiled cells seen so far: every update profiles ``env_steps_per_update`` random
(train request, config) cells (each an env step) and adds each cell's reward at every evaluation budget to a
running [task, budget, config] table. Unseen configs are never chosen; a task with nothing seen yet falls back
to the full config. So the LUT improves as cells accumulate and has a curve on the env-steps axis.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from e5jax import env as E
from e5jax import policy as P
from e5jax.methods import common as C


@dataclasses.dataclass(frozen=True)
class Config:
    env_steps_per_update: int = 256


@struct.dataclass
class CellStats:
    reward_sum: jax.Array  # [T, B, C] sum of rewards at each evaluation budget
    latency_sum: jax.Array  # [T, C] sum of normalized latency
    count: jax.Array  # [T, C]
    budgets: jax.Array  # [B] the evaluation budgets the table is keyed on
    step: jax.Array
    cfg: Config = struct.field(pytree_node=False, default=Config())


def init_cells(key, env: E.EnvParams, cfg) -> CellStats:
    T, B, n = env.num_tasks, env.budgets.shape[0], env.num_configs
    return CellStats(jnp.zeros((T, B, n)), jnp.zeros((T, n)), jnp.zeros((T, n)), env.budgets, jnp.zeros((), jnp.int32), cfg)


@struct.dataclass
class Cells:
    task: jax.Array  # [N] task type of each profiled request
    config: jax.Array  # [N]
    lat: jax.Array  # [N] normalized latency
    r_all: jax.Array  # [N, B] reward at every evaluation budget
    train_utility: jax.Array


def collect(state: CellStats, env: E.EnvParams, keys) -> Cells:
    """Profile N random (train request, config) cells (N env steps): each cell's reward at every evaluation
    budget and its normalized latency. Shared by lut and heuristic."""
    N = state.cfg.env_steps_per_update
    k_req, k_cfg, k_env = keys
    req, budget, _ = E.sample_requests(k_req, env, N)
    config = jax.random.randint(k_cfg, (N,), 0, env.num_configs)
    q, lat = E.lookup(env, req, config, k_env)
    return Cells(env.task[req], config, lat, E.reward_from(env, q[:, None], lat[:, None], env.budgets[None, :]),
                 E.reward_from(env, q, lat, budget).mean())


def learn(state: CellStats, env: E.EnvParams, batch: Cells, key):
    """Scatter-add the profiled cells into the [task, budget, config] table (nothing is learned)."""
    task, config = batch.task, batch.config
    state = state.replace(
        reward_sum=state.reward_sum.at[task, :, config].add(batch.r_all),
        latency_sum=state.latency_sum.at[task, config].add(batch.lat),
        count=state.count.at[task, config].add(1.0),
        step=state.step + 1,
    )
    metrics = {
        "train_utility": batch.train_utility,
        "env_steps": jnp.asarray(config.shape[0], jnp.float32),
        "cells_covered": jnp.mean(state.count > 0),
        **no_learning_metrics(),
    }
    return state, metrics


def no_learning_metrics() -> dict:
    """The learners' per-update metrics, as a training-free method reports them (nothing is learned)."""
    return {"loss": jnp.nan, "grad_norm": jnp.nan, "entropy": jnp.zeros(()), "kl_ref": jnp.nan,
            "num_failed_updates": jnp.zeros(())}


def init(key, env: E.EnvParams, cfg: Config = Config()):
    return init_cells(key, env, cfg)


def steps_per_update(cfg: Config, env: E.EnvParams) -> int:
    return cfg.env_steps_per_update


def policy(state: CellStats) -> P.LookupPolicy:
    seen = state.count > 0  # [T, C]
    est = jnp.where(seen[:, None, :], state.reward_sum / jnp.maximum(state.count, 1)[:, None, :], -jnp.inf)
    best = jnp.argmax(est, -1)  # [T, B]
    return P.LookupPolicy(jnp.where(seen.any(-1)[:, None], best, est.shape[-1] - 1))


CUMULATIVE = ("num_failed_updates", "cells_covered")
METHOD = C.Method("lut", Config, init, collect, learn, policy, steps_per_update, keys=3, cumulative=CUMULATIVE,
                  decision_baseline=True, color=0)
