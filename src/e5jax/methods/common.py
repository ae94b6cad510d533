"""What every learned method shares, so that the comparison is fair by construction.

Every method is two named phases (``collect(state, env, key) -> batch``: rollouts, groups, pairs, labels, profiled
cells; ``learn(state, env, batch, key) -> (state, metrics)``) and ``update = compose(collect, learn)``, here, once.
Both phases get the update's key and take disjoint subkeys of it. Hyperparameters listed in a config's ``TRACED``
live in the state (``state.hp``, float32 scalars): they are traced, so one compiled program serves every value
and a sweep vmaps them alongside seeds; every other config field is static (changing it recompiles).

Same trunk and heads (``MLP``), same initialisation (the policy is initialised from the same key split in every
method), same optimizer (``optax.chain(clip_by_global_norm, adam)`` inside ``apply_if_finite``: a non-finite
update is skipped and counted, never applied), same env steps per update and the same number of gradient steps
(``epochs x minibatches``) on minibatches of the same size.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from e5jax import env as E
from e5jax import policy as P

NAN = float("nan")


def compose(collect: Callable, learn: Callable) -> Callable:
    """``update(state, env, key) = learn(state, env, collect(state, env, key), key)``: every method's update."""

    def update(state, env, key):
        return learn(state, env, collect(state, env, key), key)

    return update


def traced_names(cfg) -> tuple:
    """The hyperparameters this static config traces: ``type(cfg).TRACED``, less any the config compiles out
    (``cfg.compiled_out()``, e.g. GRPO's beta when its static beta is 0)."""
    out = set(cfg.compiled_out()) if hasattr(cfg, "compiled_out") else set()
    return tuple(k for k in getattr(type(cfg), "TRACED", ()) if k not in out)


def traced_hp(cfg) -> dict:
    """The config's traced hyperparameters (``traced_names``) as float32 scalars: the state's ``hp``."""
    return {k: jnp.asarray(getattr(cfg, k), jnp.float32) for k in traced_names(cfg)}


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    TRACED: ClassVar[tuple] = ("lr",)  # traced hyperparameters (in the state's hp); the rest is static
    env_steps_per_update: int = 256
    hidden: tuple = (128, 64)
    head: str = "factored"  # factored | joint | autoregressive (policy.HEADS; docs/methods.md)
    joint: bool = False  # older flag: true = head "joint"

    @property
    def head_kind(self) -> str:
        return "joint" if self.joint else P.check_head(self.head)
    lr: float = 3e-4
    adam_eps: float = 1e-5
    max_grad_norm: float = 0.5
    epochs: int = 4
    minibatches: int = 4


def make_optimizer(cfg: LearnerConfig, lr=None) -> optax.GradientTransformation:
    """``lr``: the (traced) learning rate, default ``cfg.lr``; Adam's state does not depend on it."""
    inner = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                        optax.adam(cfg.lr if lr is None else lr, eps=cfg.adam_eps))
    # skip every non-finite update (count them); never fall through to applying one
    return optax.apply_if_finite(inner, max_consecutive_errors=2**30)


def num_failed_updates(opt_state) -> jax.Array:
    """Skipped non-finite updates so far (0 for an optimizer without ``apply_if_finite``, e.g. a benchmark variant)."""
    n = getattr(opt_state, "total_notfinite", None)
    return jnp.zeros((), jnp.int32) if n is None else n


@dataclasses.dataclass(frozen=True)
class Program:
    """Replacements for the shared pieces of an update, all None in the lab (``LearnerState.program``): a benchmark
    times a variant of the update by setting them on the state (experiments/bench_roofline.py), never by replacing
    this module's functions. ``optimizer``: like ``make_optimizer`` (re-init ``opt_state`` with it); ``sgd``: like
    ``sgd_epochs``; ``metrics``: like ``standard_metrics``; ``kl``: like ``policy.kl``, for the KL metric."""

    optimizer: Callable | None = None
    sgd: Callable | None = None
    metrics: Callable | None = None
    kl: Callable | None = None


def init_policy_params(key, env: E.EnvParams, cfg: LearnerConfig):
    """The policy every learned method starts from: identical for the same seed key."""
    sizes = P.head_sizes(env, cfg.head_kind)
    params = P.MLP(cfg.hidden, sizes, ar=P.ar_sizes(env, cfg.head_kind)).init(key, jnp.zeros((1, env.obs_dim)))
    return params, sizes


@struct.dataclass
class LearnerState:
    params: Any  # trainable parameters (policy, or {"actor", "critic"} for PPO)
    ref_params: Any  # the initial policy (reference for KL / DPO)
    opt_state: Any
    step: jax.Array
    extra: Any = None  # method-specific state (e.g. supervised's labelled set)
    hp: Any = None  # traced hyperparameters {name: f32 scalar} (config TRACED; engine may override, e.g. "lam")
    cfg: Any = struct.field(pytree_node=False, default=None)
    sizes: tuple = struct.field(pytree_node=False, default=())
    ar: tuple = struct.field(pytree_node=False, default=())  # knob sizes of an autoregressive head, else ()
    program: Program = struct.field(pytree_node=False, default=Program())  # the lab's update pieces (benchmarks)


