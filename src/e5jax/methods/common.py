"""What every method shares: the method record, traced hyperparameters, and the learners' common pieces.

Every method is a ``Method`` record (``methods/__init__.py`` registers them, one line each): two named phases,
``collect(state, env, keys) -> batch`` (rollouts, groups, pairs, labels, profiled cells) and
``learn(state, env, batch, key) -> (state, metrics)``, composed into the update here, once. The update's key is
split once (``Method.keys`` subkeys): ``collect`` gets the tuple, ``learn`` the last one.

A config field declared with ``traced(...)`` is a traced hyperparameter (its valid range and its search range on
the field): it lives in the state (``state.hp``, float32 scalars), so one compiled program serves every value and
a sweep vmaps it alongside seeds; every other config field is static (changing it recompiles).

Same trunk and heads (``MLP``), same initialisation (the policy is initialised from the same key split in every
learned method), same optimizer (``optax.chain(clip_by_global_norm, adam)`` inside ``apply_if_finite``: a
non-finite update is skipped and counted, never applied), same env steps per update and the same number of
gradient steps (``epochs x minibatches``) on minibatches of the same size.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct

from e5jax import env as E
from e5jax import policy as P
from e5jax.engine import map_rows


# ----------------------------------------------------------------------------- traced hyperparameters
def traced(default: float, *, low: float = 0.0, low_open: bool = False, high: float = math.inf,
           search: tuple[float, float], scale: str) -> Any:
    """A config field that is a traced hyperparameter: valid values in ``[low, high]`` (``(low, high]`` with
    ``low_open``), the default search range ``search`` drawn on a ``scale`` of "log" or "linear" (a sweep spec's
    ``[space.<method>]`` replaces it)."""
    if scale not in ("log", "linear"):
        raise ValueError(f"scale must be log or linear, got {scale!r}")
    return dataclasses.field(default=default, metadata={"traced": True, "low": low, "low_open": low_open,
                                                        "high": high, "search": tuple(search), "scale": scale})


def traced_fields(cls_or_cfg) -> dict:
    """{name: metadata} of every traced field of a config class (or instance), in declaration order; {} for a
    config with none (or that is not a dataclass)."""
    if not dataclasses.is_dataclass(cls_or_cfg):
        return {}
    return {f.name: f.metadata for f in dataclasses.fields(cls_or_cfg) if f.metadata.get("traced")}


def traced_names(cfg) -> tuple:
    """The hyperparameters this static config traces: its traced fields, less any the config compiles out
    (``cfg.compiled_out()``, e.g. GRPO's beta when its static beta is 0)."""
    out = set(cfg.compiled_out()) if hasattr(cfg, "compiled_out") else set()
    return tuple(k for k in traced_fields(cfg) if k not in out)


def traced_hp(cfg) -> dict:
    """The config's traced hyperparameters (``traced_names``) as float32 scalars: the state's ``hp``."""
    return {k: jnp.asarray(getattr(cfg, k), jnp.float32) for k in traced_names(cfg)}


def in_domain(meta: Mapping, v: float) -> bool:
    """Whether ``v`` is a valid value of a traced field (its metadata)."""
    lo_ok = v > meta["low"] if meta["low_open"] else v >= meta["low"]
    return lo_ok and v <= meta["high"]


def domain_text(meta: Mapping) -> str:
    """The valid range of a traced field, as a user reads it: "> 0", ">= 0", "in [0, 0.49]"."""
    lo = f"{meta['low']:g}"
    if math.isinf(meta["high"]):
        return ("> " if meta["low_open"] else ">= ") + lo
    return ("(" if meta["low_open"] else "[") + f"{lo}, {meta['high']:g}]"


# ----------------------------------------------------------------------------- the method record
def compose(collect: Callable, learn: Callable, keys: int) -> Callable:
    """``update(state, env, key)``: ``learn(state, env, collect(state, env, ks), ks[-1])`` with
    ``ks = split(key, keys)``, every method's update."""

    def update(state, env, key):
        ks = tuple(jax.random.split(key, keys))
        return learn(state, env, collect(state, env, ks), ks[-1])

    return update


@dataclasses.dataclass(frozen=True)
class Method:
    """Everything the lab asks of a method. The engine, run, sweep, overhead analysis, export, report and figures
    read a method only through this record.

    ``collect(state, env, keys)`` gets the ``keys`` subkeys of the update's key and ``learn(state, env, batch,
    key)`` the last of them (``compose``). ``learn_without``: {part: learn variant without that part} for the
    overhead breakdown (PPO: the critic); ``seed_columns``: {column: (overhead pieces summed,)} for the seed's
    overhead table; ``cumulative``: per-update metrics that are running totals (a chunk reports the last value, not
    the mean); ``finite_data``: its env steps stop growing once the train split is labelled or profiled;
    ``decision_baseline``: the decision latencies of the others are reported as ratios to this method's;
    ``color``: its palette index in the figures (None: the next free one); ``versus``: (other method, the reason
    the seed expects this one to be cheaper) — the seed's expected findings compare the two;
    ``static_for(cfg, settings)``: the static config for sweep rows with these traced settings;
    ``check(cfg)``: a config problem as one line (None when fine); ``shared_init(keys, env, cfg)``: the rows' part
    of the initial state that methods share (computed by one program for all of them), passed to
    ``init(key, env, cfg, shared)`` row by row (the learned methods: ``policy_params_for_rows``)."""

    name: str
    Config: type
    init: Callable
    collect_phase: Callable
    learn_phase: Callable
    policy: Callable
    steps_per_update: Callable
    keys: int
    learn_without: Mapping[str, Callable] = dataclasses.field(default_factory=dict)
    seed_columns: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
    cumulative: tuple = ("num_failed_updates",)
    finite_data: bool = False
    decision_baseline: bool = False
    color: int | None = None
    versus: tuple | None = None
    static_for: Callable | None = None
    check: Callable | None = None
    shared_init: Callable | None = None

    def collect(self, state, env, key):
        """The collect phase from the update's key (the subkeys it gets inside ``update``)."""
        return self.collect_phase(state, env, tuple(jax.random.split(key, self.keys)))

    def learn(self, state, env, batch, key):
        """The learn phase from the update's key (the subkey it gets inside ``update``)."""
        return self.learn_phase(state, env, batch, jax.random.split(key, self.keys)[-1])

    def without(self, part: str) -> Callable:
        """``learn`` without ``part`` (a ``learn_without`` entry), from the update's key."""
        fn = self.learn_without[part]
        return lambda state, env, batch, key: fn(state, env, batch, jax.random.split(key, self.keys)[-1])

    @functools.cached_property
    def update(self) -> Callable:
        """``compose(collect_phase, learn_phase, keys)``, built once per record (the same function object every
        time: jit caches on it)."""
        return compose(self.collect_phase, self.learn_phase, self.keys)

    @property
    def traced(self) -> dict:
        """{name: metadata} of the config's traced hyperparameters (``traced_fields``)."""
        return traced_fields(self.Config)


def check_config(method: Method, cfg) -> str | None:
    """A config problem of ``method`` as one line, or None: every traced hyperparameter inside its valid range, the
    learner checks, then the method's own."""
    for k, meta in traced_fields(cfg).items():
        v = getattr(cfg, k)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and in_domain(meta, v)):
            dom = domain_text(meta)
            return f"{k} must be {'in ' if dom[0] in '[(' else ''}{dom}, got {v!r}"
    if isinstance(cfg, LearnerConfig):
        if cfg.head not in P.HEADS:
            return f"head must be one of {', '.join(P.HEADS)}, got {cfg.head!r}"
        if cfg.env_steps_per_update % cfg.minibatches:
            return "env_steps_per_update must be divisible by minibatches"
    return method.check(cfg) if method.check else None


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    env_steps_per_update: int = 256
    hidden: tuple = (128, 64)
    head: str = "factored"  # factored | joint | autoregressive (policy.HEADS; docs/methods.md)
    lr: float = traced(3e-4, low_open=True, search=(3e-5, 1e-2), scale="log")
    adam_eps: float = 1e-5
    max_grad_norm: float = 0.5
    epochs: int = 4
    minibatches: int = 4

    @property
    def head_kind(self) -> str:
        return P.check_head(self.head)


