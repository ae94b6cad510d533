"""The lookup environment: a profile table as a traced pytree, and pure functions over it.

One-step contextual bandit:

* observation = standardized request features (train-split statistics) ++ task one-hot ++ budget fraction b,
  the budget standardized with the mean/std of the training budgets (so it weighs like the features);
* budget = b x baseline, baseline = the request's full-config latency; latency is normalized by baseline;
* ``reward = quality - lam * max(0, latency / baseline - b)``;
* one env step = one executed (request, config) profiling call.

Everything here is jittable and vmappable over a leading seed axis; the table is an input (gymnax style),
never a compile-time constant, so one compiled program serves any table of the same shape. The observation and
the reward also have NumPy twins (``request_point_np``, ``observation_np``, ``reward_np``): the eager path of the
exported controllers and the PyTorch reference use them, and tests hold them equal to the JAX functions.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from e5jax.table import ProfileTable

EVAL_BUDGETS = (0.35, 0.50, 0.70, 0.85, 1.00)
# Absolute tolerance (reward units) of the set-valued oracle: configs whose reward is within it of the best are all
# optimal. 1e-6 is ~8 float32 ulps at a reward of 1: it merges configs whose rewards are equal up to float32
# rounding (equal quality, latency within budget) and nothing a table's quality or latency resolution separates.
ORACLE_TOL = 1e-6


@struct.dataclass
class EnvParams:
    features: jax.Array  # [R, F] standardized with train-split statistics
    task: jax.Array  # [R] int32
    latency_norm: jax.Array  # [R, C] latency / baseline
    latency_ms: jax.Array  # [R, C]
    latency_std_norm: jax.Array  # [R, C] latency_std / baseline (zeros when the table has none)
    quality: jax.Array  # [R, C]
    baseline_ms: jax.Array  # [R]
    train_idx: jax.Array  # [Rt] int32
    val_idx: jax.Array  # [Rv] int32
    budgets: jax.Array  # [B] evaluation budgets (fractions of baseline)
    train_budgets: jax.Array  # [Bt] budgets sampled during training
    lam: jax.Array  # scalar overshoot penalty
    latency_noise: jax.Array  # scalar: 1.0 draws latency noise on profiling calls, 0.0 = table mean
    oracle_tol: jax.Array  # scalar: configs within this of the best reward are all optimal (``oracle_set``)
    # static (shapes the networks and the programs depend on)
    knob_sizes: tuple = struct.field(pytree_node=False, default=())
    num_tasks: int = struct.field(pytree_node=False, default=0)

    @property
    def num_configs(self) -> int:
        return int(np.prod(self.knob_sizes))

    @property
    def obs_dim(self) -> int:
        return self.features.shape[-1] + self.num_tasks + 1

    @property
    def full_config(self) -> int:
        return self.num_configs - 1


def feature_standardization(table: ProfileTable) -> tuple[np.ndarray, np.ndarray]:
    """The observation's feature standardization: train-split mean and std (ddof=0) per feature, a std of 0 -> 1.
    ``make_env_params`` applies it; the exported controllers (``e5jax.export``) store it for the eager path."""
    train = table.features[table.split_indices("train")]
    sd = train.std(0)
    return train.mean(0), np.where(sd > 0, sd, 1.0)


def env_from_run(run, table: ProfileTable) -> EnvParams:
    """The environment of a run config (``e5jax.config.RunConfig``: lam, budgets, latency_noise, oracle_tol) on
    ``table``."""
    return make_env_params(table, lam=run.lam, budgets=run.budgets, latency_noise=run.latency_noise,
                           oracle_tol=run.oracle_tol)


def make_env_params(
    table: ProfileTable,
    lam: float = 2.0,
    budgets=EVAL_BUDGETS,
    train_budgets=None,
    latency_noise: bool = False,
    oracle_tol: float = ORACLE_TOL,
) -> EnvParams:
    """Host ProfileTable -> device EnvParams (float32)."""
    train = table.split_indices("train")
    val = table.split_indices("val")
    mu, sd = feature_standardization(table)
    feats = (table.features - mu) / sd
    base = table.latency_ms[:, table.full_config]
    std = table.latency_std_ms if table.latency_std_ms is not None else np.zeros_like(table.latency_ms)
    f32 = lambda x: jnp.asarray(np.asarray(x, dtype=np.float32))  # noqa: E731
    return EnvParams(
        features=f32(feats),
        task=jnp.asarray(table.task_index),
        latency_norm=f32(table.latency_ms / base[:, None]),
        latency_ms=f32(table.latency_ms),
        latency_std_norm=f32(std / base[:, None]),
        quality=f32(table.quality),
        baseline_ms=f32(base),
        train_idx=jnp.asarray(train),
        val_idx=jnp.asarray(val),
        budgets=f32(budgets),
        train_budgets=f32(budgets if train_budgets is None else train_budgets),
        lam=f32(lam),
        latency_noise=f32(1.0 if latency_noise else 0.0),
        oracle_tol=f32(oracle_tol),
        knob_sizes=tuple(int(s) for s in table.knob_sizes),
        num_tasks=len(table.task_names),
    )


# ----------------------------------------------------------------------------- observations
def observe(env: EnvParams, req: jax.Array, budget: jax.Array) -> jax.Array:
    """[...] request indices and budget fractions -> [..., obs_dim] observations."""
    onehot = jax.nn.one_hot(env.task[req], env.num_tasks, dtype=jnp.float32)
    b = jnp.broadcast_to(budget, req.shape)[..., None].astype(jnp.float32)
    b = (b - env.train_budgets.mean()) / jnp.maximum(env.train_budgets.std(), 1e-6)
    return jnp.concatenate([env.features[req], onehot, b], axis=-1)


def request_point_np(raw_features, feature_mean, feature_std, task: int, num_tasks: int) -> np.ndarray:
    """NumPy twin of the request part of ``observe`` for one raw request: [F + T] float32, the standardized features
    (``feature_standardization``, in float64, then float32) ++ the task one-hot. ``policy.knn_features`` is this
    point; ``observation_np`` appends the budget."""
    F = len(feature_mean)
    x = np.zeros(F + num_tasks, np.float32)
    x[:F] = (np.asarray(raw_features, np.float64) - feature_mean) / feature_std
    x[F + task] = 1.0
    return x


def observation_np(point: np.ndarray, budget: float, budget_mean: np.float32, budget_std: np.float32) -> np.ndarray:
    """NumPy twin of ``observe``: a request point (``request_point_np``) ++ the standardized budget (float32, with
    the training budgets' mean and std as ``observe`` computes them)."""
    b = (np.float32(budget) - np.float32(budget_mean)) / np.float32(budget_std)
    return np.concatenate([point, np.asarray([b], np.float32)])


def sample_requests(key: jax.Array, env: EnvParams, n: int, split: str = "train"):
    """n (request, budget) pairs: requests uniform over the split, budgets uniform over train_budgets.

    Returns (req [n] int32, budget [n] float32, budget_idx [n] int32 into ``env.train_budgets``).
    """
    k1, k2 = jax.random.split(key)
    pool = env.train_idx if split == "train" else env.val_idx
    req = pool[jax.random.randint(k1, (n,), 0, pool.shape[0])]
    bidx = jax.random.randint(k2, (n,), 0, env.train_budgets.shape[0])
    return req, env.train_budgets[bidx], bidx


# ----------------------------------------------------------------------------- lookups and reward
def reward(quality, latency_norm, budget, lam):
    """``quality - lam * max(0, latency_norm - budget)``: the reward, defined here once (``reward_np`` is its
    NumPy twin)."""
    return quality - lam * jnp.maximum(0.0, latency_norm - budget)


def reward_from(env: EnvParams, quality, latency_norm, budget):
    """The reward at the env's overshoot penalty."""
    return reward(quality, latency_norm, budget, env.lam)


def reward_np(quality, latency_norm, budget, lam) -> np.ndarray:
    """NumPy twin of ``reward_from`` in float32: ``quality - lam * max(0, latency_norm - budget)``."""
    f32 = np.float32
    return np.asarray(quality, f32) - f32(lam) * np.maximum(f32(0.0), np.asarray(latency_norm, f32) - f32(budget))


def lookup(env: EnvParams, req, config, key=None):
    """Profile (request, config): (quality, normalized latency). Draws latency noise if enabled and key given."""
    q = env.quality[req, config]
    lat = env.latency_norm[req, config]
    if key is not None:
        noise = jax.random.normal(key, lat.shape) * env.latency_std_norm[req, config]
        lat = jnp.maximum(lat + env.latency_noise * noise, 1e-6)
    return q, lat


def step(env: EnvParams, req, budget, config, key=None):
    """One profiling call per element: reward, quality and normalized latency of the executed config."""
    q, lat = lookup(env, req, config, key)
    return reward_from(env, q, lat, budget), q, lat


def reward_matrix(env: EnvParams, req, budget):
    """[..., C] rewards of every config (table means, no noise). Reference computations only."""
    b = jnp.asarray(budget)[..., None]
    return reward_from(env, env.quality[req], env.latency_norm[req], b)


def oracle_config(env: EnvParams, req, budget):
    """The reference oracle's action: argmax_config reward per (request, budget), ties -> lowest index.

    Its reward is the best reward, which is all the references use (utility, normalized-utility denominators,
    thresholds). Which config it names where several tie is a tie-break, not a property of the request: the set
    of optimal configs is ``oracle_set``; nothing should imitate this choice."""
    return jnp.argmax(reward_matrix(env, req, budget), axis=-1)


def optimal_set(rewards: jax.Array, tol) -> jax.Array:
    """[..., C] rewards -> [..., C] bool: the configs whose reward is within ``tol`` of the best (never empty)."""
    return rewards >= rewards.max(-1, keepdims=True) - tol


def oracle_set(env: EnvParams, req, budget) -> jax.Array:
    """[..., C] bool: every optimal config per (request, budget), i.e. reward >= best reward - ``env.oracle_tol``
    (table means, no noise). ``oracle_config`` is one member of it."""
    return optimal_set(reward_matrix(env, req, budget), env.oracle_tol)


# ----------------------------------------------------------------------------- evaluation
def eval_grid(env: EnvParams):
    """All (budget, val request) pairs: req [B, Rv], budget [B, Rv]."""
    B, Rv = env.budgets.shape[0], env.val_idx.shape[0]
    req = jnp.broadcast_to(env.val_idx[None, :], (B, Rv))
    budget = jnp.broadcast_to(env.budgets[:, None], (B, Rv))
    return req, budget


def evaluate_actions(env: EnvParams, actions: jax.Array) -> dict:
    """Metrics per evaluation budget of configs ``actions`` [B, Rv] chosen on the val grid.

    Returns arrays of shape [B]: utility (mean reward), quality_mean, latency_p95_ms, latency_p95_norm,
    slo_violation_rate (latency > b x baseline), latency_mean_norm.
    """
    req, budget = eval_grid(env)
    chex.assert_equal_shape([actions, req])
    q = env.quality[req, actions]
    lat = env.latency_norm[req, actions]
    lat_ms = env.latency_ms[req, actions]
    r = reward_from(env, q, lat, budget)
    return {
        "utility": r.mean(-1),
        "quality_mean": q.mean(-1),
        "latency_p95_ms": jnp.percentile(lat_ms, 95.0, axis=-1),
        "latency_p95_norm": jnp.percentile(lat, 95.0, axis=-1),
        "latency_mean_norm": lat.mean(-1),
        "slo_violation_rate": (lat > budget).mean(-1),
    }


def evaluate_policy(env: EnvParams, policy) -> dict:
    """Greedy evaluation of any controller exposing ``greedy(env, req, budget, budget_idx) -> config``."""
    req, budget = eval_grid(env)
    bidx = jnp.broadcast_to(jnp.arange(env.budgets.shape[0])[:, None], req.shape)
    return evaluate_actions(env, policy.greedy(env, req, budget, bidx))


def expected_utility(env: EnvParams, probs: jax.Array) -> jax.Array:
    """Exact expected reward per budget of a stochastic policy with config probabilities [B, Rv, C]."""
    req, budget = eval_grid(env)
    return jnp.sum(probs * reward_matrix(env, req, budget), -1).mean(-1)


def reference_actions(env: EnvParams) -> dict:
    """Config choices [B, Rv] of the references: oracle and full config."""
    req, budget = eval_grid(env)
    return {
        "oracle": oracle_config(env, req, budget),
        "full": jnp.full(req.shape, env.full_config, dtype=jnp.int32),
    }


@jax.jit
def evaluate_references(env: EnvParams) -> dict:
    """Oracle, full config and uniform-random policy, with the same evaluator as the learners (one compiled
    program: op by op, its ~50 small ops each compiled apart took ~2 s of every run's start; same values).

    The random policy's numbers are exact expectations over the uniform distribution (utility, quality,
    violation rate); its percentiles come from the pooled distribution of all configs.
    """
    out = {name: evaluate_actions(env, a) for name, a in reference_actions(env).items()}
    req, budget = eval_grid(env)
    q = env.quality[req]  # [B, Rv, C]
    lat = env.latency_norm[req]
    B = budget.shape[0]
    out["random"] = {
        "utility": reward_from(env, q, lat, budget[..., None]).mean((-1, -2)),
        "quality_mean": q.mean((-1, -2)),
        "latency_p95_ms": jnp.percentile(env.latency_ms[req].reshape(B, -1), 95.0, axis=-1),
        "latency_p95_norm": jnp.percentile(lat.reshape(B, -1), 95.0, axis=-1),
        "latency_mean_norm": lat.mean((-1, -2)),
        "slo_violation_rate": (lat > budget[..., None]).mean((-1, -2)),
    }
    return out


@jax.jit
def evaluate_fixed_configs(env: EnvParams) -> dict:
    """Every config applied to every val request: metrics [C, B] (for the fixed-config Pareto front)."""
    req, _ = eval_grid(env)
    return jax.vmap(lambda c: evaluate_actions(env, jnp.full(req.shape, c, dtype=jnp.int32)))(jnp.arange(env.num_configs))
