"""ProfileTable: round trips and every malformed-input case is a one-line TableError (CLI: exit 2)."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_small_table
from e5jax.cli import main
from e5jax.table import (DEFAULT_KNOBS, TableError, _csv_header, _load_csv_fast, _load_csv_rows, load_default_table,
                         load_table)


def test_csv_and_npz_round_trip(tmp_path, small_table):
    for ext in ("csv", "npz"):
        p = tmp_path / f"t.{ext}"
        small_table.save(p)
        t = load_table(p)
        assert t.knob_names == small_table.knob_names
        np.testing.assert_array_equal(t.request_ids, small_table.request_ids)
        np.testing.assert_array_equal(t.task_types, small_table.task_types)
        np.testing.assert_array_equal(t.split, small_table.split)
        np.testing.assert_allclose(t.latency_ms, small_table.latency_ms, rtol=1e-6)
        np.testing.assert_allclose(t.quality, small_table.quality, rtol=1e-6)
        np.testing.assert_allclose(t.latency_std_ms, small_table.latency_std_ms, rtol=1e-6)
        np.testing.assert_allclose(t.features, small_table.features, rtol=1e-12)
        assert t.meta["source"] == "test"


def test_config_order_is_row_major_and_full_is_last(small_table):
    lv = small_table.config_levels()
    assert lv.shape == (12, 3)
    assert lv[0].tolist() == [36, 1, 8]
    assert lv[1].tolist() == [36, 1, 16]  # last knob varies fastest
    assert lv[small_table.full_config].tolist() == [576, 8, 16]


def _write_csv(tmp_path, small_table, mutate, name="bad.csv"):
    p = tmp_path / "good.csv"
    small_table.to_csv(p)
    rows = list(csv.reader(open(p)))
    rows = mutate(rows)
    out = tmp_path / name
    with open(out, "w", newline="") as f:
        if rows is not None:
            csv.writer(f).writerows(rows)
    return out


def _set(row_i, col, value):
    def m(rows):
        rows[row_i][rows[0].index(col)] = value
        return rows
    return m


CASES = {
    "nan": (_set(3, "latency_ms", "nan"), "non-finite"),
    "inf": (_set(3, "quality", "inf"), "non-finite"),
    "latency_zero": (_set(2, "latency_ms", "0"), "latency_ms: 0.0 must be > 0"),
    "latency_negative": (_set(2, "latency_ms", "-3"), "must be > 0"),
    "quality_above_one": (_set(5, "quality", "1.5"), "must be in [0, 1]"),
    "quality_negative": (_set(5, "quality", "-0.1"), "must be in [0, 1]"),
    "std_negative": (_set(5, "latency_std_ms", "-1"), "must be >= 0"),
    "missing_config": (lambda rows: rows[:4] + rows[5:], "is missing config"),
    "duplicate_row": (lambda rows: rows + [rows[3]], "duplicate row"),
    "empty_file": (lambda rows: None, "empty file"),
    "header_only": (lambda rows: rows[:1], "no data rows"),
    "unknown_split": (lambda rows: [r if i == 0 or r[0] != "q0" else r[:1] + ["test"] + r[2:] for i, r in enumerate(rows)], "unknown split 'test'"),
    "no_val_split": (lambda rows: [r if i == 0 else r[:1] + ["train"] + r[2:] for i, r in enumerate(rows)], "no request in the 'val' split"),
    "one_config": (lambda rows: [rows[0]] + [r for r in rows[1:] if r[rows[0].index("vision_tokens")] == "36" and r[rows[0].index("top_k")] == "1" and r[rows[0].index("active_blocks")] == "8"], "grid has only 1 config"),
    "non_numeric": (_set(7, "latency_ms", "fast"), "non-numeric value 'fast'"),
    "non_numeric_knob": (_set(7, "top_k", "eight"), "non-numeric value 'eight'"),
    "ragged": (lambda rows: rows[:6] + [rows[6][:-2]] + rows[7:], "ragged row"),
    "conflicting_task": (lambda rows: [r if i != 2 else r[:2] + ["zzz"] + r[3:] for i, r in enumerate(rows)], "conflicting task_type"),
    "unexpected_column": (lambda rows: [r + (["x"] if i == 0 else ["1"]) for i, r in enumerate(rows)], "unexpected column 'x'"),
    "missing_column": (lambda rows: [r[:-3] + r[-2:] for r in rows], "missing column 'latency_ms'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_csv_is_one_line_error(tmp_path, small_table, case, capsys):
    mutate, expected = CASES[case]
    p = _write_csv(tmp_path, small_table, mutate)
    with pytest.raises(TableError) as e:
        load_table(p)
    msg = str(e.value)
    assert expected in msg, msg
    assert "\n" not in msg
    # the CLI: exit 2, one line on stderr, nothing on stdout
    assert main(["validate", str(p)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and expected in err


def test_csv_column_reader_equals_row_reader(tmp_path, small_table):
    """The column-wise (pyarrow) reader gives exactly the row reader's table: rows shuffled, a feature written as
    '9.00' on one row and '9' on another, quoted fields, the std column."""
    p = tmp_path / "t.csv"
    small_table.to_csv(p)
    rows = list(csv.reader(open(p)))
    body = rows[1:]
    np.random.default_rng(0).shuffle(body)
    f = rows[0].index("feat_" + small_table.feature_names[0])
    rid = body[5][0]
    for r in body:
        if r[0] == rid:
            r[f] = repr(float(r[f])) + "0" if "." in repr(float(r[f])) else r[f]
            break
    q = tmp_path / "shuffled.csv"
    with open(q, "w", newline="") as fh:
        csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC).writerows([rows[0]] + body)
    header = _csv_header(q, DEFAULT_KNOBS)
    fast, slow = _load_csv_fast(q, DEFAULT_KNOBS, header), _load_csv_rows(q, DEFAULT_KNOBS, header)
    assert fast is not None
    for name in ("request_ids", "task_types", "split", "features", "latency_ms", "quality", "latency_std_ms"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    assert fast.feature_names == slow.feature_names and fast.meta == slow.meta
    assert all(np.array_equal(fast.knobs[k], slow.knobs[k]) for k in DEFAULT_KNOBS)
    # and the file written by to_csv reads back to the same float64 values
    back = load_table(p)
    np.testing.assert_array_equal(back.latency_ms, small_table.latency_ms.astype(np.float64))
    np.testing.assert_array_equal(back.features, small_table.features)


def test_csv_quotes_only_values_that_need_it(tmp_path, small_table):
    p = tmp_path / "plain.csv"
    small_table.to_csv(p)
    assert '"' not in p.read_text()
    ids = small_table.request_ids.astype(object)
    ids[0] = 'q,0 "odd"'
    t = small_table.replace(request_ids=ids.astype(str))
    q = tmp_path / "quoted.csv"
    t.to_csv(q)
    assert load_table(q).request_ids[0] == 'q,0 "odd"'
    assert not q.read_text().startswith('"')


@pytest.mark.parametrize("case", sorted(CASES))
def test_column_reader_declines_malformed_csv(tmp_path, small_table, case):
    """Every malformed case is either declined by the column-wise reader (the row reader then names the line) or
    refused by the same validation the row reader's table goes through: never a table."""
    mutate, expected = CASES[case]
    p = _write_csv(tmp_path, small_table, mutate)
    try:
        header = _csv_header(p, DEFAULT_KNOBS)
    except TableError as e:
        assert expected in str(e)
        return
    try:
        fast = _load_csv_fast(p, DEFAULT_KNOBS, header)
    except TableError as e:
        assert expected in str(e)
        return
    assert fast is None


