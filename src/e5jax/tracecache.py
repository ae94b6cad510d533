"""Traced and lowered programs kept across runs (``jax.export``), beside XLA's persistent compilation cache.

XLA's cache keeps compiled executables, so a warm run still traces and lowers every program (the default run's
chunk and evaluate programs: ~20 s of GIL-bound Python on a 2-core CPU). This cache keeps each program as the
StableHLO ``jax.export`` serializes, so a warm run deserializes it and lowers a one-call wrapper (~0.1 s) before
the compile that XLA's cache answers. A program is always compiled from its exported form, first run or not, so
both compile the same module (one XLA cache entry) and give the same results as compiling the function directly
(``tests/test_trace_cache.py`` checks a run with the cache against one without, bit for bit).

The key of an entry: the caller's ``label`` (the trainer's method name, config and ``eval_every``: the values its
functions close over), the program's name, the arguments' tree structure (static fields included), types and
shardings, the source of the ``e5jax`` package and of every other loaded module outside the interpreter's prefixes
(tests, experiments, a user's own method), the versions of JAX and the libraries traced through, and JAX's
configuration. Not covered: a function replaced at run time (monkeypatching) — the test suite runs with the cache
off for that reason. Programs are not cached when several devices or processes take part, when a benchmark variant
(``methods.common.variant``) is active, or when ``jax.export`` refuses the program (the normal path then runs).

Where: ``E5JAX_TRACE_CACHE=DIR``, or ``off``; by default ``traces/`` inside the compilation cache directory
(``E5JAX_JAX_CACHE``), and off when that is off.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import pickle
import sys
import threading
from pathlib import Path

import jax
from jax import export

from e5jax.io import atomic_write

_OFF = ("off", "0", "none", "false", "no", "")
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "scipy")
_lock = threading.Lock()
_file_digests: dict = {}  # path -> (mtime_ns, size, sha256)


def cache_dir() -> Path | None:
    """The cache's directory, or None when it is off."""
    where = os.environ.get("E5JAX_TRACE_CACHE")
    if where is None:
        jc = jax.config.jax_compilation_cache_dir
        return Path(jc) / "traces" if jc else None
    return None if where.strip().lower() in _OFF else Path(where)


def _file_digest(path: str) -> str:
    st = os.stat(path)
    with _lock:
        hit = _file_digests.get(path)
    if hit is not None and hit[:2] == (st.st_mtime_ns, st.st_size):
        return hit[2]
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    with _lock:
        _file_digests[path] = (st.st_mtime_ns, st.st_size, digest)
    return digest


_module_files: dict = {}  # (module name, __file__) -> the file to key on, or None


def _project_file(name: str, f) -> str | None:
    hit = _module_files.get((name, f), False)
    if hit is not False:
        return hit
    out = None
    if isinstance(f, str) and f.endswith(".py") and not f.startswith(_prefixes()):
        real = os.path.realpath(f)
        out = real if not real.startswith(_prefixes()) and os.path.isfile(real) else None
    _module_files[(name, f)] = out
    return out


@functools.cache
def _prefixes() -> tuple:
    raw = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return tuple(sorted(raw | {os.path.realpath(p) for p in raw}))


@functools.cache
def _package_files() -> tuple:
    return tuple(sorted(os.path.realpath(p) for p in Path(__file__).parent.rglob("*.py")))


def _sources() -> list:
    """(path, sha256) of every ``.py`` file of the e5jax package and of every loaded module outside the
    interpreter's prefixes (the standard library and installed packages are keyed by version instead)."""
    files = set(_package_files())
    for name, mod in list(sys.modules.items()):
        f = _project_file(name, getattr(mod, "__file__", None))
        if f is not None:
            files.add(f)
    return [(f, _file_digest(f)) for f in sorted(files)]


@functools.cache
def _versions() -> tuple:
    out = [("python", sys.version)]
    for lib in LIBRARIES:
        try:
            out.append((lib, importlib.metadata.version(lib)))
        except importlib.metadata.PackageNotFoundError:
            out.append((lib, None))
    return tuple(out)


def _signature(args) -> list:
    leaves, tree = jax.tree_util.tree_flatten(args)
    return [str(tree)] + [[str(jax.typeof(x)), str(getattr(x, "sharding", None))] for x in leaves]


