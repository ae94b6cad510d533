"""Atomic file writing (temp file in the same directory + rename): an interrupted write never leaves a partial file.
Under several processes only process 0 writes (``set_writer``; ``e5jax.dist``): on the others every write here is
skipped."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np


_WRITER = True


def set_writer(flag: bool) -> None:
    global _WRITER
    _WRITER = bool(flag)


def is_writer() -> bool:
    """False in the processes of a ``jax.distributed`` job other than process 0."""
    return _WRITER


def atomic_write(path, writer, binary: bool = False) -> None:
    if not _WRITER:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            writer(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_jsonable(x):
    """numpy/jax arrays and scalars -> lists/floats; NaN/inf -> None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return to_jsonable(np.asarray(x).tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_json(path, obj) -> None:
    text = json.dumps(to_jsonable(obj), indent=1, allow_nan=False)
    atomic_write(path, lambda f: f.write(text + "\n"))


def read_json(path):
    return json.loads(Path(path).read_text())
