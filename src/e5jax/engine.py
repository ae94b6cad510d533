"""The engine: every seed at once, in host-visible chunks.

``make_train(method, cfg, eval_every)`` builds pure functions, each ``jit(vmap(...))`` over a leading row axis
(a run: seeds; a sweep: trials x seeds), with the environment as a broadcast traced input and ``env_rows``
(optional, {env field: [S] values}, e.g. ``{"lam": ...}``) as per-row overrides of it (``row_env``): a sweep varies
an env parameter across rows without it entering the method's state:

* ``init(keys, env, hp=None) -> states``: ``hp`` ({name: [S] values}, optional) overrides the state's traced
  hyperparameters row by row;
* ``chunk(states, keys, env, env_rows=None) -> (states, metrics)``: ``eval_every`` updates in one ``lax.scan``,
  then the greedy policy evaluated on the val split at every budget, inside the same compiled program;
* ``chunk_eval(states, keys, env, eval_mask, env_rows=None) -> (states, metrics)``: the same updates, with the
  evaluation inside the scan under ``lax.cond(eval_mask[u])`` after update u (the mask is broadcast, not per row,
  so the cond stays a branch under vmap) and always after the last one. One compiled program serves every mask:
  the run uses it with log-spaced points in the first chunk (1, 2, 4, ... updates) and the last update only
  afterwards. ``metrics["eval_points"]`` holds every update's evaluation (NaN where the mask is off),
  ``metrics["env_steps_per_update"]`` each update's env steps; ``metrics["eval"]`` is the last update's;
* ``evaluate(states, env, env_rows=None) -> eval metrics`` (used once, before training).

The engine never branches on the method: it only calls the record's ``init``/``update``/``policy`` and reads its
``cumulative`` metric names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from e5jax import env as E

def evaluate(env: E.EnvParams, pol) -> dict:
    """Greedy metrics per budget plus the exact expected utility of the sampled (stochastic) policy, and the greedy
    configs themselves (``actions`` [B, Rv] int32: every val request's choice, from which the host recomputes any
    per-request metric for the request-level bootstrap, ``e5jax.decide``)."""
    req, budget = E.eval_grid(env)
    bidx = jnp.broadcast_to(jnp.arange(env.budgets.shape[0])[:, None], req.shape)
    if hasattr(pol, "greedy_grid"):  # a deterministic controller with a cheaper whole-grid path (policy.KNNPolicy)
        actions = pol.greedy_grid(env)
        probs = jax.nn.one_hot(actions, env.num_configs)
    else:
        actions = pol.greedy(env, req, budget, bidx)
        probs = pol.probs(env, req, budget, bidx)
    out = E.evaluate_actions(env, actions)
    out["utility_sampled"] = E.expected_utility(env, probs)
    out["actions"] = actions.astype(jnp.int32)
    return out


@dataclasses.dataclass(frozen=True)
class Trainer:
    init: Callable  # (keys, env, hp=None) -> states: ``shared`` then ``init_program``
    chunk: Callable
    evaluate: Callable
    chunk_eval: Callable | None = None
    init_program: Callable | None = None  # jit: (keys, env, hp, shared) -> states
    shared: Callable | None = None  # (keys, env) -> the rows' part computed by a program shared between methods
    label: str | None = None  # what the programs close over (method, config, eval_every): the trace cache's key


def with_hp(state, hp: dict | None):
    """The state with traced hyperparameters ``hp`` set (unknown names are an error: nothing would read them)."""
    if not hp:
        return state
    own = dict(getattr(state, "hp", None) or {})
    unknown = sorted(set(hp) - set(own))
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a traced hyperparameter of this method (traced: "
                         f"{', '.join(sorted(own)) or 'none'})")
    return state.replace(hp={**own, **{k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}})


def row_env(env: E.EnvParams, env_rows: dict | None) -> E.EnvParams:
    """The environment as one row sees it: ``env`` with the row's overrides (``{field: value}``, e.g. its overshoot
    penalty ``lam``)."""
    return env.replace(**env_rows) if env_rows else env


def map_rows(f: Callable, *rows):
    """``f`` over the leading (row) axis of ``rows``: ``vmap``, but one row at a time (``lax.map``, the same values
    bit for bit) on the CPU. Used for initialisation: a vmapped orthogonal init is a batched LAPACK QR that jaxlib
    splits into chunks on XLA's CPU intra-op pool and waits for from a thread of that pool, which deadlocked whenever
    every pool thread was such a QR (80 rows, PPO at 64 rows, 4 fake devices, several threads: docs/hangs.md); with
    one row per call it runs inline."""
    if jax.default_backend() == "cpu":
        return jax.lax.map(lambda r: f(*r), rows)
    return jax.vmap(f)(*rows)


def make_train(method, cfg: Any, eval_every: int) -> Trainer:
    cumulative = method.cumulative

    def init_one(key, env, hp, shared):
        return with_hp(method.init(key, env, cfg) if shared is None else method.init(key, env, cfg, shared), hp)

    init_program = jax.jit(lambda keys, env, hp=None, shared=None:
                           map_rows(lambda k, h, s: init_one(k, env, h, s), keys, hp, shared))

    def shared(keys, env):
        return None if method.shared_init is None else method.shared_init(keys, env, cfg)

    def init(keys, env, hp=None):
        # part of a method's initial state (the learned methods' initial policy) can come from one program shared
        # by every method that needs the same values (Method.shared_init): compiled once per run, not per method
        return init_program(keys, env, hp, shared(keys, env))

    def chunk_one(state, key, env, env_rows):
        env = row_env(env, env_rows)

        def body(s, k):
            return method.update(s, env, k)

        state, m = jax.lax.scan(body, state, jax.random.split(key, eval_every))
        train = {k: (v[-1] if k in cumulative else v.mean()) for k, v in m.items()}
        train["env_steps"] = m["env_steps"].sum()
        return state, {"train": train, "eval": evaluate(env, method.policy(state))}

    def eval_one(state, env):
        return evaluate(env, method.policy(state))

    def eval_row(state, env, env_rows):
        return eval_one(state, row_env(env, env_rows))

    def chunk_eval_one(state, key, env, eval_mask, env_rows):
        env = row_env(env, env_rows)

        def blank(s):
            shapes = jax.eval_shape(eval_one, s, env)  # NaN where not evaluated (-1 for the integer actions)
            return jax.tree_util.tree_map(
                lambda x: jnp.full(x.shape, jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else -1, x.dtype), shapes)

        def body(s, xs):
            k, do = xs
            s, m = method.update(s, env, k)
            ev = jax.lax.cond(do, lambda s_: eval_one(s_, env), blank, s)
            return s, (m, ev)

        mask = jnp.asarray(eval_mask, bool).at[-1].set(True)
        state, (m, evs) = jax.lax.scan(body, state, (jax.random.split(key, eval_every), mask))
        train = {k: (v[-1] if k in cumulative else v.mean()) for k, v in m.items()}
        train["env_steps"] = m["env_steps"].sum()
        return state, {"train": train, "eval": jax.tree_util.tree_map(lambda x: x[-1], evs), "eval_points": evs,
                       "env_steps_per_update": m["env_steps"]}

    return Trainer(
        init=init,
        chunk=jax.jit(lambda states, keys, env, env_rows=None: jax.vmap(chunk_one, in_axes=(0, 0, None, 0))(
            states, keys, env, env_rows)),
        evaluate=jax.jit(lambda states, env, env_rows=None: jax.vmap(eval_row, in_axes=(0, None, 0))(
            states, env, env_rows)),
        chunk_eval=jax.jit(lambda states, keys, env, eval_mask, env_rows=None: jax.vmap(
            chunk_eval_one, in_axes=(0, 0, None, None, 0))(states, keys, env, eval_mask, env_rows)),
        init_program=init_program,
        shared=shared,
        label=repr((method.name, cfg, eval_every)),
    )


def early_eval_mask(eval_every: int, first_chunk: bool) -> np.ndarray:
    """[eval_every] bool: evaluate after updates 1, 2, 4, 8, ... (< eval_every) in the first chunk; the last update
    of every chunk is always evaluated (chunk_eval forces it)."""
    mask = np.zeros(eval_every, bool)
    if first_chunk:
        u = 1
        while u < eval_every:
            mask[u - 1] = True
            u *= 2
    mask[-1] = True
    return mask


def seed_keys(base_seed: int, num_seeds: int) -> jax.Array:
    """Seed i's key depends only on (base_seed, i): adding seeds never changes the others' results."""
    root = jax.random.PRNGKey(base_seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(num_seeds))
    return shard_seeds(keys)


def shard_seeds(x):
    """Shard the seed axis over all devices when there are several and the axis divides evenly."""
    devs = jax.devices()
    if len(devs) <= 1 or x.shape[0] % len(devs):
        return x
    mesh = jax.sharding.Mesh(devs, ("seeds",))
    return jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds")))


@jax.jit
def _chunk_keys(keys: jax.Array, chunk_index: jax.Array) -> jax.Array:
    return jax.vmap(lambda k: jax.random.fold_in(k, chunk_index + 1))(keys)


def chunk_keys(keys: jax.Array, chunk_index: int) -> jax.Array:
    """Every row's key for chunk ``chunk_index`` (one compiled program for every chunk)."""
    return _chunk_keys(keys, jnp.asarray(chunk_index, jnp.int32))
