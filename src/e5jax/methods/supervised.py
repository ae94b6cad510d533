"""Supervised controller: cross-entropy to oracle labels, paying for every label.

Each labelled request costs C env steps (profiling it exhaustively gives its oracle config at every budget).
Per update the method labels ``env_steps_per_update // C`` new train requests (in a per-seed random order, until
the train split is exhausted; relabelling is never charged twice because it never happens), then runs the shared
epochs x minibatches of cross-entropy steps on (request, budget) pairs drawn from everything labelled so far.
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


@struct.dataclass
class Labels:
    order: jax.Array  # [Rt] train request indices in the order they get labelled
    n_labelled: jax.Array  # scalar int32


def labels_per_update(cfg: Config, env: E.EnvParams) -> int:
    return max(1, cfg.env_steps_per_update // env.num_configs)


def init(key, env: E.EnvParams, cfg: Config = Config()):
    # the policy comes from `key` exactly as in every other learned method; the labelling order from a fold
    order = jax.random.permutation(jax.random.fold_in(key, 1), env.train_idx)
    return C.init_learner(key, env, cfg, extra=Labels(order, jnp.zeros((), jnp.int32)))


def steps_per_update(cfg: Config, env: E.EnvParams) -> int:
    return labels_per_update(cfg, env) * env.num_configs


def ce_loss(logits, target, sizes, label_smoothing: float = 0.0):
    """Cross-entropy of the oracle config under the policy (sum over heads of per-head CE)."""
    nll = -P.log_prob(logits, target, sizes)
    if label_smoothing == 0.0:
        return nll.mean()
    uniform = -sum(jax.nn.log_softmax(z).mean(-1) for z in logits)
    return ((1 - label_smoothing) * nll + label_smoothing * uniform).mean()


def collect(state: C.LearnerState, env: E.EnvParams, key) -> dict:
    """Label the next requests (C env steps each: their oracle config at every budget becomes known), then draw
    N (labelled request, training budget) pairs with their oracle configs."""
    cfg: Config = state.cfg
    m = labels_per_update(cfg, env)
    Rt = state.extra.order.shape[0]
    n_before = state.extra.n_labelled
    n_after = jnp.minimum(n_before + m, Rt)
    N = cfg.env_steps_per_update
    k_req, k_b, _ = jax.random.split(key, 3)
    pos = jax.random.randint(k_req, (N,), 0, jnp.maximum(n_after, 1))
    req = state.extra.order[pos]
    bidx = jax.random.randint(k_b, (N,), 0, env.train_budgets.shape[0])
    budget = env.train_budgets[bidx]
    return {"obs": E.observe(env, req, budget), "target": E.oracle_config(env, req, budget), "req": req,
            "budget": budget, "n_after": n_after, "env_steps": (n_after - n_before) * env.num_configs}


def learn(state: C.LearnerState, env: E.EnvParams, batch: dict, key):
    """epochs x minibatches cross-entropy SGD steps on the labelled pairs."""
    cfg: Config = state.cfg
    *_, k_sgd = jax.random.split(key, 3)

    def loss_fn(params, mb):
        z = C.policy_logits(state, params, mb["obs"])
        loss = ce_loss(z, mb["target"], state.sizes, cfg.label_smoothing)
        return loss, {"label_accuracy": jnp.mean(P.greedy(z, state.sizes) == mb["target"])}

    obs, req, budget = batch["obs"], batch["req"], batch["budget"]
    state, sgd = C.sgd_epochs(k_sgd, state, {"obs": obs, "target": batch["target"]}, loss_fn, cfg.env_steps_per_update)
    probs = P.config_probs(C.policy_logits(state, state.params, obs))
    train_utility = jnp.sum(probs * E.reward_matrix(env, req, budget), -1).mean()
    metrics = C.standard_metrics(state, state.params, obs, train_utility, batch["env_steps"], sgd)
    metrics["labelled_requests"] = batch["n_after"].astype(jnp.float32)
    state = state.replace(step=state.step + 1, extra=state.extra.replace(n_labelled=batch["n_after"]))
    return state, metrics


update = C.compose(collect, learn)


def policy(state: C.LearnerState) -> P.MLPPolicy:
    return C.mlp_policy(state, state.params)