def test_error_names_request_and_config(tmp_path, small_table):
    p = _write_csv(tmp_path, small_table, _set(3, "quality", "2"))
    with pytest.raises(TableError, match=r"request .q0., config \(vision_tokens=36, top_k=8, active_blocks=8\), column quality"):
        load_table(p)


def test_declared_extra_knob_is_accepted(tmp_path):
    t = make_small_table(knobs={"vision_tokens": np.array([1, 2]), "top_k": np.array([1, 2]), "active_blocks": np.array([1, 2]), "dtype_bits": np.array([8, 16])})
    p = tmp_path / "k4.csv"
    t.to_csv(p)
    with pytest.raises(TableError, match="unexpected column 'dtype_bits'"):
        load_table(p)
    t2 = load_table(p, knobs=("vision_tokens", "top_k", "active_blocks", "dtype_bits"))
    assert t2.num_configs == 16


def test_npz_errors(tmp_path, small_table):
    p = tmp_path / "x.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(TableError, match="not a readable .npz"):
        load_table(p)
    bad = small_table.quality.copy()
    bad[1, 2] = np.nan
    with pytest.raises(TableError, match="request 'q1'.*quality: non-finite"):
        small_table.replace(quality=bad)
    with pytest.raises(TableError, match="no such file"):
        load_table(tmp_path / "missing.npz")
    with pytest.raises(TableError, match="unknown table extension"):
        (tmp_path / "t.txt").write_text("a")
        load_table(tmp_path / "t.txt")


