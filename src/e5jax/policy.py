"""Shared policy pieces: the network, categorical helpers over factored heads, and the two controller kinds.

A config is an index into the row-major knob grid. A policy has one categorical head per knob (factored,
default) or a single head over all configs (``joint``); ``log pi(config | x) = sum_heads log softmax(z_h)[a_h]``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from e5jax import env as E


# ----------------------------------------------------------------------------- networks
class MLP(nn.Module):
    """Trunk (ReLU MLP, orthogonal init sqrt(2)) + linear heads of the given sizes (orthogonal init head_scale)."""

    hidden: Sequence[int] = (128, 64)
    head_sizes: Sequence[int] = (1,)
    head_scale: float = 0.01

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = nn.relu(nn.Dense(h, kernel_init=nn.initializers.orthogonal(np.sqrt(2)), bias_init=nn.initializers.zeros)(x))
        init = nn.initializers.orthogonal(self.head_scale)
        return tuple(nn.Dense(n, kernel_init=init, bias_init=nn.initializers.zeros)(x) for n in self.head_sizes)


def head_sizes(env: E.EnvParams, joint: bool) -> tuple[int, ...]:
    return (env.num_configs,) if joint else tuple(env.knob_sizes)


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


# ----------------------------------------------------------------------------- categorical helpers
def config_to_heads(config: jax.Array, sizes: tuple[int, ...]) -> tuple[jax.Array, ...]:
    if len(sizes) == 1:
        return (config,)
    return tuple(jnp.unravel_index(config, sizes))


def heads_to_config(actions: Sequence[jax.Array], sizes: tuple[int, ...]) -> jax.Array:
    if len(sizes) == 1:
        return actions[0]
    return jnp.ravel_multi_index(tuple(actions), sizes, mode="clip")


def log_prob(logits: tuple, config: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    acts = config_to_heads(config, sizes)
    return sum(
        jnp.take_along_axis(jax.nn.log_softmax(z), a[..., None], axis=-1)[..., 0] for z, a in zip(logits, acts)
    )


def sample(key: jax.Array, logits: tuple, sizes: tuple[int, ...]) -> jax.Array:
    """Inverse-CDF sampling: one uniform per head per sample (no Gumbel draw per category)."""
    keys = jax.random.split(key, len(logits))
    acts = []
    for k, z in zip(keys, logits):
        cdf = jnp.cumsum(jax.nn.softmax(z), axis=-1)
        u = jax.random.uniform(k, z.shape[:-1] + (1,)) * cdf[..., -1:]
        acts.append(jnp.minimum(jnp.sum(cdf < u, axis=-1), z.shape[-1] - 1))
    return heads_to_config(acts, sizes)


def greedy(logits: tuple, sizes: tuple[int, ...]) -> jax.Array:
    """argmax of the joint log-probability (= per-head argmax for a factored policy)."""
    return heads_to_config([jnp.argmax(z, axis=-1) for z in logits], sizes)


def entropy(logits: tuple) -> jax.Array:
    ent = 0.0
    for z in logits:
        lp = jax.nn.log_softmax(z)
        ent = ent - jnp.sum(jnp.exp(lp) * lp, axis=-1)
    return ent


def kl(logits_p: tuple, logits_q: tuple) -> jax.Array:
    """Exact KL(p || q) between two factored categorical policies (sum of per-head KLs)."""
    out = 0.0
    for zp, zq in zip(logits_p, logits_q):
        lp, lq = jax.nn.log_softmax(zp), jax.nn.log_softmax(zq)
        out = out + jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)
    return out


def config_probs(logits: tuple) -> jax.Array:
    """[..., C] joint probabilities of every config (outer product of the heads, row-major)."""
    p = jax.nn.softmax(logits[0])
    for z in logits[1:]:
        q = jax.nn.softmax(z)
        p = (p[..., :, None] * q[..., None, :]).reshape(p.shape[:-1] + (-1,))
    return p


# ----------------------------------------------------------------------------- controllers
@struct.dataclass
class MLPPolicy:
    """A neural controller: obs -> per-head logits. Consumed by the greedy evaluator and the eager path."""

    params: Any
    hidden: tuple = struct.field(pytree_node=False, default=(128, 64))
    sizes: tuple = struct.field(pytree_node=False, default=())

    def logits(self, obs):
        return MLP(self.hidden, self.sizes).apply(self.params, obs)

    def greedy(self, env, req, budget, budget_idx):
        return greedy(self.logits(E.observe(env, req, budget)), self.sizes)

    def probs(self, env, req, budget, budget_idx):
        return config_probs(self.logits(E.observe(env, req, budget)))


@struct.dataclass
class LookupPolicy:
    """A training-free controller: one config per (task_type, evaluation budget)."""

    choice: jax.Array  # [T, B] config index

    def greedy(self, env, req, budget, budget_idx):
        return self.choice[env.task[req], budget_idx]

    def probs(self, env, req, budget, budget_idx):
        return jax.nn.one_hot(self.greedy(env, req, budget, budget_idx), env.num_configs)
