"""Wall-clock timing of code regions: CUDA events on a GPU, ``time.perf_counter_ns`` on CPU.

On CUDA, a region records an event pair on the current stream and nothing synchronizes until
:meth:`RegionTimer.results`, so timing does not perturb the launch pipeline.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import numpy as np
import torch


class RegionTimer:
    """Collects per-region durations in ms; a region entered n times yields n samples."""

    def __init__(self, device: str | torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self._events: dict[str, list] = defaultdict(list)

    @contextlib.contextmanager
    def region(self, name: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events[name].append((start, end))
        else:
            t0 = time.perf_counter_ns()
            yield
            self._events[name].append((t0, time.perf_counter_ns()))

    def results(self) -> dict[str, np.ndarray]:
        """Durations in ms per region (synchronizes the GPU once)."""
        if self.cuda:
            torch.cuda.synchronize()
            return {k: np.array([s.elapsed_time(e) for s, e in v]) for k, v in self._events.items()}
        return {k: np.array([(e - s) / 1e6 for s, e in v]) for k, v in self._events.items()}


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_repeats(fn, device, warmup: int, repeats: int, after=None) -> np.ndarray:
    """Run ``fn(i)`` ``warmup`` times untimed, then ``repeats`` times timed; ms per repeat.

    ``after(i)`` (untimed) runs after each call, e.g. to crop a KV cache back to its length.
    """
    for i in range(warmup):
        fn(i)
        if after is not None:
            after(i)
    synchronize(device)
    timer = RegionTimer(device)
    for i in range(repeats):
        with timer.region("fn"):
            fn(i)
        if after is not None:
            after(i)
    return timer.results()["fn"]


def summarize(samples_ms: np.ndarray) -> dict[str, float]:
    s = np.asarray(samples_ms, dtype=np.float64)
    return dict(
        p50=float(np.percentile(s, 50)),
        p95=float(np.percentile(s, 95)),
        mean=float(s.mean()),
        std=float(s.std(ddof=1)) if len(s) > 1 else 0.0,
        n=int(len(s)),
    )