def test_default_table_is_reproducible_from_synth():
    from e5jax.synth import generate

    t = load_default_table()
    g = generate(seed=t.meta["generator"]["seed"], num_requests=t.meta["generator"]["num_requests"])
    np.testing.assert_allclose(t.latency_ms, g.latency_ms, rtol=1e-6)
    np.testing.assert_allclose(t.quality, g.quality, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(t.split, g.split)
    assert t.num_requests >= 1000 and len(t.task_names) >= 5 and 90 <= t.num_configs <= 120


def test_cli_validate_default_and_synth(tmp_path):
    exe = [sys.executable, "-m", "e5jax"]
    r = subprocess.run(exe + ["synth", "--out", str(tmp_path / "s.csv"), "--requests", "40", "--seed", "3"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(exe + ["validate", str(tmp_path / "s.csv")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "context value" in r.stdout and "40 requests" not in r.stderr
    r = subprocess.run(exe + ["synth", "--out", str(tmp_path / "s.txt")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and not (tmp_path / "s.txt").exists()


def test_validate_prints_oracle_tie_counts(tmp_path, capsys):
    """`e5jax validate` on a table with known ties (tests/test_env.py): per budget, the share of requests with one
    optimal config and the mean optimal-set size, on val and on all requests."""
    from test_env import TIE_SETS, make_tie_table

    from e5jax.env import EVAL_BUDGETS
    from e5jax.stats import table_summary

    t = make_tie_table()
    s = table_summary(t, lam=2.0)
    # brute force in float64 numpy at every budget
    lat = t.latency_ms / t.latency_ms[:, -1:]
    sizes = np.stack([(r >= r.max(-1, keepdims=True) - 1e-6).sum(-1)
                      for r in (t.quality - 2.0 * np.maximum(0, lat - b) for b in EVAL_BUDGETS)])  # [B, R]
    val = t.split == "val"
    for name, m in (("val", val), ("all", np.ones_like(val))):
        ties = s[f"oracle_ties_{name}"]
        np.testing.assert_allclose(ties["unique_share"], (sizes[:, m] == 1).mean(-1))
        np.testing.assert_allclose(ties["mean_set_size"], sizes[:, m].mean(-1))
        np.testing.assert_allclose(ties["all_optimal_share"], (sizes[:, m] == t.num_configs).mean(-1))
    # and by hand at b = 0.5 and 1.0 (the hand-written optimal sets)
    for b, want in TIE_SETS.items():
        n = np.asarray(want).sum(-1)
        bi = list(EVAL_BUDGETS).index(b)
        assert s["oracle_ties_all"]["unique_share"][bi] == pytest.approx((n == 1).mean())
        assert s["oracle_ties_val"]["mean_set_size"][bi] == pytest.approx(n[val].mean())
    assert s["oracle_ties_val"]["unique_share"][-1] == pytest.approx(1 / 3)  # val requests 1, 3, 5: sets of 1, 2, 4
    assert s["oracle_ties_all"]["all_optimal_share"][-1] == pytest.approx(2 / 6)
    # a larger tolerance merges more: request 3's near-tie is resolved with 0
    s0 = table_summary(t, lam=2.0, oracle_tol=0.0)
    assert s0["oracle_ties_all"]["unique_share"][-1] == pytest.approx(3 / 6)
    # the printed summary
    path = tmp_path / "ties.npz"
    t.save(path)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    unique_val = next(line for line in out.splitlines() if line.strip().startswith("unique   val"))
    assert unique_val.split()[2:2 + len(EVAL_BUDGETS)] == [f"{x:.1%}" for x in s["oracle_ties_val"]["unique_share"]]
    assert "tie-break" in out and "configs within 1e-06 of the best reward are all optimal" in out


def test_without_tasks_drops_a_task_type_and_refuses_an_unknown_one(tmp_path, small_table, capsys):
    """ProfileTable.without_tasks keeps every other request with all its columns; an unknown type or dropping every
    type is a TableError; the analysis scripts that take --drop-task say so in one line, exit 2 and write nothing."""
    import importlib.util

    types = sorted(set(small_table.task_types.tolist()))
    part = small_table.without_tasks([types[0]])
    keep = small_table.task_types != types[0]
    assert part.num_requests == int(keep.sum()) and types[0] not in set(part.task_types.tolist())
    np.testing.assert_array_equal(part.quality, small_table.quality[keep])
    np.testing.assert_array_equal(part.features, small_table.features[keep])
    assert list(part.request_ids) == list(small_table.request_ids[keep])
    with pytest.raises(TableError, match="'nope' is not in the table"):
        small_table.without_tasks(["nope"])
    with pytest.raises(TableError, match="leaves no requests"):
        small_table.without_tasks(types)
    small_table.save(tmp_path / "t.npz")
    root = Path(__file__).resolve().parent.parent
    for script in ("oracle_gap", "feature_lut"):
        spec = importlib.util.spec_from_file_location(script, root / "experiments" / f"{script}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out = tmp_path / f"{script}.json"
        assert mod.main(["--table", str(tmp_path / "t.npz"), "--drop-task", "nope", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'nope' is not in the table" in err[0] and not out.exists()
