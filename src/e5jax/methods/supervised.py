"""Supervised controller: maximum likelihood of the optimal set, paying for every label.

Each labelled request costs C env steps: every config is profiled once (``env.lookup`` with a key, so with
``latency_noise`` on its latencies are the same noisy draws every other method's profiling calls see), and the
measured latencies are stored. At any budget the request's label is its *optimal set*: the configs whose reward
(table quality, measured latency) is within ``env.oracle_tol`` (or the traced ``label_tol``, when larger) of the
best (``env.optimal_set``). Per update the
method labels ``env_steps_per_update // C`` new train requests (in a per-seed random order, until the train split
is exhausted; relabelling is never charged twice because it never happens), then runs the shared epochs x
minibatches of SGD steps on (request, budget) pairs drawn from everything labelled so far, with the loss
``-log sum_{c in optimal set} pi(c | x)`` (``set_loss``): where configs tie, no tie-break is imitated.
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
class Config(C.LearnerConfig):
    label_smoothing: float = 0.0
    # a config is labelled optimal when its reward is within max(env.oracle_tol, label_tol) of the best (reward
    # units); 0 = the env's oracle tolerance alone. A wider set lets the policy settle on configs that are
    # near-optimal for most requests instead of imitating the most frequent exact optimum (docs/methods.md).
    label_tol: float = C.traced(0.0, search=(1e-3, 0.1), scale="log")


@struct.dataclass
class Labels:
    order: jax.Array  # [Rt] train request indices in the order they get labelled
    n_labelled: jax.Array  # scalar int32
    latency: jax.Array  # [Rt, C] measured normalized latency of order[i] (rows >= n_labelled unused)


@struct.dataclass
class LabelBatch:
    obs: jax.Array  # [N, D] (labelled request, training budget) pairs drawn from everything labelled so far
    optimal: jax.Array  # [N, C] bool: each pair's optimal set
    req: jax.Array  # [N]
    budget: jax.Array  # [N]
    n_after: jax.Array  # labelled requests after this update
    latency: jax.Array  # [Rt, C] the latency store with this update's rows written
    env_steps: jax.Array  # this update's profiled cells


def init(key, env: E.EnvParams, cfg: Config = Config(), policy_params=None):
    # the policy comes from `key` exactly as in every other learned method; the labelling order from a fold
    order = C.labelling_order(key, env)
    latency = jnp.zeros((order.shape[0], env.num_configs), jnp.float32)
    return C.init_learner(key, env, cfg, extra=Labels(order, jnp.zeros((), jnp.int32), latency),
                          policy_params=policy_params)


def _smoothed(nll, logits, label_smoothing: float):
    if label_smoothing == 0.0:
        return nll.mean()
    uniform = -sum(jax.nn.log_softmax(z).mean(-1) for z in logits)  # CE to the uniform distribution, per head
    return ((1 - label_smoothing) * nll + label_smoothing * uniform).mean()


def ce_loss(logits, target, sizes, label_smoothing: float = 0.0):
    """Cross-entropy of one target config under the policy (sum over heads of per-head CE): ``set_loss`` with a
    one-member set."""
    return _smoothed(-P.log_prob(logits, target, sizes), logits, label_smoothing)


def joint_log_probs(logits: tuple) -> jax.Array:
    """[..., C] log-probability of every config (row-major): the sum of the heads' log-softmaxes (a joint or
    autoregressive head has one head of size C)."""
    lp = jax.nn.log_softmax(logits[0])
    for z in logits[1:]:
        lz = jax.nn.log_softmax(z)
        lp = (lp[..., :, None] + lz[..., None, :]).reshape(lp.shape[:-1] + (-1,))
    return lp


def set_loss(logits, optimal, label_smoothing: float = 0.0):
    """``-log sum_{c in optimal} pi(c | x)``, mean over the batch: the likelihood of choosing *some* optimal config.

    ``optimal`` [N, C] bool (never empty). With one member it is the cross-entropy ``ce_loss``; with several it
    leaves the split of probability among them free. ``label_smoothing`` mixes in the CE to the uniform policy as
    ``ce_loss`` does."""
    lp = joint_log_probs(logits)
    nll = -jax.nn.logsumexp(jnp.where(optimal, lp, -jnp.inf), axis=-1)
    return _smoothed(nll, logits, label_smoothing)


def label_next(state: C.LearnerState, env: E.EnvParams, key) -> tuple[jax.Array, jax.Array]:
    """Profile every config of the next ``requests_per_update`` requests in the order (C env steps each) with the
    env's own latency noise; returns (n_after, the latency store with their rows written)."""
    ex = state.extra
    req, _, rows, n_after = C.next_requests(ex.order, ex.n_labelled, C.requests_per_update(state.cfg, env))
    _, lat = E.lookup(env, req[:, None], jnp.arange(env.num_configs)[None, :], key)  # [m, C]
    return n_after, ex.latency.at[rows].set(lat, mode="drop")