def key(label: str, program: str, args) -> str:
    """The entry's key (sha256 hex) for ``program`` of ``label`` traced with ``args``."""
    config = {k: repr(v) for k, v in sorted(jax.config.values.items()) if "cache" not in k}
    doc = {"label": label, "program": program, "signature": _signature(args), "sources": _sources(),
           "versions": _versions(), "config": config, "backend": jax.default_backend(),
           "devices": [d.device_kind for d in jax.devices()]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=repr).encode()).hexdigest()


def usable() -> str | None:
    """Why programs cannot be cached now (None when they can)."""
    from e5jax.methods.common import Program, _PROGRAM

    if jax.process_count() > 1 or jax.device_count() > 1:
        return "several devices"
    if _PROGRAM.get() != Program():
        return "a benchmark variant is active"
    return None


class Flat:
    """A compiled program of flat arguments called with the original pytree arguments (checked against the
    structure it was compiled for) and returning the original pytree outputs."""

    def __init__(self, compiled, in_tree, out_tree, out_avals):
        self.compiled, self.in_tree, self.out_tree, self.out_avals = compiled, in_tree, out_tree, out_avals

    def out_shapes(self):
        """The outputs' shapes and dtypes (``jax.eval_shape``'s answer, without tracing again)."""
        return jax.tree_util.tree_unflatten(self.out_tree, [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type)
                                                            for a in self.out_avals])

    def __call__(self, *args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        if tree != self.in_tree:
            raise TypeError(f"arguments of structure {tree} given to a program compiled for {self.in_tree}")
        return jax.tree_util.tree_unflatten(self.out_tree, self.compiled(*leaves))


def _export(jitted, args):
    """(serialized StableHLO, pickled output skeleton) of ``jitted`` traced and lowered for ``args``."""
    leaves, in_tree = jax.tree_util.tree_flatten(args)
    box = {}

    def flat(*xs):
        out, box["tree"] = jax.tree_util.tree_flatten(jitted(*jax.tree_util.tree_unflatten(in_tree, xs)))
        return out

    exp = export.export(jax.jit(flat))(*leaves)
    skeleton = jax.tree_util.tree_unflatten(box["tree"], [0] * box["tree"].num_leaves)
    return bytes(exp.serialize()), pickle.dumps(skeleton)


def _compile(blob: bytes, skeleton: bytes, args, times: dict, clock):
    leaves, in_tree = jax.tree_util.tree_flatten(args)
    t0 = clock()
    exp = export.deserialize(bytearray(blob))
    out_tree = jax.tree_util.tree_structure(pickle.loads(skeleton))
    traced = jax.jit(exp.call).trace(*leaves)
    t1 = clock()
    lowered = traced.lower()
    t2 = clock()
    compiled = lowered.compile()
    times.update(trace_s=times.get("trace_s", 0.0) + t1 - t0, lower_s=t2 - t1, compile_s=clock() - t2)
    return Flat(compiled, in_tree, out_tree, exp.out_avals)


def staged(jitted, args, label: str | None, program: str, clock):
    """(compiled, times) through the cache, or None when it is off or cannot hold this program (the caller then
    traces, lowers and compiles ``jitted`` itself). ``times``: trace_s (export on a miss: trace and lower to
    StableHLO; deserialize and trace the wrapper on a hit), lower_s, compile_s, and ``trace_cache`` = hit / miss."""
    where = cache_dir()
    if where is None or label is None or usable() is not None:
        return None
    t0 = clock()
    k = key(label, program, args)
    path = where / f"{program}-{k[:40]}.jaxexport"
    blob = skel = None
    if path.is_file():
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f)
            blob, skel = entry["exported"], entry["skeleton"]
        except Exception:  # a damaged entry is a miss
            blob = None
    times = {"trace_cache": "hit" if blob is not None else "miss"}
    if blob is None:
        try:
            blob, skel = _export(jitted, args)
        except Exception:  # e.g. a host callback export cannot serialize: the caller takes the normal path
            return None
        try:
            where.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: pickle.dump({"exported": blob, "skeleton": skel, "program": program,
                                                      "label": label}, f), binary=True)
        except OSError as e:  # a read-only or full disk: this run compiles from the export, the next traces again
            times["trace_cache"] = f"miss, not written: {type(e).__name__}"
    times["trace_s"] = clock() - t0
    return _compile(blob, skel, args, times, clock), times
