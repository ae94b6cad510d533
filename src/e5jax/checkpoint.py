"""Orbax checkpoints of a method's vmapped training state at chunk boundaries, for ``e5jax run --resume``.

One ``orbax.checkpoint.CheckpointManager`` per method under ``<out>/checkpoints/<method>/``, step = the number of
chunks done. Each checkpoint holds the whole vmapped state (``StandardSave``: params, optimizer states, supervised's
labelled set, the LUT's cell statistics, knn_lut's profiled rows, step counters) and the host-side progress
(``JsonSave``: eval and training metrics so far, env-step increments, eval-point updates, timings) plus the run's
fingerprint (a hash of the config, the method's config and the table). Orbax finalizes a checkpoint atomically
(written to a temporary directory, renamed when complete), so a run killed while saving leaves the previous
checkpoint as the latest one. Random keys are not stored: chunk c's keys are ``fold_in(seed key, c + 1)``, so a
resumed run draws exactly the numbers an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from e5jax.analysis import arr
from e5jax.io import to_jsonable


class ResumeError(ValueError):
    """A checkpoint that cannot be used for this run (one line, exit 2)."""


def fingerprint(parts: dict) -> dict:
    """{key: short hash} of each part (JSON-serialisable), so a mismatch can name what differs."""
    return {k: hashlib.sha256(json.dumps(to_jsonable(v), sort_keys=True).encode()).hexdigest()[:16]
            for k, v in parts.items()}


class MethodCheckpointer:
    """Save every ``every_chunks`` chunks or ``every_seconds`` seconds (whichever comes first); restore the latest."""

    def __init__(self, directory: Path, fp: dict, every_chunks: int = 0, every_seconds: float = 60.0):
        self.directory = Path(directory).absolute()
        self.fp = fp
        self.every_chunks, self.every_seconds = int(every_chunks), float(every_seconds)
        self._last = time.monotonic()
        self._mngr = None
        self.saves, self.save_s = 0, 0.0

    @property
    def mngr(self) -> ocp.CheckpointManager:
        if self._mngr is None:
            opts = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
            self._mngr = ocp.CheckpointManager(self.directory, options=opts)
        return self._mngr

    def due(self, chunks_done: int) -> bool:
        if self.every_chunks > 0 and chunks_done % self.every_chunks == 0:
            return True
        return self.every_seconds > 0 and time.monotonic() - self._last >= self.every_seconds

    def save(self, chunks_done: int, states, progress: dict) -> None:
        t = time.perf_counter()
        payload = {"fingerprint": self.fp, "chunks_done": chunks_done, **to_jsonable(progress)}
        self.mngr.save(chunks_done, args=ocp.args.Composite(state=ocp.args.StandardSave(states),
                                                            progress=ocp.args.JsonSave(payload)))
        self.mngr.wait_until_finished()
        self._last = time.monotonic()
        self.saves += 1
        self.save_s += time.perf_counter() - t

    def latest(self, target_states):
        """(chunks_done, states, progress) of the latest complete checkpoint, or None when there is none."""
        if not self.directory.is_dir():
            return None
        step = self.mngr.latest_step()
        if step is None:
            return None
        got = self.mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target_states),
                                                              progress=ocp.args.JsonRestore()))
        progress = dict(got["progress"])
        fp = progress.pop("fingerprint", {})
        differs = sorted(k for k in set(fp) | set(self.fp) if fp.get(k) != self.fp.get(k))
        if differs:
            raise ResumeError(f"checkpoint {self.directory} was made with another {', '.join(differs)} "
                              "than this run's; rerun with the same config and table, or use --overwrite")
        return int(progress.pop("chunks_done")), got["state"], progress

    def remove(self) -> None:
        if self._mngr is not None:
            self._mngr.close()
            self._mngr = None
        shutil.rmtree(self.directory, ignore_errors=True)


def f32_tree(x):
    """JSON lists (null = NaN) back to the float32 arrays the device produced, so a resumed run computes in the
    same dtype as an uninterrupted one."""
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: f32_tree(v) for k, v in x.items()}
    return arr(x).astype(np.float32)