def labels(env: E.EnvParams, state: C.LearnerState, pos, budget) -> jax.Array:
    """[N, C] bool optimal sets of labelled positions ``pos`` [N] (into the order) at ``budget`` [N], from the table's
    quality and the latencies measured when they were labelled: every config within max(``env.oracle_tol``, the
    state's traced ``label_tol``) of the best reward."""
    req = state.extra.order[pos]
    rewards = E.reward_from(env, env.quality[req], state.extra.latency[pos], budget[:, None])
    return E.optimal_set(rewards, jnp.maximum(env.oracle_tol, state.hp["label_tol"]))


def collect(state: C.LearnerState, env: E.EnvParams, keys) -> LabelBatch:
    """Label the next requests (``label_next``: C env steps each), then draw N (labelled request, training budget)
    pairs with their optimal sets."""
    cfg: Config = state.cfg
    n_before = state.extra.n_labelled
    N = cfg.env_steps_per_update
    k_req, k_b, k_lat = keys
    n_after, latency = label_next(state, env, k_lat)
    labelled = state.replace(extra=state.extra.replace(n_labelled=n_after, latency=latency))
    pos = jax.random.randint(k_req, (N,), 0, jnp.maximum(n_after, 1))
    req = state.extra.order[pos]
    bidx = jax.random.randint(k_b, (N,), 0, env.train_budgets.shape[0])
    budget = env.train_budgets[bidx]
    return LabelBatch(E.observe(env, req, budget), labels(env, labelled, pos, budget), req, budget, n_after, latency,
                      (n_after - n_before) * env.num_configs)


def learn(state: C.LearnerState, env: E.EnvParams, batch: LabelBatch, key):
    """epochs x minibatches cross-entropy SGD steps on the labelled pairs. ``key`` is the collect phase's
    latency-noise key (``Method.keys`` = 3: the update's key splits into request, budget and that key)."""
    cfg: Config = state.cfg

    def loss_fn(params, mb):
        obs, optimal = mb
        z = C.policy_logits(state, params, obs)
        loss = set_loss(z, optimal, cfg.label_smoothing)
        choice = P.greedy(z, state.sizes)  # label accuracy: the greedy config is optimal
        return loss, {"label_accuracy": jnp.mean(jnp.take_along_axis(optimal, choice[:, None], -1))}

    obs, req, budget = batch.obs, batch.req, batch.budget
    state, sgd = C.sgd_epochs(key, state, (obs, batch.optimal), loss_fn, cfg.env_steps_per_update)
    probs = P.config_probs(C.policy_logits(state, state.params, obs))
    train_utility = jnp.sum(probs * E.reward_matrix(env, req, budget), -1).mean()
    metrics = C.standard_metrics(state, state.params, obs, train_utility, batch.env_steps, sgd)
    metrics["labelled_requests"] = batch.n_after.astype(jnp.float32)
    state = state.replace(step=state.step + 1,
                          extra=state.extra.replace(n_labelled=batch.n_after, latency=batch.latency))
    return state, metrics


METHOD = C.Method("supervised", Config, init, collect, learn, C.policy, C.labelling_steps, keys=3,
                  cumulative=("num_failed_updates", "labelled_requests"), finite_data=True, color=2,
                  shared_init=C.policy_params_for_rows)
