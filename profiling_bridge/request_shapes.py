"""Request shapes to profile: from an existing table, or a small JSON/CSV of shapes.

A table's requests keep their features; ``prompt_tokens`` and ``expected_output_tokens`` must be among
them (the default table's are). A shapes file has the columns/keys
``request_id, task_type, split, prompt_tokens, output_tokens`` and becomes two features
``prompt_tokens, expected_output_tokens``. Quality datasets (.jsonl) are read by
:func:`profiling_bridge.quality.requests_from_dataset`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e5jax.table import ProfileTable, TableError, load_table
from profiling_bridge.archs import BridgeError

SHAPE_FIELDS = ("request_id", "task_type", "split", "prompt_tokens", "output_tokens")
FEATURE_NAMES = ("prompt_tokens", "expected_output_tokens")


@dataclass(frozen=True)
class Requests:
    ids: np.ndarray  # [R] str
    task_types: np.ndarray  # [R] str
    split: np.ndarray  # [R] str
    feature_names: tuple[str, ...]
    features: np.ndarray  # [R, F] float64
    prompt_tokens: np.ndarray  # [R] int: text tokens (image placeholders come on top)
    output_tokens: np.ndarray  # [R] int >= 1
    source: str

    def __len__(self) -> int:
        return len(self.ids)


def from_table(table: ProfileTable, source: str, output_tokens: int | None = None) -> Requests:
    """The table's requests. ``output_tokens``: the output length of every request, for a table without an
    ``expected_output_tokens`` column; refused when the table has the column."""
    names = list(table.feature_names)
    have_output = "expected_output_tokens" in names
    if output_tokens is not None and have_output:
        raise BridgeError(f"--output-tokens {output_tokens}: {source} has an expected_output_tokens column; the flag "
                          "is only for a table without one")
    if output_tokens is not None and output_tokens < 1:
        raise BridgeError(f"--output-tokens must be at least 1, got {output_tokens}")
    for need in FEATURE_NAMES:
        if need not in names and not (need == "expected_output_tokens" and output_tokens is not None):
            hint = ("; give every request's output length with --output-tokens N" if need == "expected_output_tokens"
                    else "")
            raise BridgeError(f"{source}: table has no feature {need!r} (features: {', '.join(names) or 'none'}){hint}")
    prompt = np.rint(table.features[:, names.index("prompt_tokens")]).astype(np.int64)
    output = (np.rint(table.features[:, names.index("expected_output_tokens")]).astype(np.int64) if have_output
              else np.full(len(prompt), output_tokens, dtype=np.int64))
    return Requests(
        ids=table.request_ids,
        task_types=table.task_types,
        split=table.split,
        feature_names=table.feature_names,
        features=table.features,
        prompt_tokens=np.maximum(prompt, 1),
        output_tokens=np.maximum(output, 1),
        source=source,
    )


def from_shapes(rows: list[dict], source: str) -> Requests:
    if not rows:
        raise BridgeError(f"{source}: no requests")
    for i, row in enumerate(rows):
        missing = [f for f in SHAPE_FIELDS if f not in row or str(row[f]).strip() == ""]
        if missing:
            raise BridgeError(f"{source}: request #{i + 1} has no {missing[0]!r} (need {', '.join(SHAPE_FIELDS)})")

    def ints(field):
        out = []
        for row in rows:
            try:
                v = float(row[field])
            except (TypeError, ValueError):
                raise BridgeError(f"{source}: request {row['request_id']!r}, {field}: not a number: {row[field]!r}") from None
            if v != int(v) or v < 1:
                raise BridgeError(f"{source}: request {row['request_id']!r}, {field}: must be a positive integer, got {row[field]!r}")
            out.append(int(v))
        return np.array(out, dtype=np.int64)

    prompt, output = ints("prompt_tokens"), ints("output_tokens")
    ids = np.array([str(r["request_id"]) for r in rows])
    if len(set(ids.tolist())) != len(ids):
        dup = next(x for x in ids.tolist() if ids.tolist().count(x) > 1)
        raise BridgeError(f"{source}: request {dup!r} appears more than once")
    return Requests(
        ids=ids,
        task_types=np.array([str(r["task_type"]) for r in rows]),
        split=np.array([str(r["split"]) for r in rows]),
        feature_names=FEATURE_NAMES,
        features=np.stack([prompt, output], axis=1).astype(np.float64),
        prompt_tokens=prompt,
        output_tokens=output,
        source=source,
    )


def load_requests(path: str | Path) -> Requests:
    """Requests from a table (.npz, or .csv with a latency_ms column) or a shapes file (.json, .csv)."""
    p = Path(path)
    if not p.is_file():
        raise BridgeError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz" or (suffix == ".csv" and "latency_ms" in _csv_header(p)):
            return from_table(load_table(p), str(p))
    except TableError as e:
        raise BridgeError(str(e)) from None
    if suffix == ".csv":
        with open(p, newline="") as f:
            return from_shapes(list(csv.DictReader(f)), str(p))
    if suffix == ".json":
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise BridgeError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
        rows = data.get("requests") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise BridgeError(f"{p}: expected a list of request objects (or {{\"requests\": [...]}})")
        return from_shapes(rows, str(p))
    raise BridgeError(f"{p}: unknown requests format {suffix!r} (use a table .npz/.csv, shapes .json/.csv, or a dataset .jsonl)")


def _csv_header(p: Path) -> list[str]:
    with open(p, newline="") as f:
        return [h.strip() for h in next(csv.reader(f), [])]
