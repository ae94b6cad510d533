"""Overhead accounting (issue #4): eager per-request decision time and the training-cost breakdown.

After the run's training (the timing programs compiled ahead of time with the training programs:
``compile_components``), for each method ``analyze_method``:

1. exports every seed's controller (``e5jax.export``) to ``<out>/controllers/<method>_seed<i>.npz`` (+ ``.json``);
2. checks that the eager ``decide`` equals the vmapped greedy evaluator on every val request x evaluation budget;
3. times ``decide`` one request at a time (warm-up, then >= ``decisions`` calls over varied val requests and
   budgets, round-robin over the seeds' controllers): p50/p95/p99 ms, plus a jitted batch-1 JAX call for
   comparison (dispatch cost); at the end of the run all methods are re-timed interleaved (``Recorder.finish``);
4. times the method's named phases (``collect``, ``learn``; ``phase_components``) on the run's batch sizes (all
   seeds vmapped, as in training): each runs ``n`` times inside one compiled ``fori_loop`` (``n`` calibrated so
   one call lasts about ``target_call_s``), every program once per round for ``repeats`` rounds,
   ``block_until_ready``; the evaluation is the run's own timing of its compiled ``evaluate``; the whole is the
   run's chunk time (or, without a run, the ``update`` compiled and timed as a piece); the learning step is the
   remainder, reported "below resolution" (null) when it lies within the noise of the timings it is derived from,
   never as a negative number (``remainder``);
5. counts parameters (PPO's critic included).

``e5_overhead_analysis.json`` (schema ``e5jax/e5_overhead_analysis/v2``) is rewritten atomically after every
method. Knobs (no config section; environment variables, see docs/overhead.md): ``E5JAX_OVERHEAD=off`` skips it,
``E5JAX_OVERHEAD_DECISIONS`` (1000), ``E5JAX_OVERHEAD_WARMUP`` (200), ``E5JAX_OVERHEAD_JAX_DECISIONS`` (300),
``E5JAX_OVERHEAD_REPEATS`` (5), ``E5JAX_OVERHEAD_COMPONENTS=0`` (skip the training pieces).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e5jax import engine
from e5jax import env as E
from e5jax import export as X
from e5jax import policy as P
from e5jax.io import write_json

SCHEMA = "e5jax/e5_overhead_analysis/v2"
FILE = "e5_overhead_analysis.json"


# ----------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class Settings:
    decisions: int = 1000  # timed eager decisions per method (after warm-up)
    warmup: int = 200
    jax_decisions: int = 300  # timed jitted batch-1 JAX decisions (0: skip)
    repeats: int = 5  # timed calls per training component (median)
    target_call_s: float = 0.04  # each timed component call runs n updates, n calibrated to about this long
    components: bool = True

    @classmethod
    def from_env(cls) -> "Settings | None":
        """None when ``E5JAX_OVERHEAD`` is off/0/false; otherwise defaults overridden by E5JAX_OVERHEAD_*."""
        if os.environ.get("E5JAX_OVERHEAD", "on").strip().lower() in ("off", "0", "false", "no"):
            return None

        def geti(var, default):
            try:
                return max(0, int(os.environ.get(var, default)))
            except ValueError:
                return default

        return cls(decisions=max(1, geti("E5JAX_OVERHEAD_DECISIONS", cls.decisions)),
                   warmup=geti("E5JAX_OVERHEAD_WARMUP", cls.warmup),
                   jax_decisions=geti("E5JAX_OVERHEAD_JAX_DECISIONS", cls.jax_decisions),
                   repeats=max(1, geti("E5JAX_OVERHEAD_REPEATS", cls.repeats)),
                   components=os.environ.get("E5JAX_OVERHEAD_COMPONENTS", "1").strip().lower() not in ("off", "0", "false", "no"))


# ----------------------------------------------------------------------------- decision timing
def percentiles_ms(samples_ns: np.ndarray) -> dict:
    ms = np.asarray(samples_ns, np.float64) / 1e6
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(ms.mean()),
            "min": float(ms.min()), "max": float(ms.max()), "n": int(ms.size)}


def timer_overhead_ns(n: int = 2000) -> float:
    """Median cost of the timing itself (two perf_counter_ns calls), included in every sample."""
    t = time.perf_counter_ns
    s = np.empty(n, np.int64)
    for i in range(n):
        a = t()
        s[i] = t() - a
    return float(np.median(s))


def time_decisions(fns: Callable | Sequence[Callable], requests: Sequence[tuple], n: int = 1000,
                   warmup: int = 200) -> dict:
    """Time single-request decisions: ``warmup`` untimed calls, then ``n`` timed ones, one call per sample,
    cycling over ``requests`` (features, task_type, budget) and round-robin over ``fns`` (e.g. one per seed)."""
    fns = [fns] if callable(fns) else list(fns)
    if not fns or not requests or n < 1:
        raise ValueError("need at least one decide function, one request and n >= 1")
    R, K = len(requests), len(fns)
    for i in range(warmup):
        fns[i % K](*requests[i % R])
    t = time.perf_counter_ns
    s = np.empty(n, np.int64)
    for i in range(n):
        f, r = fns[i % K], requests[(i * 7919) % R]  # stride a prime: varied requests and budgets in turn
        a = t()
        f(*r)
        s[i] = t() - a
    out = percentiles_ms(s)
    out["warmup"] = int(warmup)
    return out


def time_decisions_interleaved(fns: dict, requests: Sequence[tuple], n: int = 1000, warmup: int = 200,
                               block: int = 50) -> dict:
    """Several methods in one run, alternating blocks of ``block`` decisions (method order rotated every round)
    so that machine noise hits them alike (for ratios). ``fns``: {name: callable or list of callables}.
    Returns {name: percentiles}."""
    fl = {k: ([v] if callable(v) else list(v)) for k, v in fns.items()}
    R = len(requests)
    for k, fs in fl.items():
        for i in range(warmup):
            fs[i % len(fs)](*requests[i % R])
    t = time.perf_counter_ns
    samples = {k: [] for k in fl}
    done, order = 0, list(fl)
    while done < n:
        m = min(block, n - done)
        order = order[1:] + order[:1]  # rotate: no method always follows the same one
        for k in order:
            fs = fl[k]
            s = samples[k]
            K = len(fs)
            for j in range(done, done + m):
                f, r = fs[j % K], requests[(j * 7919) % R]
                a = t()
                f(*r)
                s.append(t() - a)
        done += m
    out = {}
    for k, s in samples.items():
        out[k] = percentiles_ms(np.asarray(s))
        out[k]["warmup"] = int(warmup)
    return out


# ----------------------------------------------------------------------------- eager == vmapped
def check_agreement(controllers: Sequence, method, states, table, env: E.EnvParams) -> dict:
    """Eager decisions vs the vmapped greedy evaluator on every val request x evaluation budget, every seed."""
    ref = X.vmapped_greedy(method, states, env)  # [S, B, Rv]
    reqs = X.val_requests(table, env)
    per_seed, mism = [], 0
    for c in controllers:
        eager = X.eager_decisions(c, reqs)
        same = eager == ref[c.seed].reshape(-1)
        per_seed.append(float(same.mean()))
        mism += int((~same).sum())
    n = len(reqs) * len(controllers)
    return {"fraction": float(1.0 - mism / n), "decisions_compared": int(n), "mismatches": int(mism),
            "per_seed": per_seed, "grid": "every val request x every evaluation budget"}


# ----------------------------------------------------------------------------- training components
@dataclasses.dataclass(frozen=True)
class Component:
    """One piece of a method's update, for one seed: ``step(state, carry, env, key, fixed) -> (carry, checksum)``.

    * generation pieces ignore ``carry`` and return the batch they generate as the new carry (``feeds=True``: the
      last batch becomes ``fixed`` input of the later pieces, exactly as inside ``method.update``);
    * update pieces carry the learner state (``init(state, env, fixed) -> carry``; default: the state itself).
    ``per``: runs once per ``update`` or once per ``chunk`` (evaluation). ``dep``: inputs made loop-dependent
    (``state`` / ``fixed``) for pieces whose work would otherwise be loop-invariant (and hoisted by XLA).
    """

    name: str
    step: Callable
    init: Callable | None = None
    per: str = "update"
    feeds: bool = False
    dep: tuple = ()
    what: str = ""


def _checksum(tree) -> jax.Array:
    leaves = [jnp.sum(x.astype(jnp.float32)) for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "dtype")]
    return jnp.nan_to_num(sum(leaves) if leaves else jnp.zeros(()))


def _gen(fn, name: str, what: str, dep: tuple = ()) -> Component:
    """A generation piece: ``fn(state, env, key, fixed) -> batch``."""

    def step(state, carry, env, key, fixed):
        batch = fn(state, env, key, fixed)
        return batch, _checksum(batch)

    return Component(name, step, None, feeds=True, dep=dep, what=what)


def _upd(fn, name: str, what: str, init=None) -> Component:
    """An update piece: ``fn(carry, env, key, fixed) -> (carry, scalar)``."""
    return Component(name, lambda state, carry, env, key, fixed: fn(carry, env, key, fixed),
                     init or (lambda state, env, fixed: state), what=what)


def _doc(fn) -> str:
    return (getattr(fn, "__doc__", None) or "").strip().split("\n\n")[0].replace("\n", " ")


def phase_components(method) -> list[Component]:
    """The pieces timed apart, from the method's own named phases as compiled in training: ``collect`` (its batch
    feeds the rest) and, for a method with ``LEARN_WITHOUT = {part: learn variant without that part}`` (PPO: the
    critic), each variant. ``learn`` itself is derived: whole update - collect (the update is their composition),
    which saves compiling it apart. A method missing a phase is an error."""
    missing = [p for p in ("collect", "learn") if not callable(getattr(method, p, None))]
    if missing:
        raise TypeError(f"{method.__name__} has no {missing[0]}() phase (every method is collect + learn)")
    comps = [_gen(lambda state, env, key, fixed: method.collect(state, env, key), "collect", _doc(method.collect))]
    for part, fn in getattr(method, "LEARN_WITHOUT", {}).items():
        comps.append(_upd(lambda st, env, key, f, fn=fn: (lambda r: (r[0], _checksum(r[1])))(fn(st, env, f, key)),
                          f"learn_without_{part}", f"learn() without the {part}"))
    return comps


EVALUATION = Component("evaluation", None, per="eval point",
                       what="greedy evaluation on the val split at every budget (the run's compiled evaluate)")


def compile_components(method, states, env: E.EnvParams, comps: Sequence[Component] | None = None) -> dict:
    """Lower and compile the timing programs of ``comps`` (default ``phase_components``) for these states' shapes,
    executing nothing (so it can run in a compile thread while the main thread trains). A generation piece's
    batch shape, from ``jax.eval_shape``, is the ``fixed`` input of the pieces after it. Returns {name: compiled}."""
    key, zero = jax.random.PRNGKey(123), jnp.zeros(())
    fixed, out = {}, {}
    for comp in (phase_components(method) if comps is None else comps):
        f = _program(comp)
        out[comp.name] = f.lower(states, fixed, key, 1, zero, env).compile()
        if comp.feeds:
            carry = jax.eval_shape(f, states, fixed, key, 1, zero, env)[0]
            fixed = {**fixed, **carry}
    return out


def timing_signature(method, states) -> tuple:
    """What decides ``compile_components``' programs: the phase functions (``collect`` and every ``LEARN_WITHOUT``
    variant, by identity) and the states' structure (static config included) and leaf shapes and dtypes."""
    phases = (method.collect, *getattr(method, "LEARN_WITHOUT", {}).items())
    leaves, treedef = jax.tree_util.tree_flatten(states)
    return phases, treedef, tuple((x.shape, str(x.dtype)) for x in leaves)


