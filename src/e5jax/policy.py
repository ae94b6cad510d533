"""Shared policy pieces: the network, categorical helpers over factored heads, and the two controller kinds.

A config is an index into the row-major knob grid. Three head kinds (``HEADS``):

* ``factored``: one categorical head per knob; ``log pi(config | x) = sum_k log softmax(z_k)[a_k]``; greedy = the
  per-knob argmax, which is the joint argmax of this policy but cannot express knobs that trade against each other;
* ``joint``: one head over all configs (C logits);
* ``autoregressive``: knob k's logits conditioned on the knobs chosen before it (``ARHead``); the network outputs
  the exact joint log-probabilities of all C configs, so every helper treats it as a joint head of size C and the
  greedy action is the exact argmax of the joint probability (cheap at ~100 configs).
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
HEADS = ("factored", "joint", "autoregressive")


def ar_prefix_codes(knob_sizes) -> list[np.ndarray]:
    """For each knob j > 1: the one-hot codes [prod(K_<j), sum(K_<j)] of every combination of the earlier knobs'
    choices, in row-major order (the order of the config grid)."""
    codes, prefix = [], np.eye(knob_sizes[0], dtype=np.float32)
    for k in knob_sizes[1:]:
        codes.append(prefix)
        prefix = np.concatenate([np.repeat(prefix, k, 0), np.tile(np.eye(k, dtype=np.float32), (len(prefix), 1))], 1)
    return codes


class ARHead(nn.Module):
    """Autoregressive head: p(a_1 | h) p(a_2 | h, a_1) ... over the knobs; returns [..., C] joint log-probs.

    Knob 1: a linear head on the trunk output h. Knob j > 1: a ReLU layer (``width``) on [h, one-hot(a_1..a_{j-1})]
    then a linear head, evaluated for every prefix of earlier choices at once (prefixes in row-major order, so the
    output is indexed like the config grid). Output layers use the policy's ``head_scale`` init: near uniform.
    """

    knob_sizes: Sequence[int]
    width: int = 64
    head_scale: float = 0.01

    @nn.compact
    def __call__(self, h):
        init = nn.initializers.orthogonal(self.head_scale)
        lead = h.shape[:-1]
        joint = jax.nn.log_softmax(nn.Dense(self.knob_sizes[0], kernel_init=init, name="knob_0")(h))  # [..., K1]
        for j, (k, code) in enumerate(zip(self.knob_sizes[1:], ar_prefix_codes(self.knob_sizes)), start=1):
            prefix = jnp.asarray(code, h.dtype)  # [P, D]: one-hot codes of the earlier choices
            n = prefix.shape[0]
            x = jnp.concatenate([jnp.broadcast_to(h[..., None, :], lead + (n, h.shape[-1])),
                                 jnp.broadcast_to(prefix, lead + prefix.shape)], -1)
            z = nn.relu(nn.Dense(self.width, kernel_init=nn.initializers.orthogonal(np.sqrt(2)), name=f"cond_{j}")(x))
            lp = jax.nn.log_softmax(nn.Dense(k, kernel_init=init, name=f"knob_{j}")(z))  # [..., P, k]
            joint = (joint[..., :, None] + lp).reshape(lead + (n * k,))
        return joint


class MLP(nn.Module):
    """Trunk (ReLU MLP, orthogonal init sqrt(2)) + linear heads of the given sizes (orthogonal init head_scale),
    or, with ``ar`` (the knob sizes), one autoregressive head returning the C joint log-probs."""

    hidden: Sequence[int] = (128, 64)
    head_sizes: Sequence[int] = (1,)
    head_scale: float = 0.01
    ar: Sequence[int] = ()

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = nn.relu(nn.Dense(h, kernel_init=nn.initializers.orthogonal(np.sqrt(2)), bias_init=nn.initializers.zeros)(x))
        if self.ar:
            return (ARHead(tuple(self.ar), width=self.hidden[-1] if self.hidden else 64, head_scale=self.head_scale)(x),)
        init = nn.initializers.orthogonal(self.head_scale)
        return tuple(nn.Dense(n, kernel_init=init, bias_init=nn.initializers.zeros)(x) for n in self.head_sizes)


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    return head


def head_sizes(env: E.EnvParams, head) -> tuple[int, ...]:
    """Sizes of the categorical heads as the helpers see them: (C,) for joint and autoregressive heads (``head``:
    a kind from HEADS)."""
    return tuple(env.knob_sizes) if check_head(head) == "factored" else (env.num_configs,)


def ar_sizes(env: E.EnvParams, head) -> tuple[int, ...]:
    """The knob sizes an autoregressive head conditions over; () for the other kinds."""
    return tuple(env.knob_sizes) if head == "autoregressive" else ()


def count_params(params, batch_dims: int = 0) -> int:
    """Number of parameters in a pytree of arrays; ``batch_dims`` leading axes (e.g. vmapped seeds) not counted."""
    return int(sum(np.prod(x.shape[batch_dims:]) for x in jax.tree_util.tree_leaves(params)))


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
    ar: tuple = struct.field(pytree_node=False, default=())  # knob sizes of an autoregressive head

    def logits(self, obs):
        return MLP(self.hidden, self.sizes, ar=self.ar).apply(self.params, obs)

    def greedy(self, env, req, budget, budget_idx):
        return greedy(self.logits(E.observe(env, req, budget)), self.sizes)

    def probs(self, env, req, budget, budget_idx):
        return config_probs(self.logits(E.observe(env, req, budget)))

    def sizes_report(self) -> dict:
        """What the controller stores: its parameter count."""
        return {"policy": count_params(self.params)}


@struct.dataclass
class LookupPolicy:
    """A training-free controller: one config per (task_type, evaluation budget)."""

    choice: jax.Array  # [T, B] config index

    def greedy(self, env, req, budget, budget_idx):
        return self.choice[env.task[req], budget_idx]

    def probs(self, env, req, budget, budget_idx):
        return jax.nn.one_hot(self.greedy(env, req, budget, budget_idx), env.num_configs)

    def sizes_report(self) -> dict:
        """What the controller stores: no parameters, a [task, budget] table."""
        return {"policy": 0, "critic": 0, "total": 0, "table_entries": int(np.prod(self.choice.shape))}


def knn_features(env, req) -> jax.Array:
    """The space nearest neighbours are found in: standardized request features ++ task one-hot."""
    return jnp.concatenate([env.features[req], jax.nn.one_hot(env.task[req], env.num_tasks, dtype=jnp.float32)], -1)


@struct.dataclass
class KNNPolicy:
    """A training-free controller: the best config on average over the k nearest profiled requests."""

    order: jax.Array  # [Rt] profiled train requests (the first n are profiled)
    n: jax.Array  # scalar: how many are profiled
    quality: jax.Array  # [Rt, C]
    latency: jax.Array  # [Rt, C] normalized latency
    k: int = struct.field(pytree_node=False)

    def neighbours(self, env, req):
        """[..., k] store rows of the k nearest profiled requests, and [..., k] whether each is profiled."""
        ref = knn_features(env, self.order)  # [Rt, D]
        q = knn_features(env, req)  # [..., D]
        d = jnp.sum(jnp.square(q[..., None, :] - ref), -1)  # [..., Rt]
        valid = jnp.arange(self.order.shape[0]) < self.n
        d = jnp.where(valid, d, jnp.inf)
        k = min(self.k, self.order.shape[0])
        _, nbr = jax.lax.top_k(-d, k)  # ties: lower index (earlier profiled) first
        return nbr, valid[nbr].astype(jnp.float32)

    def mean_reward(self, env, nbr, w, budget):
        """[..., C] mean reward of the neighbours ``nbr`` (weights ``w``) at ``budget`` (broadcast against them)."""
        b = jnp.asarray(budget, jnp.float32)[..., None, None]
        r = E.reward_from(env, self.quality[nbr], self.latency[nbr], b)  # [..., k, C]
        return jnp.sum(r * w[..., None], -2) / jnp.maximum(w.sum(-1), 1.0)[..., None]

    def scores(self, env, req, budget):
        """[..., C] mean reward over the k nearest profiled requests at ``budget``, and whether any is profiled."""
        nbr, w = self.neighbours(env, req)
        return self.mean_reward(env, nbr, w, budget), self.n > 0

    def greedy(self, env, req, budget, budget_idx):
        mean, any_profiled = self.scores(env, req, budget)
        return jnp.where(any_profiled, jnp.argmax(mean, -1), env.num_configs - 1)

    def greedy_grid(self, env):
        """[B, Rv] ``greedy`` on the whole evaluation grid (``E.eval_grid``), the neighbours found once per val
        request and shared by the budgets (they do not depend on the budget): the same configs, B times less
        neighbour search (``engine.evaluate`` uses it)."""
        _, budget = E.eval_grid(env)
        nbr, w = self.neighbours(env, env.val_idx)  # [Rv, k]
        return jnp.where(self.n > 0, jnp.argmax(self.mean_reward(env, nbr, w, budget), -1), env.num_configs - 1)

    def probs(self, env, req, budget, budget_idx):
        return jax.nn.one_hot(self.greedy(env, req, budget, budget_idx), env.num_configs)

    def sizes_report(self) -> dict:
        """What the controller stores: no parameters, the profiled rows (quality and latency per config)."""
        n = int(self.n)
        return {"policy": 0, "critic": 0, "total": 0, "table_entries": 2 * n * int(self.quality.shape[-1]),
                "profiled_requests": n}