def init_learner(key, env, cfg: LearnerConfig, make_params: Callable | None = None, extra=None) -> LearnerState:
    k_pol, k_other = jax.random.split(key)
    policy_params, sizes = init_policy_params(k_pol, env, cfg)
    params = policy_params if make_params is None else make_params(policy_params, k_other, sizes)
    return LearnerState(
        params=params,
        ref_params=policy_params,
        opt_state=make_optimizer(cfg).init(params),
        step=jnp.zeros((), jnp.int32),
        extra=extra,
        hp=traced_hp(cfg),
        cfg=cfg,
        sizes=sizes,
        ar=P.ar_sizes(env, cfg.head_kind),
    )


def policy_logits(state: LearnerState, params, obs):
    return P.MLP(state.cfg.hidden, state.sizes, ar=state.ar).apply(params, obs)


def mlp_policy(state: LearnerState, params) -> P.MLPPolicy:
    return P.MLPPolicy(params, state.cfg.hidden, state.sizes, ar=state.ar)


def sample_groups(state: LearnerState, env, keys, n_groups: int, group_size: int):
    """Online group sampling shared by GRPO and DPO: ``n_groups`` training requests (each with a sampled budget),
    ``group_size`` configs per request from the current policy, every sample one env step.

    ``keys`` = (request key, action key, env key). Returns obs [n, D], per-sample logits (heads of [n, G, k]),
    actions [n, G] and rewards [n, G].
    """
    k_req, k_act, k_env = keys
    req, budget, _ = E.sample_requests(k_req, env, n_groups)
    obs = E.observe(env, req, budget)
    logits = policy_logits(state, state.params, obs)
    logits_g = jax.tree_util.tree_map(lambda z: jnp.repeat(z[:, None], group_size, axis=1), logits)
    actions = P.sample(k_act, logits_g, state.sizes)
    rewards, _, _ = E.step(env, req[:, None], budget[:, None], actions, k_env)
    return obs, logits_g, actions, rewards


RANK_PERMUTATION_MAX = 1024  # above it (O(n^2) comparisons) the sort-based jax.random.permutation is used


def permutation(key, n: int) -> jax.Array:
    """``jax.random.permutation(key, n)``, element for element, without its sort for n <= RANK_PERMUTATION_MAX.

    jax draws one 32-bit sort key per element (one round below ~1600 elements: ``split(key)[1]``) and applies a
    stable sort; here each element's position is its rank among those keys (ties by index, as a stable sort puts
    them), found by all n x n comparisons and scattered into place. XLA's CPU sort calls a comparator per
    comparison: this is ~2.5x faster for the minibatch shuffles of every update (256 items), and the same
    permutation (tests/test_methods.py holds it against jax's for many keys and sizes, ties included)."""
    if n > RANK_PERMUTATION_MAX:
        return jax.random.permutation(key, n)
    bits = jax.random.bits(jax.random.split(key)[1], (n,), jnp.uint32)
    return permutation_from_sort_keys(bits)


def permutation_from_sort_keys(bits: jax.Array) -> jax.Array:
    """The indices 0..n-1 in the order a stable sort of ``bits`` puts them."""
    n = bits.shape[0]
    idx = jnp.arange(n, dtype=jnp.int32)
    before = (bits[None, :] < bits[:, None]) | ((bits[None, :] == bits[:, None]) & (idx[None, :] < idx[:, None]))
    return jnp.zeros(n, jnp.int32).at[before.sum(1, dtype=jnp.int32)].set(idx, unique_indices=True)


def sgd_epochs(key, state: LearnerState, batch, loss_fn: Callable, num_items: int):
    """epochs x minibatches of gradient steps over ``batch`` (leading axis = items), shuffled each epoch.

    ``loss_fn(params, minibatch) -> (loss, aux_dict)``. Returns the new state and the mean of loss, grad norm
    (before clipping) and every aux entry over all gradient steps.
    """
    if state.program.sgd is not None:
        return state.program.sgd(key, state, batch, loss_fn, num_items)
    cfg = state.cfg
    lr = state.hp["lr"] if state.hp else None
    tx = state.program.optimizer(cfg) if state.program.optimizer else make_optimizer(cfg, lr=lr)
    mb = num_items // cfg.minibatches
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def one_step(carry, idx):
        params, opt_state = carry
        minibatch = jax.tree_util.tree_map(lambda x: x[idx], batch)
        (loss, aux), grads = grad_fn(params, minibatch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    def one_epoch(carry, k):
        perm = permutation(k, num_items)[: mb * cfg.minibatches].reshape(cfg.minibatches, mb)
        return jax.lax.scan(one_step, carry, perm)

    (params, opt_state), metrics = jax.lax.scan(
        one_epoch, (state.params, state.opt_state), jax.random.split(key, cfg.epochs)
    )
    metrics = jax.tree_util.tree_map(jnp.mean, metrics)
    return state.replace(params=params, opt_state=opt_state), metrics


def standard_metrics(state: LearnerState, policy_params, obs, train_utility, env_steps, sgd_metrics) -> dict:
    """The per-update metrics every learned method reports."""
    if state.program.metrics is not None:
        return state.program.metrics(state, policy_params, obs, train_utility, env_steps, sgd_metrics)
    logits = policy_logits(state, policy_params, obs)
    ref = policy_logits(state, state.ref_params, obs)
    return {
        "train_utility": train_utility,
        "env_steps": jnp.asarray(env_steps, jnp.float32),
        "entropy": P.entropy(logits).mean(),
        "kl_ref": (state.program.kl or P.kl)(logits, ref).mean(),
        "num_failed_updates": num_failed_updates(state.opt_state).astype(jnp.float32),
        **sgd_metrics,
    }