def make_optimizer(cfg: LearnerConfig, lr) -> optax.GradientTransformation:
    """``lr``: the (traced) learning rate, ``state.hp["lr"]``; Adam's state does not depend on it."""
    inner = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr, eps=cfg.adam_eps))
    # skip every non-finite update (count them); never fall through to applying one
    return optax.apply_if_finite(inner, max_consecutive_errors=2**30)


def num_failed_updates(opt_state) -> jax.Array:
    """Skipped non-finite updates so far (0 for an optimizer without ``apply_if_finite``, e.g. a benchmark variant)."""
    n = getattr(opt_state, "total_notfinite", None)
    return jnp.zeros((), jnp.int32) if n is None else n


# ----------------------------------------------------------------------------- benchmark variants
@dataclasses.dataclass(frozen=True)
class Program:
    """Replacements for the shared pieces of an update, for benchmarks only (experiments/bench_roofline.py): set
    with ``variant(program)`` around the tracing of a fresh program; the lab traces under ``Program()`` (all None).
    ``optimizer(cfg)``: like ``make_optimizer`` (re-init ``opt_state`` with it); ``sgd``: like ``sgd_epochs``;
    ``metrics``: like ``standard_metrics``; ``kl``: like ``policy.kl``, for the KL metric."""

    optimizer: Callable | None = None
    sgd: Callable | None = None
    metrics: Callable | None = None
    kl: Callable | None = None


