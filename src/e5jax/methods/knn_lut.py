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


def check(cfg: Config) -> str | None:
    return None if cfg.k >= 1 else f"k must be >= 1 (neighbours), got {cfg.k}"


def init(key, env: E.EnvParams, cfg: Config = Config()):
    if check(cfg):
        raise ValueError(f"knn_lut: {check(cfg)}")
    order = C.labelling_order(key, env)  # supervised's labelling order
    Rt, n_cfg = order.shape[0], env.num_configs
    return Profiled(order, jnp.zeros((), jnp.int32), jnp.zeros((Rt, n_cfg)), jnp.zeros((Rt, n_cfg)),
                    jnp.zeros((), jnp.int32), cfg)


@struct.dataclass
class ProfiledRows:
    rows: jax.Array  # [m] store rows (out of range past the end of the train split: dropped)
    q: jax.Array  # [m, C] quality
    lat: jax.Array  # [m, C] normalized latency
    n_after: jax.Array
    train_utility: jax.Array


def collect(state: Profiled, env: E.EnvParams, keys) -> ProfiledRows:
    """Profile every config of the next requests in the order (C env steps each), and score the decision the
    controller would have made on them before profiling them (a training budget each): the method's train
    utility."""
    k_env, k_b = keys
    req, valid, rows, n_after = C.next_requests(state.order, state.n_profiled, C.requests_per_update(state.cfg, env))
    q, lat = E.lookup(env, req[:, None], jnp.arange(env.num_configs)[None, :], k_env)  # [m, C]
    budget = env.train_budgets[jax.random.randint(k_b, req.shape, 0, env.train_budgets.shape[0])]
    choice = policy(state).greedy(env, req, budget, None)
    r = E.reward_from(env, jnp.take_along_axis(q, choice[:, None], 1)[:, 0],
                      jnp.take_along_axis(lat, choice[:, None], 1)[:, 0], budget)
    w = valid.astype(jnp.float32)
    # NaN once every train request is profiled (nothing new is decided on)
    train_utility = jnp.where(w.sum() > 0, jnp.sum(r * w) / jnp.maximum(w.sum(), 1.0), jnp.nan)
    return ProfiledRows(rows, q, lat, n_after, train_utility)


def learn(state: Profiled, env: E.EnvParams, batch: ProfiledRows, key):
    """Write the profiled rows into the store (nothing is learned)."""
    new = state.replace(quality=state.quality.at[batch.rows].set(batch.q, mode="drop"),
                        latency=state.latency.at[batch.rows].set(batch.lat, mode="drop"), n_profiled=batch.n_after,
                        step=state.step + 1)
    metrics = {
        "train_utility": batch.train_utility,
        "env_steps": ((batch.n_after - state.n_profiled) * state.quality.shape[1]).astype(jnp.float32),
        "labelled_requests": batch.n_after.astype(jnp.float32),
        **no_learning_metrics(),
    }
    return new, metrics


def policy(state: Profiled) -> P.KNNPolicy:
    return P.KNNPolicy(state.order, state.n_profiled, state.quality, state.latency, state.cfg.k)


METHOD = C.Method("knn_lut", Config, init, collect, learn, policy, C.labelling_steps, keys=2,
                  cumulative=("num_failed_updates", "labelled_requests"), finite_data=True, color=6, check=check)
