"""Training-free nearest-neighbour LUT: the best config among the k nearest profiled train requests.

The seed's "simple lookup or nearest neighbor". Per update the method profiles ``env_steps_per_update // C`` new
train requests exhaustively (every config: C env steps each, the same labelling order and cost as supervised),
storing each profiled cell's quality and normalized latency. To decide a (request, budget), it takes the k
profiled requests nearest to the request in standardized feature space (the env's standardized features plus the
task one-hot: a different task adds 2 to the squared distance), averages their rewards at that budget for every
config, and picks the best config. Nothing is learned; with nothing profiled yet it picks the full config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from e5jax import env as E
from e5jax import policy as P
from e5jax.methods import common as C
from e5jax.methods.lut import no_learning_metrics


@dataclasses.dataclass(frozen=True)
class Config:
    env_steps_per_update: int = 256
    k: int = 10  # neighbours; chosen on the tuning split (experiments/knn_k_tuning.py, docs/methods.md)


@struct.dataclass
class Profiled:
    order: jax.Array  # [Rt] train request indices in the order they get profiled
    n_profiled: jax.Array  # scalar int32
    quality: jax.Array  # [Rt, C] profiled quality of order[i] (rows >= n_profiled unused)
    latency: jax.Array  # [Rt, C] profiled normalized latency
    step: jax.Array
    cfg: Config = struct.field(pytree_node=False, default=Config())
    hp: Any = None  # traced settings the engine may give this state (e.g. {"lam": ...}); none of its own


def requests_per_update(cfg: Config, env: E.EnvParams) -> int:
    return max(1, cfg.env_steps_per_update // env.num_configs)


def steps_per_update(cfg: Config, env: E.EnvParams) -> int:
    return requests_per_update(cfg, env) * env.num_configs


def init(key, env: E.EnvParams, cfg: Config = Config()):
    if cfg.k < 1:
        raise ValueError(f"knn_lut: k must be >= 1, got {cfg.k}")
    order = jax.random.permutation(jax.random.fold_in(key, 1), env.train_idx)  # supervised's labelling order
    Rt, C = order.shape[0], env.num_configs
    return Profiled(order, jnp.zeros((), jnp.int32), jnp.zeros((Rt, C)), jnp.zeros((Rt, C)), jnp.zeros((), jnp.int32), cfg)


def profile_next(state: Profiled, env: E.EnvParams, key) -> dict:
    """Profile every config of the next requests in the order (C env steps each): the method's data collection.
    ``rows`` is out of range (dropped by ``store``) for positions past the end of the train split."""
    m = requests_per_update(state.cfg, env)
    Rt, C = state.quality.shape
    pos = state.n_profiled + jnp.arange(m)
    valid = pos < Rt
    req = state.order[jnp.minimum(pos, Rt - 1)]
    q, lat = E.lookup(env, req[:, None], jnp.arange(C)[None, :], key)  # [m, C]
    return {"req": req, "valid": valid, "rows": jnp.where(valid, pos, Rt), "q": q, "lat": lat,
            "n_after": jnp.minimum(state.n_profiled + m, Rt)}


def store(state: Profiled, batch: dict) -> Profiled:
    """Write the profiled rows into the store (nothing is learned)."""
    rows = batch["rows"]
    return state.replace(quality=state.quality.at[rows].set(batch["q"], mode="drop"),
                         latency=state.latency.at[rows].set(batch["lat"], mode="drop"), n_profiled=batch["n_after"],
                         step=state.step + 1)


def collect(state: Profiled, env: E.EnvParams, key) -> dict:
    """Profile the next requests (``profile_next``) and score the decision the controller would have made on
    them before profiling them (a training budget each): the method's train utility."""
    k_env, k_b = jax.random.split(key)
    batch = profile_next(state, env, k_env)
    req, valid, q, lat = batch["req"], batch["valid"], batch["q"], batch["lat"]
    budget = env.train_budgets[jax.random.randint(k_b, req.shape, 0, env.train_budgets.shape[0])]
    choice = policy(state).greedy(env, req, budget, None)
    r = E.reward_from(env, jnp.take_along_axis(q, choice[:, None], 1)[:, 0],
                      jnp.take_along_axis(lat, choice[:, None], 1)[:, 0], budget)
    w = valid.astype(jnp.float32)
    # NaN once every train request is profiled (nothing new is decided on)
    train_utility = jnp.where(w.sum() > 0, jnp.sum(r * w) / jnp.maximum(w.sum(), 1.0), jnp.nan)
    return {**batch, "train_utility": train_utility}


def learn(state: Profiled, env: E.EnvParams, batch: dict, key):
    """Store the profiled rows (nothing is learned)."""
    new = store(state, batch)
    metrics = {
        "train_utility": batch["train_utility"],
        "env_steps": ((batch["n_after"] - state.n_profiled) * state.quality.shape[1]).astype(jnp.float32),
        "labelled_requests": batch["n_after"].astype(jnp.float32),
        **no_learning_metrics(),
    }
    return new, metrics


update = C.compose(collect, learn)


def policy(state: Profiled) -> P.KNNPolicy:
    return P.KNNPolicy(state.order, state.n_profiled, state.quality, state.latency, state.cfg.k)