_PROGRAM: contextvars.ContextVar = contextvars.ContextVar("e5jax_program", default=Program())


@contextlib.contextmanager
def variant(program: Program):
    """Trace the update with ``program``'s pieces inside this block (jit traces a new function on its first call or
    ``lower``: build the jitted function fresh for each variant)."""
    token = _PROGRAM.set(program)
    try:
        yield
    finally:
        _PROGRAM.reset(token)


# ----------------------------------------------------------------------------- learner state
def init_policy_params(key, env: E.EnvParams, cfg: LearnerConfig):
    """The policy every learned method starts from: identical for the same seed key."""
    sizes = P.head_sizes(env, cfg.head_kind)
    params = P.MLP(cfg.hidden, sizes, ar=P.ar_sizes(env, cfg.head_kind)).init(key, jnp.zeros((1, env.obs_dim)))
    return params, sizes


@functools.lru_cache(maxsize=None)
def _policy_init_program(hidden: tuple, sizes: tuple, ar: tuple, obs_dim: int):
    def one(key):  # the policy key exactly as ``init_learner`` splits it
        return P.MLP(hidden, sizes, ar=ar).init(jax.random.split(key)[0], jnp.zeros((1, obs_dim)))

    return jax.jit(lambda keys: map_rows(one, keys))


def policy_params_for_rows(keys: jax.Array, env: E.EnvParams, cfg: LearnerConfig):
    """[N] rows' initial policy parameters, the values ``init_learner`` draws from each row's key, from one compiled
    program shared by every learned method with the same network and heads (``Method.shared_init``): the policy's
    init is compiled once per run, not once per method."""
    sizes = P.head_sizes(env, cfg.head_kind)
    return _policy_init_program(tuple(cfg.hidden), tuple(sizes), tuple(P.ar_sizes(env, cfg.head_kind)),
                                int(env.obs_dim))(keys)


@struct.dataclass
class LearnerState:
    params: Any  # trainable parameters (policy, or {"actor", "critic"} for PPO)
    ref_params: Any  # the initial policy (reference for KL / DPO)
    opt_state: Any
    step: jax.Array
    extra: Any = None  # method-specific state (e.g. supervised's labelled set)
    hp: Any = None  # traced hyperparameters {name: f32 scalar}: the config's traced fields (their one home)
    cfg: Any = struct.field(pytree_node=False, default=None)
    sizes: tuple = struct.field(pytree_node=False, default=())
    ar: tuple = struct.field(pytree_node=False, default=())  # knob sizes of an autoregressive head, else ()


def init_learner(key, env, cfg: LearnerConfig, make_params: Callable | None = None, extra=None,
                 policy_params=None) -> LearnerState:
    """The learner state every learned method starts from (``make_params(policy_params, key, sizes)``: the
    trainable parameters built around the policy, e.g. PPO's actor and critic). ``policy_params``: the row's
    initial policy when computed outside (``policy_params_for_rows``: the same values), else drawn here."""
    k_pol, k_other = jax.random.split(key)
    if policy_params is None:
        policy_params, sizes = init_policy_params(k_pol, env, cfg)
    else:
        sizes = P.head_sizes(env, cfg.head_kind)
    params = policy_params if make_params is None else make_params(policy_params, k_other, sizes)
    hp = traced_hp(cfg)
    return LearnerState(
        params=params,
        ref_params=policy_params,
        opt_state=make_optimizer(cfg, hp["lr"]).init(params),
        step=jnp.zeros((), jnp.int32),
        extra=extra,
        hp=hp,
        cfg=cfg,
        sizes=sizes,
        ar=P.ar_sizes(env, cfg.head_kind),
    )


