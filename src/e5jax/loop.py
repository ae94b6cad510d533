"""The host loop shared by ``e5jax run`` and ``e5jax sweep``: initialise a method's rows, compile its chunk program
ahead of time, train it chunk by chunk (from its latest checkpoint, saving at chunk boundaries), and the
orchestration of several methods (``compile_pool``): each initialised in the calling thread, its programs compiled in
a thread pool, each trained in the calling thread, method by method, compiles not yet started cancelled on any
exception or interrupt.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import sys
import time
from typing import Callable, Iterator, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from e5jax import engine, tracecache
from e5jax import env as E
from e5jax.checkpoint import f32_tree
from e5jax.config import RunConfig
from e5jax.dist import to_host
from e5jax.methods import METHODS
from e5jax.watch import active, guard, injected_stall


@dataclasses.dataclass
class Prepared:
    """A method ready to train: its initial states and its compiled chunk program (one for every eval mask)."""

    trainer: engine.Trainer
    keys: jax.Array
    states: object
    chunk: object
    masks: list
    compile_s: float
    evaluate: object = None  # the compiled evaluation (before training), when compiled ahead of time
    env_rows: dict | None = None  # per-row env overrides ({field: [N]}, engine.row_env), e.g. a sweep's lambdas
    compile_parts: dict | None = None  # init_s, and trace_s / lower_s / compile_s per program (compile_method)

    @property
    def rows(self) -> tuple:
        """The trailing ``env_rows`` argument of the chunk and evaluate programs (none without overrides, so a
        run's compiled ``evaluate(states, env)`` keeps its signature)."""
        return () if self.env_rows is None else (self.env_rows,)


def init_method(name: str, cfg, run: RunConfig, env: E.EnvParams, keys=None, hp: dict | None = None,
                env_rows: dict | None = None) -> Prepared:
    """Initialise every row (in the calling thread: it executes a program). Rows are the run's seeds unless
    ``keys`` ([N] PRNG keys) and ``hp`` ({name: [N]} traced hyperparameters, ``engine.with_hp``) say otherwise;
    ``env_rows`` ({env field: [N]}) gives each row its own env values in every program it runs. The initialisation
    runs under the active watchdog (``e5jax.watch``)."""
    trainer = engine.make_train(METHODS[name], cfg, run.eval_every)
    keys = engine.seed_keys(run.base_seed, run.seeds) if keys is None else keys
    t0 = time.perf_counter()
    # every state leaf sharded on its row axis like the keys (one device: unchanged): the compiled program expects
    # the shardings it was lowered with, and each chunk returns row-sharded states
    with guard(f"{name} initialisation"):
        states = jax.tree_util.tree_map(engine.shard_seeds, initial_states(trainer, keys, env, hp))
        jax.block_until_ready(states)
    masks = [engine.early_eval_mask(run.eval_every, first_chunk=c == 0) for c in range(min(run.num_chunks, 2))]
    return Prepared(trainer, keys, states, None, masks, time.perf_counter() - t0, env_rows=env_rows or None)


def initial_states(trainer: engine.Trainer, keys, env: E.EnvParams, hp: dict | None = None):
    """``trainer.init(keys, env, hp)``, its per-method program through ``staged_compile`` (so a warm run takes its
    trace from the trace cache; the shared part's program is compiled once per run and network as before)."""
    if trainer.init_program is None or trainer.shared is None:
        return trainer.init(keys, env, hp)
    shared = trainer.shared(keys, env)
    compiled, _ = staged_compile(trainer.init_program, keys, env, hp, shared, label=trainer.label, program="init")
    return compiled(keys, env, hp, shared)


def compile_method(p: Prepared, env: E.EnvParams) -> Prepared:
    """Compile the chunk program ahead of time (one program for every eval mask). Lowering and compiling execute
    nothing, so several methods can compile at once in threads (XLA compiles outside the GIL); everything that runs
    a program stays in the main thread (executing the vmapped init from several threads at once deadlocked XLA's CPU
    runtime: docs/hangs.md)."""
    t0 = time.perf_counter()
    parts = {"init_s": p.compile_s}
    label = p.trainer.label
    chunk, parts["chunk"] = staged_compile(p.trainer.chunk_eval, p.states, p.keys, env, p.masks[0], *p.rows,
                                           label=label, program="chunk_eval")
    evaluate, parts["evaluate"] = staged_compile(p.trainer.evaluate, p.states, env, *p.rows, label=label,
                                                 program="evaluate")
    return dataclasses.replace(p, chunk=chunk, evaluate=evaluate, compile_s=p.compile_s + time.perf_counter() - t0,
                               compile_parts=parts)


def staged_compile(jitted, *args, label: str | None = None, program: str = "") -> tuple:
    """``jitted`` traced, lowered and compiled for ``args``, each stage timed: (compiled, {"trace_s", "lower_s",
    "compile_s"}). The persistent compilation cache saves only the last stage; with a ``label`` (what ``jitted``
    closes over, e.g. ``Trainer.label``) and a ``program`` name the trace cache (``e5jax.tracecache``) keeps the
    first two across runs too, and the times say ``trace_cache``: hit or miss."""
    cached = tracecache.staged(jitted, args, label, program, time.perf_counter)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    traced = jitted.trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, {"trace_s": t1 - t0, "lower_s": t2 - t1, "compile_s": time.perf_counter() - t2}


def prepare_method(name: str, cfg, run: RunConfig, env: E.EnvParams, keys=None, hp: dict | None = None,
                   env_rows: dict | None = None) -> Prepared:
    """``init_method`` then ``compile_method``."""
    return compile_method(init_method(name, cfg, run, env, keys, hp, env_rows), env)


@dataclasses.dataclass
class Trace:
    """What training leaves on the host: the final states and, per eval point, the greedy evaluation ([N] or
    [N, B] per key), the chunk's train metrics (None at intra-chunk points), the env steps since the previous
    point, the wall time and the update count."""

    states: object
    evals: list
    trains: list
    step_inc: list
    wall: list
    chunk_s: list
    updates: list

    def progress(self) -> dict:
        return {"evals": self.evals, "trains": self.trains, "step_inc": self.step_inc, "wall": self.wall,
                "chunk_s": self.chunk_s, "updates": self.updates}


def train_chunks(p: Prepared, run: RunConfig, env: E.EnvParams, pbar=None, checkpointer=None, label: str = "") -> Trace:
    """Run every chunk of a prepared method (from its latest checkpoint when ``checkpointer`` has one). Every program
    runs under the active watchdog and each chunk's metrics go to the active stream (``e5jax.watch.watching``)."""
    states, keys = p.states, p.keys
    watchdog, stream = active()
    with guard(f"{label} evaluation before training"):
        ev0 = to_host((p.evaluate or p.trainer.evaluate)(states, env, *p.rows))
    tr = Trace(states, [ev0], [], [], [0.0], [], [0])
    start = 0
    got = checkpointer.latest(states) if checkpointer is not None else None
    if got is not None:
        start, states, prog = got
        tr = Trace(states, [f32_tree(e) for e in prog["evals"]], [f32_tree(t) for t in prog["trains"]],
                   [f32_tree(x) for x in prog["step_inc"]], list(prog["wall"]), list(prog["chunk_s"]),
                   [int(u) for u in prog["updates"]])
        if pbar is not None:
            pbar.update(start)
    for c in range(start, run.num_chunks):
        mask = p.masks[min(c, 1)]
        t = time.perf_counter()
        with guard(f"{label} chunk {c + 1}/{run.num_chunks}", chunk_of=label):
            injected_stall(label, c + 1)
            states, m = p.chunk(states, engine.chunk_keys(keys, c), env, mask, *p.rows)
            m = to_host(m)  # blocks until the chunk is done (all-gathered under several processes)
        tr.chunk_s.append(time.perf_counter() - t)
        if watchdog is not None:
            watchdog.chunk_done(label, tr.chunk_s[-1])
        if stream is not None:
            stream.chunk(label, c + 1, (c + 1) * run.eval_every, m, tr.chunk_s[-1])
        cum = np.cumsum(np.asarray(m["env_steps_per_update"]), axis=1)  # [N, U]
        prev = 0
        for u in np.flatnonzero(mask):  # intra-chunk points first, the chunk's end last
            tr.evals.append({k: np.asarray(v)[:, u] for k, v in m["eval_points"].items()})
            tr.trains.append(m["train"] if u == len(mask) - 1 else None)
            tr.step_inc.append(cum[:, u] - (cum[:, prev - 1] if prev else 0))
            prev = u + 1
            tr.updates.append(c * run.eval_every + int(u) + 1)
            # wall time at an intra-chunk point: interpolated linearly in updates within the chunk
            tr.wall.append(sum(tr.chunk_s[:-1]) + tr.chunk_s[-1] * (u + 1) / len(mask))
        if pbar is not None:
            pbar.set_postfix_str(f"{label} chunk {c + 1}/{run.num_chunks} {tr.chunk_s[-1]:.2f}s")
            pbar.update(1)
        if checkpointer is not None and c + 1 < run.num_chunks and checkpointer.due(c + 1):
            checkpointer.save(c + 1, states, tr.progress())
    tr.states = states
    return tr


def env_steps_axis(step_inc: list) -> np.ndarray:
    """[N, E] cumulative env steps per row at every eval point (0 at the initial evaluation)."""
    n = np.asarray(step_inc[0]).shape[0]
    return np.concatenate([np.zeros((n, 1)), np.cumsum(np.stack(step_inc, 1), 1)], 1)


class Compiles:
    """The compiles of a ``compile_pool``: ``compiles[name]`` waits for that method's programs (a ``Prepared``)."""

    def __init__(self, futures: dict, extra: list):
        self.futures, self.extra = futures, extra

    def __getitem__(self, name: str) -> Prepared:
        return self.futures[name].result()

    def wait(self, progress: bool = True) -> None:
        """Wait for every compile, the methods' and the extra ones (a progress bar on stderr when ``progress``)."""
        with tqdm(total=len(self.futures) + len(self.extra), desc="e5 compile", unit="program", disable=not progress,
                  file=sys.stderr) as pbar:
            for _ in concurrent.futures.as_completed([*self.futures.values(), *self.extra]):
                pbar.update(1)


@contextlib.contextmanager
def compile_pool(names: Sequence[str], init: Callable[[str], Prepared], env: E.EnvParams,
                 also: Callable[[str, Prepared], object] | None = None, init_first: bool = False) -> Iterator[Compiles]:
    """Initialise every method in the calling thread, in order (``init(name)``: ``init_method``'s result; it executes
    programs), and compile its programs in a thread pool (``compile_method``: compiles only) as soon as it is
    initialised or, with ``init_first``, once every method is (no initialisation executes while a compile runs);
    ``also(name, initialised)``: more compile-only work per method, submitted after every method's
    compile. Yields the ``Compiles``; the caller trains in its own thread. On any exception or interrupt (in the
    initialisation or in the caller's block) the compiles not yet started are cancelled."""
    workers = max(1, min(len(names) or 1, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            inits, futures = {}, {}
            for name in names:
                inits[name] = init(name)  # executes: this thread
                if not init_first:
                    futures[name] = pool.submit(compile_method, inits[name], env)
            if init_first:
                futures = {name: pool.submit(compile_method, inits[name], env) for name in names}
            extra = [pool.submit(also, name, inits[name]) for name in names] if also is not None else []
            yield Compiles(futures, extra)
        except BaseException:  # interrupted: do not wait for compiles that have not started
            pool.shutdown(wait=False, cancel_futures=True)
            raise
