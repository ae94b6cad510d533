"""The profile table: every (request, config) with its measured latency and quality.

The contract (shared by the lab and profiling_bridge; docs/default_table.md describes the embedded table):

* knob grid: ordered mapping knob -> sorted integer levels; configs are the Cartesian product in
  row-major order (the last knob varies fastest); the *full* config is the max level of every knob,
  i.e. the last config index.
* per request: ``request_id``, ``task_type``, ``split`` in {train, val}, a float feature vector;
* per (request, config): ``latency_ms > 0``, ``quality`` in [0, 1], optional ``latency_std_ms >= 0`` and
  optional ``exact_match`` in [0, 1] (a measured table whose ``quality`` is a graded score keeps the exact match of
  the greedy answer beside it; controllers and rewards read ``quality`` only);
* every request has every config exactly once.

Anything else raises :class:`TableError` with a one-line message naming the offending
request / config / column. The CLI turns it into exit code 2.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from e5jax.io import atomic_write

DEFAULT_KNOBS = ("vision_tokens", "top_k", "active_blocks")
SPLITS = ("train", "val")
REQUIRED_COLUMNS = ("request_id", "split", "task_type")
VALUE_COLUMNS = ("latency_ms", "quality")
OPTIONAL_VALUE_COLUMNS = ("latency_std_ms", "exact_match")
FEATURE_PREFIX = "feat_"


class TableError(ValueError):
    """A malformed profile table. The message is one line naming the problem."""


@dataclasses.dataclass(frozen=True, eq=False)
class ProfileTable:
    """Host-side (numpy) profile table. Arrays are indexed [request] or [request, config]."""

    knobs: dict[str, np.ndarray]  # ordered knob name -> sorted int levels
    request_ids: np.ndarray  # [R] str
    task_types: np.ndarray  # [R] str
    split: np.ndarray  # [R] str, each in SPLITS
    feature_names: tuple[str, ...]
    features: np.ndarray  # [R, F] float64
    latency_ms: np.ndarray  # [R, C] float64
    quality: np.ndarray  # [R, C] float64
    latency_std_ms: np.ndarray | None = None  # [R, C] float64
    exact_match: np.ndarray | None = None  # [R, C] float64 in [0, 1]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        validate(self)

    # ----------------------------------------------------------------- derived views
    @property
    def knob_names(self) -> tuple[str, ...]:
        return tuple(self.knobs)

    @property
    def knob_sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.knobs.values())

    @property
    def num_requests(self) -> int:
        return len(self.request_ids)

    @property
    def num_configs(self) -> int:
        return int(np.prod(self.knob_sizes))

    @property
    def full_config(self) -> int:
        return self.num_configs - 1

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.task_types.tolist())))

    @property
    def task_index(self) -> np.ndarray:
        lookup = {t: i for i, t in enumerate(self.task_names)}
        return np.array([lookup[t] for t in self.task_types], dtype=np.int32)

    def config_levels(self) -> np.ndarray:
        """[C, K] knob level values of every config, row-major."""
        idx = np.stack(np.unravel_index(np.arange(self.num_configs), self.knob_sizes), axis=-1)
        return np.stack([lv[idx[:, k]] for k, lv in enumerate(self.knobs.values())], axis=-1)

    def config_label(self, c: int) -> str:
        lv = self.config_levels()[c]
        return "(" + ", ".join(f"{n}={int(v)}" for n, v in zip(self.knob_names, lv)) + ")"

    def split_indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split).astype(np.int32)

    # ----------------------------------------------------------------- export
    def to_npz(self, path: str | os.PathLike) -> None:
        arrays = dict(
            knob_names=np.array(self.knob_names),
            request_ids=self.request_ids.astype(str),
            task_types=self.task_types.astype(str),
            split=self.split.astype(str),
            feature_names=np.array(self.feature_names, dtype=str),
            features=self.features,
            latency_ms=self.latency_ms.astype(np.float32),
            quality=self.quality.astype(np.float32),
            meta=np.array(json.dumps(self.meta, sort_keys=True)),
        )
        for name, levels in self.knobs.items():
            arrays[f"knob__{name}"] = levels
        for name in OPTIONAL_VALUE_COLUMNS:
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name).astype(np.float32)
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays), binary=True)

    def to_csv(self, path: str | os.PathLike) -> None:
        """Long form: one row per (request, config), written column-wise by pyarrow (floats in their shortest
        round-trip form, so reading the file back gives the same float64 values)."""
        import pyarrow as pa
        import pyarrow.csv as pcsv

        R, C = self.num_requests, self.num_configs
        levels = self.config_levels()
        cols = {h: np.repeat(np.asarray(v).astype(str), C) for h, v in
                (("request_id", self.request_ids), ("split", self.split), ("task_type", self.task_types))}
        cols.update({FEATURE_PREFIX + n: np.repeat(self.features[:, j].astype(np.float64), C)
                     for j, n in enumerate(self.feature_names)})
        cols.update({k: np.tile(levels[:, j].astype(np.int64), R) for j, k in enumerate(self.knob_names)})
        cols["latency_ms"] = self.latency_ms.astype(np.float64).ravel()
        cols["quality"] = self.quality.astype(np.float64).ravel()
        for name in OPTIONAL_VALUE_COLUMNS:
            if getattr(self, name) is not None:
                cols[name] = getattr(self, name).astype(np.float64).ravel()
        table = pa.table({h: pa.array(v) for h, v in cols.items()})

        head = io.StringIO()
        csv.writer(head, lineterminator="\n").writerow(list(cols))

        def write(f):
            f.write(head.getvalue().encode())
            try:  # plain fields, as the csv module writes them; quoted only where a value needs it
                pcsv.write_csv(table, f, pcsv.WriteOptions(include_header=False, quoting_style="none"))
            except pa.ArrowInvalid:
                f.seek(len(head.getvalue().encode()))
                f.truncate()
                pcsv.write_csv(table, f, pcsv.WriteOptions(include_header=False, quoting_style="needed"))

        atomic_write(path, write, binary=True)
        meta_path = Path(str(path) + ".meta.json")
        atomic_write(meta_path, lambda f: json.dump(self.meta, f, indent=2, sort_keys=True), binary=False)

    def save(self, path: str | os.PathLike) -> None:
        suffix = Path(path).suffix.lower()
        if suffix == ".npz":
            self.to_npz(path)
        elif suffix == ".csv":
            self.to_csv(path)
        else:
            raise TableError(f"{path}: unknown table extension {suffix!r} (use .csv or .npz)")

    def tuning_split(self, fraction: float = 0.25, seed: int = 0) -> "ProfileTable":
        """The train requests only, a random ``fraction`` of them (per task, at least one) relabelled "val".

        Defaults (heads, hyperparameters) are chosen on this split and never on the real val split.
        """
        if not 0 < fraction < 1:
            raise TableError(f"tuning fraction must be in (0, 1), got {fraction}")
        train = self.split_indices("train")
        rng = np.random.default_rng(seed)
        split = np.full(len(train), "train", dtype=object)
        tasks = self.task_types[train]
        for t in np.unique(tasks):
            idx = np.flatnonzero(tasks == t)
            k = min(len(idx) - 1, max(1, int(round(fraction * len(idx)))))
            if k >= 1:
                split[rng.choice(idx, size=k, replace=False)] = "val"
        optional = {n: None if getattr(self, n) is None else getattr(self, n)[train] for n in OPTIONAL_VALUE_COLUMNS}
        meta = dict(self.meta, tuning_split=dict(fraction=fraction, seed=seed, of="train requests only; val excluded"))
        return ProfileTable(knobs=self.knobs, request_ids=self.request_ids[train], task_types=tasks,
                            split=split.astype(str), feature_names=self.feature_names, features=self.features[train],
                            latency_ms=self.latency_ms[train], quality=self.quality[train], meta=meta, **optional)

    def replace(self, **changes) -> "ProfileTable":
        return dataclasses.replace(self, **changes)

    def varying_features(self) -> list[str]:
        """The feature columns with more than one value over all requests (the ones a lookup can be keyed on)."""
        return [n for j, n in enumerate(self.feature_names) if len(np.unique(self.features[:, j])) > 1]

    def take(self, idx) -> "ProfileTable":
        """The requests ``idx`` (indices or a boolean mask), every per-request column with them."""
        idx = np.asarray(idx)
        optional = {n: None if getattr(self, n) is None else getattr(self, n)[idx] for n in OPTIONAL_VALUE_COLUMNS}
        return self.replace(request_ids=self.request_ids[idx], task_types=self.task_types[idx], split=self.split[idx],
                            features=self.features[idx], latency_ms=self.latency_ms[idx], quality=self.quality[idx],
                            **optional)

    def without_tasks(self, names) -> "ProfileTable":
        """The table less every request of the task types ``names`` (an analysis of part of a table, e.g. without a
        question type the model never learned); a name the table does not have, or dropping every type, is a
        ``TableError``."""
        names = list(names)
        have = sorted(set(np.asarray(self.task_types).astype(str).tolist()))
        unknown = [n for n in names if n not in have]
        if unknown:
            raise TableError(f"task type {unknown[0]!r} is not in the table (it has {', '.join(have)})")
        keep = ~np.isin(np.asarray(self.task_types).astype(str), names)
        if not keep.any():
            raise TableError(f"dropping {', '.join(names)} leaves no requests")
        return self.take(np.flatnonzero(keep))


def load_tables(paths, drop_tasks=()) -> dict:
    """{path: table} for the analysis scripts, each less the requests of ``drop_tasks`` (``without_tasks``); a
    ``TableError`` names the first problem."""
    tables = {p: load_table(p) for p in paths}
    return {p: t.without_tasks(drop_tasks) for p, t in tables.items()} if drop_tasks else tables


# --------------------------------------------------------------------------- validation
def validate(t: ProfileTable) -> None:
    R = len(t.request_ids)
    if R == 0:
        raise TableError("table has no requests")
    if not t.knobs:
        raise TableError("table has no knobs")
    for name, levels in t.knobs.items():
        levels = np.asarray(levels)
        if levels.ndim != 1 or len(levels) == 0:
            raise TableError(f"knob {name!r}: no levels")
        if len(np.unique(levels)) != len(levels) or np.any(np.diff(levels) <= 0):
            raise TableError(f"knob {name!r}: levels must be strictly increasing, got {levels.tolist()}")
    C = int(np.prod([len(v) for v in t.knobs.values()]))
    if C < 2:
        raise TableError(f"grid has only {C} config: nothing to choose between (need at least 2)")
    for name in ("task_types", "split"):
        if getattr(t, name).shape != (R,):
            raise TableError(f"{name}: expected shape ({R},), got {getattr(t, name).shape}")
    dup = [k for k, n in Counter(t.request_ids.tolist()).items() if n > 1]
    if dup:
        raise TableError(f"request {dup[0]!r}: appears more than once")
    bad_split = [(r, s) for r, s in zip(t.request_ids, t.split) if s not in SPLITS]
    if bad_split:
        r, s = bad_split[0]
        raise TableError(f"request {str(r)!r}: unknown split {str(s)!r} (expected one of {', '.join(SPLITS)})")
    for s in SPLITS:
        if not np.any(t.split == s):
            raise TableError(f"no request in the {s!r} split")
    if t.features.ndim != 2 or t.features.shape[0] != R or t.features.shape[1] != len(t.feature_names):
        raise TableError(f"features: expected shape ({R}, {len(t.feature_names)}), got {t.features.shape}")
    bad = ~np.isfinite(t.features)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise TableError(f"request {str(t.request_ids[i])!r}, column feat_{t.feature_names[j]}: non-finite value")
    arrays = [("latency_ms", t.latency_ms), ("quality", t.quality)]
    arrays += [(n, getattr(t, n)) for n in OPTIONAL_VALUE_COLUMNS if getattr(t, n) is not None]
    levels = None
    for col, a in arrays:
        if a.shape != (R, C):
            raise TableError(f"{col}: expected shape ({R}, {C}), got {a.shape}")
        bad = ~np.isfinite(a)
        if bad.any():
            levels = _levels(t) if levels is None else levels
            i, c = np.argwhere(bad)[0]
            raise TableError(f"request {str(t.request_ids[i])!r}, config {levels[c]}, column {col}: non-finite value {float(a[i, c])}")
    checks = [
        ("latency_ms", t.latency_ms <= 0, "must be > 0"),
        ("quality", (t.quality < 0) | (t.quality > 1), "must be in [0, 1]"),
    ]
    if t.latency_std_ms is not None:
        checks.append(("latency_std_ms", t.latency_std_ms < 0, "must be >= 0"))
    if t.exact_match is not None:
        checks.append(("exact_match", (t.exact_match < 0) | (t.exact_match > 1), "must be in [0, 1]"))
    for col, bad, what in checks:
        if bad.any():
            levels = _levels(t) if levels is None else levels
            i, c = np.argwhere(bad)[0]
            a = getattr(t, col)
            raise TableError(f"request {str(t.request_ids[i])!r}, config {levels[c]}, column {col}: {float(a[i, c])!r} {what}")


def table_notes(t: ProfileTable) -> list[str]:
    """What is legitimate but worth knowing about a table (``e5jax validate`` prints these lines).

    One task type: the task LUT baselines (lut, heuristic, the task x budget LUT) are per-budget LUTs. A feature
    constant on the train split: uninformative to every controller (its standardized value is constant: the
    environment maps a train std of 0 to 1, ``env.feature_standardization``)."""
    notes = []
    tasks = t.task_names
    if len(tasks) == 1:
        notes.append(f"1 task type ({tasks[0]!r}): the task LUT is a per-budget LUT")
    train = t.features[t.split == "train"]
    for j, name in enumerate(t.feature_names):
        if np.all(train[:, j] == train[0, j]):
            varies = "" if np.all(t.features[:, j] == train[0, j]) else " (it varies on val)"
            notes.append(f"feature {name} is constant on train ({train[0, j]:g}): uninformative{varies}")
    return notes


def _levels(t: ProfileTable) -> list[str]:
    names = list(t.knobs)
    sizes = [len(v) for v in t.knobs.values()]
    idx = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=-1)
    return ["(" + ", ".join(f"{n}={int(t.knobs[n][k])}" for n, k in zip(names, row)) + ")" for row in idx]


# --------------------------------------------------------------------------- import
def load_table(path: str | os.PathLike, knobs: tuple[str, ...] | None = None) -> ProfileTable:
    """Load a table from ``.csv`` (long form) or ``.npz``. Raises TableError on any defect."""
    p = Path(path)
    if not p.exists():
        raise TableError(f"{p}: no such file")
    if p.is_dir():
        raise TableError(f"{p}: is a directory, not a table file")
    if p.stat().st_size == 0:
        raise TableError(f"{p}: empty file")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _load_npz(p)
    if suffix == ".csv":
        return _load_csv(p, knobs or DEFAULT_KNOBS)
    raise TableError(f"{p}: unknown table extension {suffix!r} (use .csv or .npz)")


def _load_npz(p: Path) -> ProfileTable:
    try:
        z = np.load(p, allow_pickle=False)
        files = set(z.files)
    except Exception as e:  # noqa: BLE001 - any unreadable npz is a table error
        raise TableError(f"{p}: not a readable .npz file ({type(e).__name__})") from None
    need = {"knob_names", "request_ids", "task_types", "split", "feature_names", "features", "latency_ms", "quality"}
    missing = sorted(need - files)
    if missing:
        raise TableError(f"{p}: missing array {missing[0]!r}")
    knob_names = [str(k) for k in z["knob_names"]]
    knobs = {}
    for k in knob_names:
        if f"knob__{k}" not in files:
            raise TableError(f"{p}: missing levels for knob {k!r}")
        knobs[k] = np.asarray(z[f"knob__{k}"], dtype=np.int64)
    meta = json.loads(str(z["meta"])) if "meta" in files else {}
    try:
        return ProfileTable(
            knobs=knobs,
            request_ids=np.asarray(z["request_ids"]).astype(str),
            task_types=np.asarray(z["task_types"]).astype(str),
            split=np.asarray(z["split"]).astype(str),
            feature_names=tuple(str(x) for x in z["feature_names"]),
            features=np.asarray(z["features"], dtype=np.float64),
            latency_ms=np.asarray(z["latency_ms"], dtype=np.float64),
            quality=np.asarray(z["quality"], dtype=np.float64),
            meta=meta,
            **{n: np.asarray(z[n], dtype=np.float64) if n in files else None for n in OPTIONAL_VALUE_COLUMNS},
        )
    except (TypeError, ValueError) as e:
        if isinstance(e, TableError):
            raise
        raise TableError(f"{p}: {e}") from None


def _parse_float(s: str, where: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise TableError(f"{where}: non-numeric value {s!r}") from None


def _csv_header(p: Path, knob_names: tuple[str, ...]) -> list[str]:
    """The header row, checked: no duplicate, unknown or missing column."""
    with open(p, newline="") as f:
        first = next(csv.reader(f), None)
        if first is None or (not "".join(first).strip() and not f.read().strip()):
            raise TableError(f"{p}: empty file")
    header = [h.strip() for h in first]
    dupcols = [k for k, n in Counter(header).items() if n > 1]
    if dupcols:
        raise TableError(f"{p}: column {dupcols[0]!r} appears twice in the header")
    allowed = set(REQUIRED_COLUMNS) | set(VALUE_COLUMNS) | set(OPTIONAL_VALUE_COLUMNS) | set(knob_names)
    for h in header:
        if h not in allowed and not h.startswith(FEATURE_PREFIX):
            raise TableError(
                f"{p}: unexpected column {h!r} (allowed: request_id, split, task_type, feat_*, "
                f"{', '.join(knob_names)}, latency_ms, quality, {', '.join(OPTIONAL_VALUE_COLUMNS)})"
            )
    for h in (*REQUIRED_COLUMNS, *knob_names, *VALUE_COLUMNS):
        if h not in header:
            raise TableError(f"{p}: missing column {h!r}")
    return header


def _same_number(a: str, b: str) -> bool:
    """'9.0' and '9.00' are the same feature value (the column-wise reader compares parsed values)."""
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def _load_csv(p: Path, knob_names: tuple[str, ...]) -> ProfileTable:
    """Long-form CSV. A well-formed file is read column-wise by pyarrow (10^7 rows in seconds); anything the fast
    path does not accept as it stands (a parse error, stray whitespace, a duplicate, missing or conflicting row, ...)
    is read again by the row-by-row reader, which names the offending line and column."""
    header = _csv_header(p, knob_names)
    fast = _load_csv_fast(p, knob_names, header)
    return fast if fast is not None else _load_csv_rows(p, knob_names, header)


def _load_csv_fast(p: Path, knob_names: tuple[str, ...], header: list[str]) -> ProfileTable | None:
    """Column-wise read of a well-formed long-form CSV, or None when anything is off (the row reader then finds
    and names it). Accepts exactly what the row reader accepts; ``tests/test_table.py`` holds the two equal."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return None
    str_cols = list(REQUIRED_COLUMNS)
    num_cols = [h for h in header if h not in str_cols]
    if [h.strip() for h in header] != header:
        return None
    try:
        tab = pcsv.read_csv(
            p,
            read_options=pcsv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=pcsv.ParseOptions(ignore_empty_lines=True),
            convert_options=pcsv.ConvertOptions(
                column_types={**{h: pa.string() for h in str_cols}, **{h: pa.float64() for h in num_cols}},
                null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, ValueError):
        return None
    N = tab.num_rows
    if N == 0:
        return None
    strs = {}
    for h in str_cols:
        c = tab.column(h).combine_chunks()
        if pc.any(pc.not_equal(c, pc.utf8_trim_whitespace(c))).as_py() or pc.any(pc.equal(c, "")).as_py():
            return None
        enc = c.dictionary_encode()  # dictionary in order of first appearance
        strs[h] = (enc.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                   np.asarray(enc.dictionary.to_pylist(), dtype=str))
    num = {h: tab.column(h).to_numpy() for h in num_cols}
    del tab
    # knob levels: integers; configs in row-major order
    lvl_idx, knobs = [], {}
    for k in knob_names:
        v = num[k]
        if not (np.isfinite(v).all() and (v == np.round(v)).all()):
            return None
        knobs[k] = np.unique(np.asarray(pc.unique(pa.array(v))).astype(np.int64))
        lvl_idx.append(np.searchsorted(knobs[k], v.astype(np.int64)))
    sizes = [len(knobs[k]) for k in knob_names]
    C = int(np.prod(sizes))
    if C < 2:
        return None
    cfg = np.ravel_multi_index(lvl_idx, sizes)
    # requests, in order of first appearance; every row of a request must agree with its first row
    rid, ids = strs["request_id"]
    R = len(ids)
    running = np.maximum.accumulate(rid)
    first = np.flatnonzero(np.r_[True, running[1:] != running[:-1]])  # first row of request 0, 1, ...
    if len(first) != R:
        return None
    row0 = first[rid]
    task, task_names = strs["task_type"]
    split, split_names = strs["split"]
    feat_cols = [h for h in header if h.startswith(FEATURE_PREFIX)]
    if not set(split_names) <= set(SPLITS):
        return None
    if (task != task[row0]).any() or (split != split[row0]).any():
        return None
    for h in feat_cols:
        if not (num[h] == num[h][row0]).all():  # also refuses NaN features: the row reader decides
            return None
    # every (request, config) exactly once
    lin = rid * C + cfg
    if N != R * C or np.bincount(lin, minlength=R * C).max() != 1:
        return None
    value_cols = list(VALUE_COLUMNS) + [n for n in OPTIONAL_VALUE_COLUMNS if n in num]
    values = {}
    for vc in value_cols:
        a = np.empty(R * C)
        a[lin] = num[vc]
        values[vc] = a.reshape(R, C)
    features = np.stack([num[h][first] for h in feat_cols], axis=-1) if feat_cols else np.zeros((R, 0))
    return _csv_table(p, knob_names, knobs, ids, task_names[task[first]], split_names[split[first]], feat_cols,
                      features.astype(np.float64), values)


def _csv_table(p: Path, knob_names, knobs, ids, task_types, split, feat_cols, features, values) -> ProfileTable:
    """The table both CSV readers build (the meta from ``<file>.meta.json`` when present)."""
    meta_path = Path(str(p) + ".meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"source": str(p)}
    return ProfileTable(
        knobs={k: knobs[k] for k in knob_names},
        request_ids=np.asarray(ids),
        task_types=np.asarray(task_types),
        split=np.asarray(split),
        feature_names=tuple(h[len(FEATURE_PREFIX):] for h in feat_cols),
        features=features,
        latency_ms=values["latency_ms"],
        quality=values["quality"],
        meta=meta,
        **{n: values.get(n) for n in OPTIONAL_VALUE_COLUMNS},
    )


def _load_csv_rows(p: Path, knob_names: tuple[str, ...], header: list[str]) -> ProfileTable:
    """Row-by-row reader: slow, but names the line and column of any defect."""
    with open(p, newline="") as f:
        text = f.read()
    reader = csv.reader(io.StringIO(text))
    next(reader)
    col = {h: i for i, h in enumerate(header)}
    feat_cols = [h for h in header if h.startswith(FEATURE_PREFIX)]

    rows = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not x.strip() for x in row):
            continue
        if len(row) != len(header):
            raise TableError(f"{p}:{lineno}: ragged row with {len(row)} fields, header has {len(header)}")
        rows.append((lineno, [x.strip() for x in row]))
    if not rows:
        raise TableError(f"{p}: header but no data rows")

    # knob levels
    knob_vals = {}
    for k in knob_names:
        vals = []
        for lineno, row in rows:
            v = _parse_float(row[col[k]], f"{p}:{lineno}, column {k}")
            if not math.isfinite(v) or v != int(v):
                raise TableError(f"{p}:{lineno}, column {k}: knob level must be an integer, got {row[col[k]]!r}")
            vals.append(int(v))
        knob_vals[k] = np.array(vals, dtype=np.int64)
    knobs = {k: np.unique(v) for k, v in knob_vals.items()}
    sizes = [len(v) for v in knobs.values()]
    C = int(np.prod(sizes))
    if C < 2:
        raise TableError(f"{p}: grid has only {C} config: nothing to choose between (need at least 2)")
    lvl_idx = [np.searchsorted(knobs[k], knob_vals[k]) for k in knob_names]
    cfg = np.ravel_multi_index(lvl_idx, sizes)

    # requests
    req_order: dict[str, int] = {}
    req_info: dict[str, tuple] = {}
    for lineno, row in rows:
        rid = row[col["request_id"]]
        if not rid:
            raise TableError(f"{p}:{lineno}: empty request_id")
        feats = tuple(row[col[h]] for h in feat_cols)
        info = (row[col["task_type"]], row[col["split"]], feats)
        if rid not in req_order:
            req_order[rid] = len(req_order)
            req_info[rid] = info
            if info[1] not in SPLITS:
                raise TableError(f"{p}:{lineno}: request {rid!r}: unknown split {info[1]!r} (expected train or val)")
            if not info[0]:
                raise TableError(f"{p}:{lineno}: request {rid!r}: empty task_type")
        else:
            prev = req_info[rid]
            if prev[0] != info[0]:
                raise TableError(f"{p}:{lineno}: request {rid!r}: conflicting task_type {prev[0]!r} vs {info[0]!r}")
            if prev[1] != info[1]:
                raise TableError(f"{p}:{lineno}: request {rid!r}: conflicting split {prev[1]!r} vs {info[1]!r}")
            if prev[2] != info[2] and (j := next((j for j in range(len(feats)) if prev[2][j] != feats[j]
                                                 and not _same_number(prev[2][j], feats[j])), None)) is not None:
                raise TableError(f"{p}:{lineno}: request {rid!r}: conflicting {feat_cols[j]} {prev[2][j]!r} vs {feats[j]!r}")
    R = len(req_order)
    ids = list(req_order)
    labels = None

    def cfg_label(c):
        nonlocal labels
        if labels is None:
            labels = ["(" + ", ".join(f"{k}={int(knobs[k][j])}" for k, j in zip(knob_names, r)) + ")"
                      for r in np.stack(np.unravel_index(np.arange(C), sizes), axis=-1)]
        return labels[c]

    value_cols = list(VALUE_COLUMNS) + [n for n in OPTIONAL_VALUE_COLUMNS if n in col]
    values = {c: np.full((R, C), np.nan) for c in value_cols}
    seen = np.zeros((R, C), dtype=bool)
    for (lineno, row), c in zip(rows, cfg):
        r = req_order[row[col["request_id"]]]
        if seen[r, c]:
            raise TableError(f"{p}:{lineno}: duplicate row for request {ids[r]!r}, config {cfg_label(c)}")
        seen[r, c] = True
        for vc in value_cols:
            values[vc][r, c] = _parse_float(row[col[vc]], f"{p}:{lineno}, request {ids[r]!r}, column {vc}")
    if not seen.all():
        r, c = np.argwhere(~seen)[0]
        raise TableError(f"{p}: request {ids[r]!r} is missing config {cfg_label(c)}")

    features = np.array(
        [[_parse_float(x, f"{p}: request {rid!r}, column {h}") for x, h in zip(req_info[rid][2], feat_cols)] for rid in ids],
        dtype=np.float64,
    ).reshape(R, len(feat_cols))
    return _csv_table(p, knob_names, knobs, ids, [req_info[r][0] for r in ids], [req_info[r][1] for r in ids],
                      feat_cols, features, values)


# --------------------------------------------------------------------------- helpers
def default_table_path() -> Path:
    return Path(__file__).parent / "data" / "default_table.npz"


def load_default_table() -> ProfileTable:
    return load_table(default_table_path())