def policy_logits(state: LearnerState, params, obs):
    return P.MLP(state.cfg.hidden, state.sizes, ar=state.ar).apply(params, obs)


def mlp_policy(state: LearnerState, params) -> P.MLPPolicy:
    return P.MLPPolicy(params, state.cfg.hidden, state.sizes, ar=state.ar)


def init_policy(key, env: E.EnvParams, cfg: LearnerConfig, policy_params=None) -> LearnerState:
    """``init`` of a method whose trainable parameters are the policy alone (DPO, GRPO)."""
    return init_learner(key, env, cfg, policy_params=policy_params)


def policy(state: LearnerState) -> P.MLPPolicy:
    """``policy`` of a method whose trainable parameters are the policy alone."""
    return mlp_policy(state, state.params)


def group_steps(cfg, env: E.EnvParams) -> int:
    """``steps_per_update`` of a group-sampling method: whole groups of ``cfg.group_size`` within the env steps."""
    return (cfg.env_steps_per_update // cfg.group_size) * cfg.group_size


def check_group_size(cfg) -> str | None:
    return None if cfg.group_size >= 2 else \
        f"group_size must be >= 2 (samples compared per request), got {cfg.group_size}"


def clipped_surrogate(logp, logp_old, adv, clip_eps):
    """The clipped-ratio policy-gradient loss of PPO and GRPO, per sample: ``-min(ratio A, clip(ratio) A)``, with
    the ratio's diagnostics (``clipfrac``, ``approx_kl``)."""
    ratio = jnp.exp(logp - logp_old)
    clipped = jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps)
    pg = -jnp.minimum(ratio * adv, clipped * adv)
    return pg, {"clipfrac": jnp.mean(jnp.abs(ratio - 1) > clip_eps),
                "approx_kl": jnp.mean((ratio - 1) - jnp.log(ratio))}


# ----------------------------------------------------------------------------- labelling (supervised, knn_lut)
def labelling_order(key, env: E.EnvParams) -> jax.Array:
    """[Rt] the train requests in the order a labelling method profiles them (from a fold of the seed key, so the
    policy's initialisation is unaffected)."""
    return jax.random.permutation(jax.random.fold_in(key, 1), env.train_idx)


def requests_per_update(cfg, env: E.EnvParams) -> int:
    """Requests a labelling method profiles per update (every config: C env steps each)."""
    return max(1, cfg.env_steps_per_update // env.num_configs)


def labelling_steps(cfg, env: E.EnvParams) -> int:
    """``steps_per_update`` of a labelling method."""
    return requests_per_update(cfg, env) * env.num_configs


def next_requests(order: jax.Array, done: jax.Array, m: int):
    """The next ``m`` positions after ``done`` in ``order``: (requests, valid, rows, done after). ``rows`` is out
    of range (dropped by ``.at[rows].set(..., mode="drop")``) for positions past the end of the train split."""
    Rt = order.shape[0]
    pos = done + jnp.arange(m)
    valid = pos < Rt
    return order[jnp.minimum(pos, Rt - 1)], valid, jnp.where(valid, pos, Rt), jnp.minimum(done + m, Rt)


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
    program = _PROGRAM.get()
    if program.sgd is not None:
        return program.sgd(key, state, batch, loss_fn, num_items)
    cfg = state.cfg
    tx = program.optimizer(cfg) if program.optimizer else make_optimizer(cfg, state.hp["lr"])
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
    program = _PROGRAM.get()
    if program.metrics is not None:
        return program.metrics(state, policy_params, obs, train_utility, env_steps, sgd_metrics)
    logits = policy_logits(state, policy_params, obs)
    ref = policy_logits(state, state.ref_params, obs)
    return {
        "train_utility": train_utility,
        "env_steps": jnp.asarray(env_steps, jnp.float32),
        "entropy": P.entropy(logits).mean(),
        "kl_ref": (program.kl or P.kl)(logits, ref).mean(),
        "num_failed_updates": num_failed_updates(state.opt_state).astype(jnp.float32),
        **sgd_metrics,
    }
