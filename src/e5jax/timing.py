"""The timing harness of the overhead accounting: its knobs, single-decision timers, the below-resolution rule, the
run's evaluation split out of its chunk times, and the training-component programs (a method's named phases, each
run ``n`` times inside one compiled ``fori_loop``, calibrated and timed in rounds).

``e5jax.run`` times its evaluation with it (``time_evaluation``, ``split_evaluation``, ``train_time_axis``); the
analysis (``e5jax.overhead``) times decisions and training components with it. Knobs (``Settings``; no config
section, environment variables, see docs/overhead.md): ``E5JAX_OVERHEAD=off`` skips the analysis,
``E5JAX_OVERHEAD_DECISIONS`` (1000), ``E5JAX_OVERHEAD_WARMUP`` (200), ``E5JAX_OVERHEAD_JAX_DECISIONS`` (300),
``E5JAX_OVERHEAD_REPEATS`` (5), ``E5JAX_OVERHEAD_COMPONENTS=0`` (skip the training pieces).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from e5jax import env as E
from e5jax import tracecache
from e5jax.loop import staged_compile


# ----------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class Settings:
    """The overhead analysis' knobs (``from_env``: from the E5JAX_OVERHEAD* environment variables)."""

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
    Returns {name: percentiles}, each with ``block_p50``: the median (ms) of each round's block, in round order (the
    paired unit for comparing two methods: ``analysis.paired_ratio_ci``)."""
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
        # round i's block is samples i*block .. i*block + block - 1 of each method (every method got the same rounds)
        out[k]["block_p50"] = [float(np.median(np.asarray(s[i:i + block], np.float64))) / 1e6
                               for i in range(0, len(s), block)]
    return out


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
    feeds the rest) and, for every ``Method.learn_without`` part (PPO: the critic), learn without it. ``learn``
    itself is derived: whole update - collect (the update is their composition), which saves compiling it apart."""
    comps = [_gen(lambda state, env, key, fixed: {"collect": method.collect(state, env, key)}, "collect",
                  _doc(method.collect_phase))]
    for part in method.learn_without:
        fn = method.without(part)
        comps.append(_upd(lambda st, env, key, f, fn=fn: (lambda r: (r[0], _checksum(r[1])))(fn(st, env, f["collect"], key)),
                          f"learn_without_{part}", f"learn() without the {part}"))
    return comps


EVALUATION = Component("evaluation", None, per="eval point",
                       what="greedy evaluation on the val split at every budget (the run's compiled evaluate)")


def compile_components(method, states, env: E.EnvParams, comps: Sequence[Component] | None = None,
                       times: dict | None = None) -> dict:
    """Lower and compile the timing programs of ``comps`` (default ``phase_components``) for these states' shapes,
    executing nothing (so it can run in a compile thread while the main thread trains). A generation piece's
    batch shape, from ``jax.eval_shape``, is the ``fixed`` input of the pieces after it. Returns {name: compiled};
    ``times`` (a dict) receives each program's stage times ({name: {"trace_s", "lower_s", "compile_s"[,
    "trace_cache"]}}, ``loop.staged_compile``'s)."""
    key, zero = jax.random.PRNGKey(123), jnp.zeros(())
    fixed, out = {}, {}
    for comp in (phase_components(method) if comps is None else comps):
        f = _program(comp)
        args = (states, fixed, key, 1, zero, env)
        # the default pieces are the method's own phases: kept in the trace cache (e5jax.tracecache) across runs
        label = None if comps is not None else repr((method.name, "timing", comp.name))
        compiled, parts = staged_compile(f, *args, label=label, program=f"timing_{comp.name}")
        out[comp.name] = compiled
        if times is not None:
            times[comp.name] = parts
        if comp.feeds:  # a program from the trace cache knows its output shapes: no second trace
            shapes = compiled.out_shapes() if isinstance(compiled, tracecache.Flat) else jax.eval_shape(f, *args)
            fixed = {**fixed, **shapes[0]}
    return out


def timing_signature(method, states) -> tuple:
    """What decides ``compile_components``' programs: the phase functions (``collect`` and every ``learn_without``
    variant, by identity; the key split) and the states' structure (static config included) and leaf shapes and
    dtypes."""
    phases = (method.collect_phase, method.keys, *method.learn_without.items())
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
    whole - evaluation - collect, and for each ``learn_without`` part ``<part>_update`` = learn -
    learn_without_<part> (PPO's critic: the marginal cost of the value loss in its joint SGD), which then replaces
    ``learn`` as the counted remainder. ``share_of_training`` = piece / (whole - evaluation) when that is resolved."""
    from_run = bool(train is not None and train.get("chunk_time_s") is not None and num_chunks
                    and (train.get("eval_time_per_call") or evaluate is not None))
    comps = phase_components(method) + ([] if from_run else [whole_update_component(method)])
    programs = programs or {}
    calls, fixed = {}, {}
    for comp in comps:
        call, n, first_s, carry = _calibrate(comp, states, fixed, env, target_call_s,
                                             cache_key=(method.name, states.cfg, comp.name),
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
    without = method.learn_without

    def derived(name_, parts, what, counted):
        d = remainder(whole, [pieces[p] for p in parts])
        pieces[name_] = {**d, "count": int(num_updates), "per": "update", "what": what, "in_components": counted,
                         "derived": "whole - " + " - ".join(parts) + " (the remainder; null below resolution)",
                         "per_update_ms": None if d["value_s"] is None else d["value_s"] / max(num_updates, 1) * 1e3}

    derived("learn", base, _doc(method.learn_phase), not without)
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


# ----------------------------------------------------------------------------- host
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