def _program(comp: Component):
    """jit(fori_loop(n x vmap(step))) with a traced trip count: one compile serves every n. For ``dep`` inputs a
    runtime zero times the running checksum is added to every float leaf each iteration (loop-carried, so XLA
    cannot hoist the piece out of the loop)."""

    def run(states, fixed, key, n, zero, env):
        S = jax.tree_util.tree_leaves(states)[0].shape[0]
        if comp.init is not None:
            carry = jax.vmap(lambda s, f: comp.init(s, env, f))(states, fixed)
        else:
            shape = jax.eval_shape(lambda s, f: jax.vmap(lambda s1, f1: comp.step(s1, None, env, key, f1)[0])(s, f),
                                   states, fixed)
            carry = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shape)

        def dep(tree, acc):
            return jax.tree_util.tree_map(
                lambda x: x + (zero * acc).astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

        def body(i, c):
            carry, acc = c
            s = dep(states, acc) if "state" in comp.dep else states
            f = dep(fixed, acc) if "fixed" in comp.dep else fixed
            keys = jax.random.split(jax.random.fold_in(key, i), S)
            carry, chk = jax.vmap(lambda s1, c1, k1, f1: comp.step(s1, c1, env, k1, f1))(s, carry, keys, f)
            return carry, acc + jnp.nan_to_num(jnp.sum(chk))

        return jax.lax.fori_loop(0, n, body, (carry, jnp.zeros(())))

    return jax.jit(run)


_PROGRAMS: dict = {}


def _calibrate(comp: Component, states, fixed, env, target_call_s: float, max_n: int = 10_000, cache_key=None,
               program=None):
    """Compile (or load; ``program``: compiled ahead of time), warm up and pick n so one call lasts about
    ``target_call_s``. Returns (call(seed) -> seconds per iteration, n, first-call seconds, the piece's last carry)."""
    if program is not None:
        f = program
    elif cache_key is not None and cache_key in _PROGRAMS:
        f = _PROGRAMS[cache_key]
    else:
        f = _program(comp)
        if cache_key is not None:
            _PROGRAMS[cache_key] = f
    key = jax.random.PRNGKey(123)
    zero = jnp.zeros(())
    t0 = time.perf_counter()
    jax.block_until_ready(f(states, fixed, key, 1, zero, env))  # compile (or cache load) + warm-up
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(f(states, fixed, key, 1, zero, env))
    t1 = time.perf_counter() - t0
    n = int(min(max_n, max(1, math.ceil(target_call_s / max(t1, 1e-7)))))
    carry, _ = jax.block_until_ready(f(states, fixed, key, n, zero, env))  # warm-up at n

    def call(r: int) -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(f(states, fixed, jax.random.fold_in(key, r + 1), n, zero, env))
        return (time.perf_counter() - t0) / n

    return call, n, first_s, carry


def _calibrate_call(fn, args, target_call_s: float, max_n: int = 1000):
    """Like ``_calibrate`` for an already compiled program ``fn(*args)`` (the run's own evaluation): n calls in a
    row so one timing lasts about ``target_call_s``. Returns (call(round) -> seconds per call, n, first-call s)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    n = int(min(max_n, max(1, math.ceil(target_call_s / max(time.perf_counter() - t0, 1e-7)))))

    def call(r: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            out = fn(*args)
        jax.block_until_ready(out)
        return (time.perf_counter() - t0) / n

    return call, n, first_s


def _summary_ms(per_s) -> dict:
    per = np.asarray(per_s) * 1e3
    return {"median_ms": float(np.median(per)), "p25_ms": float(np.percentile(per, 25)),
            "p75_ms": float(np.percentile(per, 75)), "min_ms": float(per.min()), "max_ms": float(per.max())}


# ----------------------------------------------------------------------------- resolution
def timing(samples_s, count: int = 1) -> dict:
    """Repeated timings of one piece (seconds per call, one sample per repeat) as seconds over ``count`` calls:
    ``value_s`` = median x count, ``spread_s`` = interquartile range x count (its noise), p25/p75/min/max x count."""
    a = np.asarray(samples_s, np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("no timings")
    p25, p50, p75 = np.percentile(a, [25, 50, 75])
    c = float(count)
    return {"value_s": c * float(p50), "spread_s": c * float(p75 - p25), "p25_s": c * float(p25),
            "p75_s": c * float(p75), "min_s": c * float(a.min()), "max_s": c * float(a.max()), "repeats": int(a.size),
            "count": int(count)}


def resolve(value_s: float, resolution_s: float) -> dict:
    """The below-resolution rule for a derived piece (a difference of timings): resolved when its value exceeds its
    resolution (the noise of the timings it comes from, >= 0); otherwise ``value_s`` is None and ``below_resolution``
    True. A derived time is never reported negative."""
    r = max(float(resolution_s), 0.0)
    ok = bool(np.isfinite(value_s) and value_s > r)
    return {"value_s": float(value_s) if ok else None, "below_resolution": not ok, "resolution_s": r}


def remainder(whole: dict, parts: Sequence[dict]) -> dict:
    """``whole - sum(parts)`` of ``timing``-like dicts ({value_s, spread_s}) under ``resolve``: its resolution is the
    whole's spread plus every part's."""
    d = whole["value_s"] - sum(p["value_s"] for p in parts)
    return resolve(d, whole["spread_s"] + sum(p["spread_s"] for p in parts))


def chunks_whole(chunk_s) -> dict:
    """The run's training chunks as one whole: ``value_s`` = their sum (measured once: what the run took);
    ``spread_s`` = chunks x the interquartile range of the chunk times after the first (those do the same work:
    ``eval_every`` updates and one evaluation), i.e. how far load changes during the run move it (0 with fewer than
    3 chunks: nothing to estimate it from)."""
    c = np.asarray(chunk_s, np.float64).reshape(-1)
    rest = c[1:]
    spread = c.size * float(np.subtract(*np.percentile(rest, [75, 25]))) if rest.size >= 2 else 0.0
    return {"value_s": float(c.sum()), "spread_s": spread, "count": int(c.size), "repeats": 1,
            "what": "the run's training chunks (updates and the val evaluations inside them), summed"}


def time_evaluation(evaluate: Callable, states, env: E.EnvParams, repeats: int = 5, target_call_s: float = 0.04) -> dict:
    """Per-call seconds of the compiled ``evaluate(states, env)`` (the run's greedy val evaluation, all rows):
    after a warm-up call, ``repeats`` samples, each the mean of n back-to-back calls (n calibrated so a sample lasts
    about ``target_call_s``; dispatch overlaps execution, as inside a program)."""
    call, n, first_s = _calibrate_call(evaluate, (states, env), target_call_s)
    samples = [call(r) for r in range(max(1, repeats))]
    return {"per_call_s": [float(x) for x in samples], "calls_per_repeat": int(n), "first_call_s": float(first_s),
            **{k: v for k, v in timing(samples).items() if k in ("value_s", "spread_s", "min_s", "max_s")}}


def split_evaluation(chunk_s, updates: Sequence[int], num_chunks: int, eval_timing: dict) -> dict:
    """Training time without the val evaluations run inside the chunks: the chunks' sum (``chunks_whole``) less
    their eval points x the separately timed per-evaluation time (``eval_timing["per_call_s"]``), under the
    below-resolution rule (``remainder``). Returns ``train_time_s`` (None when below resolution),
    ``train_time_below_resolution``, ``train_time_resolution_s``, ``eval_time_s`` (eval points x median per call),
    ``eval_points`` and ``train_chunk_s`` (each chunk less its evaluations, floored at 0: the time axis)."""
    k = evals_per_chunk(updates, num_chunks)
    ev = timing(eval_timing["per_call_s"], int(k.sum()))
    d = remainder(chunks_whole(chunk_s), [ev])
    per_call = ev["value_s"] / max(int(k.sum()), 1)
    per_chunk = np.maximum(np.asarray(chunk_s, np.float64) - k * per_call, 0.0)
    return {"train_time_s": d["value_s"], "train_time_below_resolution": d["below_resolution"],
            "train_time_resolution_s": d["resolution_s"], "eval_time_s": ev["value_s"], "eval_points": int(k.sum()),
            "train_chunk_s": per_chunk}


def train_time_axis(updates: Sequence[int], train_chunk_s, eval_every: int) -> np.ndarray:
    """[E] cumulative training time (evaluations excluded) at each eval point: whole chunks before it, plus its
    chunk's time x the fraction of the chunk's updates done (linear in updates within a chunk); 0 at update 0."""
    u = np.asarray(updates, np.int64)
    t = np.asarray(train_chunk_s, np.float64)
    cum = np.concatenate([[0.0], np.cumsum(t)])
    c = np.minimum(np.maximum(u - 1, 0) // eval_every, t.size - 1)
    return cum[c] + t[c] * (u - c * eval_every) / eval_every


def whole_update_component(method) -> Component:
    """The method's own ``update`` (all of it, metrics included): the reference the pieces are shares of."""
    return Component("update_whole", lambda state, carry, env, key, fixed: (lambda r: (r[0], _checksum(r[1])))(
        method.update(carry, env, key)), lambda state, env, fixed: state,
        what="the method's own update() (reference: the pieces are measured as shares of it)")


def evals_per_chunk(updates: Sequence[int], num_chunks: int) -> np.ndarray:
    """[num_chunks] eval points inside each training chunk, from the run's eval-point update counts (the first,
    update 0, is the evaluation before training)."""
    u = np.asarray(updates[1:], np.int64)
    per = int(u[-1]) // num_chunks
    return np.bincount((u - 1) // per, minlength=num_chunks)[:num_chunks]


SUM_RULE = ("components add up to the whole: the derived piece is the remainder (whole - the measured pieces); when it "
            "is below resolution it is null and the whole is the sum of the measured pieces, within its resolution")


def time_training_components(name: str, method, states, env: E.EnvParams, num_updates: int,
                             repeats: int = 5, target_call_s: float = 0.04, train: dict | None = None,
                             num_chunks: int | None = None, programs: dict | None = None,
                             evaluate: Callable | None = None) -> dict:
    """The training-time breakdown of one method for its final ``states`` (all seeds vmapped): {"whole", "pieces"}.

    Measured pieces (``timing``: median and spread over ``repeats`` rounds, seconds over the run = median x count):
    the method's phases (``phase_components``: ``collect`` and any ``learn_without_<part>``), each compiled (or
    taken from ``programs``, compiled ahead of time) and calibrated in update order (each generation piece's last
    batch feeds the later ones), then timed once per round, in turn, so load changes hit them alike; and, from a
    run, the ``evaluation`` (x the run's eval points): the run's own samples (``train["eval_time_per_call"]``, timed
    right after the method trained) or else the compiled ``evaluate`` timed in the same rounds.

    The whole: from a run (``train`` with ``chunk_time_s`` and eval-point ``updates``, and ``num_chunks``) the run's
    chunks (``chunks_whole``); otherwise (a test, a benchmark) the method's ``update`` compiled as a piece, timed in
    the same rounds, x ``num_updates``. Derived (``remainder``, never negative: null below resolution): ``learn`` =
    whole - evaluation - collect, and for each ``LEARN_WITHOUT`` part ``<part>_update`` = learn -
    learn_without_<part> (PPO's critic: the marginal cost of the value loss in its joint SGD), which then replaces
    ``learn`` as the counted remainder. ``share_of_training`` = piece / (whole - evaluation) when that is resolved."""
    from_run = bool(train is not None and train.get("chunk_time_s") is not None and num_chunks
                    and (train.get("eval_time_per_call") or evaluate is not None))
    comps = phase_components(method) + ([] if from_run else [whole_update_component(method)])
    programs = programs or {}
    calls, fixed = {}, {}
    for comp in comps:
        call, n, first_s, carry = _calibrate(comp, states, fixed, env, target_call_s,
                                             cache_key=(method.__name__, states.cfg, comp.name),
                                             program=programs.get(comp.name))
        if comp.feeds:
            fixed = {**fixed, **carry}
        calls[comp.name] = (comp, call, n, first_s)
    run_eval = (train.get("eval_time_per_call") or {}).get("per_call_s") if from_run else None
    if from_run and not run_eval:
        call, n, first_s = _calibrate_call(evaluate, (states, env), target_call_s)
        calls["evaluation"] = (EVALUATION, call, n, first_s)
    per = {k: [] for k in calls}
    for r in range(repeats):
        for k, (_, call, _, _) in calls.items():
            per[k].append(call(r))
    n_evals = int(sum(evals_per_chunk(train["updates"], num_chunks))) if from_run else 0
    pieces = {}
    for k, (comp, _, n, first_s) in calls.items():
        pieces[k] = {**_summary_ms(per[k]), **timing(per[k], n_evals if k == "evaluation" else num_updates),
                     "inner_iterations": n, "first_call_s": first_s, "per": comp.per, "what": comp.what,
                     "measured": "timed in the analysis' rounds", "in_components": k != "update_whole"}
    if run_eval:
        pieces["evaluation"] = {**_summary_ms(run_eval), **timing(run_eval, n_evals), "per": EVALUATION.per,
                                "what": EVALUATION.what, "in_components": True,
                                "measured": "timed by the run right after the method trained (eval_time_per_call)"}
    if from_run:
        whole = {**chunks_whole(train["chunk_time_s"]), "source": "the run's chunk_time_s"}
    else:
        whole = {**{k: v for k, v in pieces["update_whole"].items() if k in ("value_s", "spread_s", "count", "repeats")},
                 "what": "the method's update() compiled as a piece, x updates", "source": "timed in the analysis' rounds"}

    base = [k for k in ("evaluation", "collect") if k in pieces]
    without = getattr(method, "LEARN_WITHOUT", {})

    def derived(name_, parts, what, counted):
        d = remainder(whole, [pieces[p] for p in parts])
        pieces[name_] = {**d, "count": int(num_updates), "per": "update", "what": what, "in_components": counted,
                         "derived": "whole - " + " - ".join(parts) + " (the remainder; null below resolution)",
                         "per_update_ms": None if d["value_s"] is None else d["value_s"] / max(num_updates, 1) * 1e3}

    derived("learn", base, _doc(method.learn), not without)
    for part in without:
        derived(f"{part}_update", base + [f"learn_without_{part}"], f"marginal cost of the {part} in learn()", True)
    train_part = remainder(whole, [pieces["evaluation"]]) if "evaluation" in pieces else resolve(whole["value_s"], 0.0)
    t = train_part["value_s"]
    for k, v in pieces.items():
        v["share_of_training"] = (v["value_s"] / t if (t and t > 0 and v["per"] == "update" and v["value_s"] is not None)
                                  else None)
        v["seconds_over_run"] = v["value_s"]
    whole["training_s"] = t  # whole - evaluation (None below resolution)
    return {"whole": whole, "pieces": pieces}


# ----------------------------------------------------------------------------- parameters
def param_counts(method, states) -> dict:
    s0 = X.unstack(states, 0)
    pol = method.policy(s0)
    if isinstance(pol, P.LookupPolicy):
        return {"policy": 0, "critic": 0, "total": 0, "table_entries": int(np.prod(pol.choice.shape))}
    if isinstance(pol, P.KNNPolicy):  # no parameters: a store of profiled rows (quality and latency per config)
        n = int(pol.n)
        return {"policy": 0, "critic": 0, "total": 0, "table_entries": 2 * n * int(pol.quality.shape[-1]),
                "profiled_requests": n}
    n_pol = P.count_params(pol.params)
    n_all = P.count_params(s0.params) if hasattr(s0, "params") else n_pol
    return {"policy": n_pol, "critic": n_all - n_pol, "total": n_all}


# ----------------------------------------------------------------------------- one method
def analyze_method(name: str, method, states, table, env: E.EnvParams, out: Path | None, train: dict | None = None,
                   settings: Settings = Settings(), num_updates: int | None = None, num_chunks: int | None = None,
                   keep: dict | None = None, programs: dict | None = None, evaluate: Callable | None = None) -> dict:
    """Export, agreement check, decision timing, component timing and parameter counts of one trained method.

    ``train``: the run's result for the method (``train_time_s``, ``compile_time_s``, ``updates``) when known.
    ``keep``: a dict that receives ``{name: controllers}`` (for the final interleaved timing)."""
    t_start = time.perf_counter()
    ctrls = X.export_controllers(name, method, states, table, env)
    if keep is not None:
        keep[name] = ctrls
    files = []
    if out is not None:
        files = [str(p.relative_to(out)) for p in X.save_controllers(ctrls, Path(out) / "controllers")]
    agreement = check_agreement(ctrls, method, states, table, env)
    reqs = X.val_requests(table, env)
    dec = time_decisions([c.decide for c in ctrls], reqs, settings.decisions, settings.warmup)
    res: dict[str, Any] = {
        "controller": ctrls[0].kind,
        "decision_ms": dec,
        "decision_timing": "this method alone, after the run's training",
        "decision_path": ("NumPy forward (float32): standardize features, task one-hot, standardized budget, "
                          "ReLU trunk, heads in one matmul, per-head argmax -> levels") if ctrls[0].kind == "mlp"
        else "dict lookup: task_type -> row, budget -> evaluation-budget column -> level tuple",
        "decision_seeds": [c.seed for c in ctrls],
        "eager_agreement": agreement,
    }
    if settings.jax_decisions > 0:
        jfns = [c.jax_batch1() for c in ctrls]
        res["decision_ms_jax_batch1"] = time_decisions(jfns, reqs, settings.jax_decisions, max(20, settings.warmup // 10))
    res["num_params"] = param_counts(method, states)
    if train is not None:
        S = jax.tree_util.tree_leaves(states)[0].shape[0]
        upd = train.get("updates") or [0]
        nu = num_updates if num_updates is not None else int(upd[-1])
        nc = num_chunks if num_chunks is not None else max(1, len(upd) - 1)
        total = train.get("train_time_s")  # the run's, evaluations excluded; None when below resolution
        total = None if total is None else float(total)
        tr: dict[str, Any] = {"total_s": total, "per_seed_equivalent_s": None if total is None else total / S,
                              "seeds": S, "compile_s": train.get("compile_time_s"), "num_updates": nu,
                              "num_chunks": nc, "eval_time_s": train.get("eval_time_s"), "components": {}}
        for k in ("train_time_below_resolution", "train_time_resolution_s"):
            if k in train:
                tr[k] = train[k]
        if settings.components:
            ct = time_training_components(name, method, states, env, nu, settings.repeats, settings.target_call_s,
                                          train=train, num_chunks=nc, programs=programs, evaluate=evaluate)
            pieces = ct["pieces"]
            counted = {k: v for k, v in pieces.items() if v["in_components"]}
            tr["whole_s"] = ct["whole"]["value_s"]
            tr["whole"] = ct["whole"]
            tr["components"] = {k: v["value_s"] for k, v in counted.items()}  # seconds over the run; None: below res.
            tr["below_resolution"] = {k: v["resolution_s"] for k, v in counted.items() if v.get("below_resolution")}
            tr["components_sum_s"] = float(sum(v for v in tr["components"].values() if v is not None))
            tr["sum_rule"] = SUM_RULE
            tr["component_timing"] = pieces
        res["training"] = tr
    res["files"] = files
    res["analysis_wall_s"] = time.perf_counter() - t_start
    return res


# ----------------------------------------------------------------------------- the run hook
def host_meta() -> dict:
    from e5jax.host import host_description

    h = host_description()
    h["timer"] = "time.perf_counter_ns around each single decide() call"
    h["timer_overhead_ns"] = timer_overhead_ns()
    try:
        h["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    return h


class Recorder:
    """Called by ``run_experiment`` for each method after all training (``compile`` before it, in the compile
    threads): analyses the method and rewrites ``e5_overhead_analysis.json``."""

    def __init__(self, out: Path, table, env: E.EnvParams, run_cfg=None, settings: Settings | None = None):
        self.out, self.table, self.env = Path(out), table, env
        self.run_cfg = run_cfg
        self.settings = settings or Settings()
        self.controllers: dict = {}
        self.programs: dict = {}  # {method: {piece: compiled}} from compile(), in the run's compile threads
        self._compiled: dict = {}  # {timing_signature: {piece: compiled}}
        self._compiling: dict = {}  # {timing_signature: lock held while it compiles}
        self._lock = threading.Lock()
        self.doc = {
            "schema": SCHEMA,
            "complete": False,
            "meta": {
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv),
                "host": host_meta(),
                "settings": dataclasses.asdict(self.settings),
                "seeds": None if run_cfg is None else run_cfg.seeds,
                "budgets": [float(b) for b in np.asarray(env.budgets)],
                "knobs": {k: np.asarray(v).tolist() for k, v in table.knobs.items()},
                "units": {"decision_ms": "milliseconds per single-request decide() call",
                          "training.total_s": "training wall time of all seeds together (vmapped, compile and the "
                                              "in-chunk val evaluations excluded; null: below resolution)",
                          "training.whole_s": "the run's chunk time: training and in-chunk evaluations",
                          "training.components": "seconds over the run: median per-update time (all seeds) x updates "
                                                 "(evaluation: x eval points); the derived piece: the remainder, "
                                                 "null when below resolution (training.below_resolution)"},
                "notes": "CPU shared with other jobs: read medians/percentiles and ratios, not single numbers.",
                "analysis_wall_s": 0.0,
            },
            "methods": {},
        }

    @property
    def path(self) -> Path:
        return self.out / FILE

    def compile(self, name: str, method, states) -> None:
        """Compile the method's timing programs ahead of time (executes nothing: safe in a compile thread);
        ``states``: any states of the run's shapes (e.g. the initial ones). Methods with the same phases on states
        of the same structure and shapes (heuristic uses lut's) share one set of programs: the second waits for
        the first compile instead of repeating it."""
        if not self.settings.components:
            return
        key = timing_signature(method, states)
        with self._lock:
            lock = self._compiling.setdefault(key, threading.Lock())
        with lock:
            if key not in self._compiled:
                self._compiled[key] = compile_components(method, states, self.env)
        self.programs[name] = self._compiled[key]

    def __call__(self, name: str, method, states, result: dict, evaluate: Callable | None = None) -> None:
        run = self.run_cfg
        t0 = time.perf_counter()
        try:
            self.doc["methods"][name] = analyze_method(
                name, method, states, self.table, self.env, self.out, result, self.settings,
                num_updates=None if run is None else run.num_updates, num_chunks=None if run is None else run.num_chunks,
                keep=self.controllers, programs=self.programs.pop(name, None), evaluate=evaluate)
        except Exception as e:  # the overhead measurement must never lose a finished training run
            print(f"e5jax: overhead analysis of {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            self.doc["methods"][name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}
        self.doc["meta"]["analysis_wall_s"] += time.perf_counter() - t0
        write_json(self.path, self.doc)

    def finish(self) -> None:
        """Re-time every method's decide() interleaved (blocks of 50 decisions per method in turn), so the
        headline ``decision_ms`` of all methods share the same machine conditions; add ratios to the LUT."""
        ok = [n for n in self.controllers if "decision_ms" in self.doc["methods"].get(n, {})]
        if ok:
            s = self.settings
            res = time_decisions_interleaved({n: [c.decide for c in self.controllers[n]] for n in ok},
                                             X.val_requests(self.table, self.env), s.decisions, s.warmup)
            for n in ok:
                m = self.doc["methods"][n]
                m["decision_ms_after_training"] = m["decision_ms"]
                m["decision_ms"] = res[n]
                m["decision_timing"] = "all methods interleaved at the end of the run (blocks of 50 decisions)"
                if "lut" in res:
                    m["decision_ratio_to_lut"] = {p: res[n][p] / res["lut"][p] for p in ("p50", "p95", "p99")}
        self.doc["complete"] = True
        self.doc["overhead_table"] = overhead_table(self.doc)
        write_json(self.path, self.doc)


def recorder_from_env(out: Path, table, env: E.EnvParams, run_cfg=None) -> Recorder | None:
    s = Settings.from_env()
    return None if s is None else Recorder(out, table, env, run_cfg, s)


# ----------------------------------------------------------------------------- the table
SEED_COLUMNS = {"critic_training_s": ("ppo", ("critic_update",)),
                "pair_generation_s": ("dpo", ("collect",)),
                "group_generation_s": ("grpo", ("collect",))}


def overhead_table(doc: dict) -> list[dict]:
    """One row per method: the seed's overhead table (decision p50/p95/p99, critic training (PPO), pair
    generation (DPO), group generation (GRPO), total training) plus every measured component."""
    rows = []
    for name, m in doc.get("methods", {}).items():
        if "decision_ms" not in m:
            continue
        d, tr = m["decision_ms"], m.get("training") or {}
        comps = tr.get("components") or {}
        row = {"method": name, "decision_p50_ms": d["p50"], "decision_p95_ms": d["p95"], "decision_p99_ms": d["p99"],
               "decision_p50_ratio_to_lut": (m.get("decision_ratio_to_lut") or {}).get("p50"),
               "total_training_s": tr.get("total_s"), "per_seed_equivalent_s": tr.get("per_seed_equivalent_s"),
               "num_params": m.get("num_params", {}).get("total")}
        for col, (meth, parts) in SEED_COLUMNS.items():  # None: not this method's column, or below resolution
            vals = [comps[p] for p in parts if p in comps]
            row[col] = sum(vals) if name == meth and vals and None not in vals else None
        row["components_s"] = dict(comps)
        rows.append(row)
    return rows


def format_table(doc: dict) -> str:
    """Markdown rendering of ``overhead_table``."""
    g = lambda v, f="{:.3g}": "—" if v is None else f.format(v)  # noqa: E731
    L = ["| method | decision p50 / p95 / p99 (ms) | p50 / LUT | jax batch-1 p50 (ms) | eager = vmapped | params "
         "| training total (s) | per seed equiv. (s) | critic training (PPO) | pair gen. (DPO) | group gen. (GRPO) "
         "| components (s) |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in overhead_table(doc):
        m = doc["methods"][r["method"]]
        j = (m.get("decision_ms_jax_batch1") or {}).get("p50")
        ag = m.get("eager_agreement", {})
        L.append("| " + " | ".join([
            r["method"], f"{r['decision_p50_ms']:.4f} / {r['decision_p95_ms']:.4f} / {r['decision_p99_ms']:.4f}",
            g(r["decision_p50_ratio_to_lut"], "{:.1f}×"), g(j, "{:.4f}"), f"{ag.get('fraction', float('nan')):.4f} ({ag.get('decisions_compared', 0)})",
            f"{r['num_params']:,}" if r["num_params"] is not None else "—",
            g(r["total_training_s"]), g(r["per_seed_equivalent_s"]), g(r["critic_training_s"]),
            g(r["pair_generation_s"]), g(r["group_generation_s"]),
            ", ".join(f"{k} {v:.3g}" if v is not None else f"{k} below resolution "
                      f"(< {(m['training'].get('below_resolution') or {}).get(k, float('nan')):.2g})"
                      for k, v in r["components_s"].items()) or "—"]) + " |")
    return "\n".join(L)
