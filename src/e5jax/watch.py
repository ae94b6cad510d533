"""Watching a long run: a watchdog that stops a program that does not return, and a live metrics stream.

**Watchdog.** Every program the host loop executes (a method's initialisation, its evaluation before training, each
training chunk) runs under ``Watchdog.guard(what)``: a timer thread that, when the program has not returned within
its limit, prints one line naming it (method, chunk, limit) and ends the process with exit code 3. Nothing is
written then: the outputs of finished methods and the running method's latest checkpoint stay as they were, and
``e5jax run --resume DIR`` continues from them. A stuck XLA program cannot be interrupted from Python (the main
thread is blocked inside the runtime), so ending the process is the only way out. The limit of a chunk is
``factor`` x the slowest chunk of this method so far, never below ``floor_s``; the first chunk and the other
programs get ``floor_s``. A command turns both on for its training with ``watching(watchdog, stream)``; the host
loop (``e5jax.loop``) reads them with ``active()``. ``E5JAX_WATCHDOG`` = ``off`` (or 0) disables it, a number
sets ``factor`` (default 20); ``E5JAX_WATCHDOG_FLOOR_S`` sets ``floor_s`` (default 600). ``E5JAX_WATCHDOG_STALL`` = ``"<label>:<chunk>"`` makes
that chunk stall (sleep) before it runs: the fault the watchdog tests inject.

**Metrics stream.** ``MetricsStream`` appends one JSON line per chunk to ``metrics.jsonl`` in the run's directory
as training goes (method, chunk, updates, mean env steps, every train metric and the chunk-end greedy val utility,
mean over rows, and the chunk's seconds), flushed line by line, so ``tail -f`` or any reader can follow a long run;
with ``tensorboard=True`` the same scalars also go to TensorBoard event files under ``tensorboard/`` (needs the
optional ``tensorboardX`` package).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

EXIT_CODE = 3
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class Watchdog:
    """Limits on the programs of one method (``guard``); ``chunk_done(seconds)`` after each chunk."""

    def __init__(self, factor: float = 20.0, floor_s: float = 600.0, resume_hint: str = ""):
        self.factor, self.floor_s, self.resume_hint = float(factor), float(floor_s), resume_hint
        self.slowest: dict = {}  # label -> its slowest chunk so far (s)

    @classmethod
    def from_env(cls, resume_hint: str = "") -> "Watchdog | None":
        """From ``E5JAX_WATCHDOG`` / ``E5JAX_WATCHDOG_FLOOR_S``; None when off. A bad value is a ValueError."""
        raw = os.environ.get("E5JAX_WATCHDOG", "20").strip().lower()
        if raw in ("off", "0", "false", "no"):
            return None
        try:
            factor = float(raw)
            floor = float(os.environ.get("E5JAX_WATCHDOG_FLOOR_S", "600"))
        except ValueError:
            raise ValueError("E5JAX_WATCHDOG must be off or a number (the factor over the slowest chunk) and "
                             "E5JAX_WATCHDOG_FLOOR_S a number of seconds") from None
        if not (math.isfinite(factor) and factor > 0 and math.isfinite(floor) and floor > 0):
            raise ValueError(f"E5JAX_WATCHDOG ({raw}) and E5JAX_WATCHDOG_FLOOR_S ({floor}) must be > 0")
        return cls(factor, floor, resume_hint)

    def limit(self, chunk_of: str | None = None) -> float:
        """The limit of a chunk of method ``chunk_of``, or (None) of any other program."""
        return self.floor_s if chunk_of is None else max(self.floor_s, self.factor * self.slowest.get(chunk_of, 0.0))

    def chunk_done(self, label: str, seconds: float) -> None:
        self.slowest[label] = max(self.slowest.get(label, 0.0), float(seconds))

    @contextlib.contextmanager
    def guard(self, what: str, chunk_of: str | None = None):
        """Run the block under a timer: past the limit, one line on stderr and ``os._exit(EXIT_CODE)``."""
        limit = self.limit(chunk_of)
        chunk = chunk_of is not None

        def fire():
            print(f"e5jax: {what} did not return within {limit:.0f} s (watchdog: "
                  f"{'%g x the slowest chunk so far, at least ' % self.factor if chunk else ''}"
                  f"{self.floor_s:g} s; E5JAX_WATCHDOG); stopped, the latest checkpoint is kept"
                  + (f": continue with {self.resume_hint}" if self.resume_hint else ""), file=sys.stderr, flush=True)
            os._exit(EXIT_CODE)

        timer = threading.Timer(limit, fire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()


_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("e5jax_watch", default=(None, None))


@contextlib.contextmanager
def watching(watchdog: "Watchdog | None", stream: "MetricsStream | None"):
    """The watchdog and the metrics stream of the training inside this block (``active()``)."""
    token = _ACTIVE.set((watchdog, stream))
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        if stream is not None:
            stream.close()


def active() -> tuple:
    """(watchdog, stream) set by the enclosing ``watching``, else (None, None)."""
    return _ACTIVE.get()


def guard(what: str, chunk_of: str | None = None):
    """The active watchdog's ``guard``, or nothing without one."""
    watchdog = active()[0]
    return watchdog.guard(what, chunk_of) if watchdog is not None else contextlib.nullcontext()


def injected_stall(label: str, chunk: int) -> None:
    """The fault injection of the watchdog's tests: sleep for good when ``E5JAX_WATCHDOG_STALL`` names this chunk
    (``"<label>:<chunk>"``, chunk counted from 1)."""
    if os.environ.get("E5JAX_WATCHDOG_STALL") == f"{label}:{chunk}":
        while True:
            time.sleep(3600)


class MetricsStream:
    """One JSON line per chunk in ``directory/metrics.jsonl`` (appended, flushed per line), and TensorBoard scalars
    when ``tensorboard``."""

    def __init__(self, directory: str | os.PathLike, tensorboard: bool = False):
        self.path = Path(directory) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise ValueError("--tensorboard needs the optional tensorboardX package "
                                 "(pip install tensorboardX)") from None
            self.writer = SummaryWriter(str(Path(directory) / TENSORBOARD_DIR))

    def chunk(self, label: str, chunk: int, updates: int, metrics: dict, chunk_s: float) -> dict:
        """Record one chunk: ``metrics`` as a chunk program returns them (per-row arrays), reduced to row means."""
        train = {k: _mean(v) for k, v in (metrics.get("train") or {}).items()}
        ev = metrics.get("eval") or {}
        rec = {"time": time.time(), "method": label, "chunk": int(chunk), "updates": int(updates),
               "env_steps_per_row": _mean(np.sum(np.asarray(metrics["env_steps_per_update"]), axis=-1))
               if "env_steps_per_update" in metrics else None,
               "chunk_s": float(chunk_s), "train": train,
               "val_utility": _mean(ev["utility"]) if "utility" in ev else None,
               "val_slo_violation_rate": _mean(ev["slo_violation_rate"]) if "slo_violation_rate" in ev else None}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.writer is not None:
            for k, v in {**{f"train/{k}": v for k, v in train.items()}, "val/utility": rec["val_utility"],
                         "val/slo_violation_rate": rec["val_slo_violation_rate"], "time/chunk_s": chunk_s}.items():
                if v is not None:
                    self.writer.add_scalar(f"{label}/{k}", v, updates)
            self.writer.flush()
        return rec

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _mean(x) -> float | None:
    a = np.asarray(x, np.float64)
    if a.size == 0:
        return None
    v = float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")
    return v if math.isfinite(v) else None
