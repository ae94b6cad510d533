"""e5jax robustness: verdicts across tables from constructed decisions; the command end to end on two generated
synthetic tables (robustness.json, summary.md, figure); a rerun skips the finished table and continues the other;
bad input refused with one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from conftest import make_small_table
from e5jax import decide as D
from e5jax.cli import main as cli_main
from e5jax.report import DECISIONS
from e5jax.robustness import FIG, FILE, SUMMARY, cross_table, load_spec, parse_tables, table_conditions
from e5jax.table import load_table

CONFIG = """[run]
seeds = 2
methods = ["lut", "heuristic", "supervised"]
total_env_steps = 1024
env_steps_per_update = 64
eval_every = 8
"""
TABLES = "s1=synth:1:40,s2=synth:2:40"


def _metrics(means: dict, rng) -> dict:
    """Per-seed Metrics with the given means, 8 seeds, noise far below the gaps (or identical values)."""
    return {m: D.Metric.per_seed(mu + 1e-3 * rng.standard_normal(8)) for m, mu in means.items()}


def test_verdicts_across_tables_on_constructed_decisions():
    rng = np.random.default_rng(0)
    # x vs y: x ahead on both tables (holds); x vs z: x ahead on t1, z ahead on t2 (flips);
    # y vs z: equal on t1 (unresolved there), z ahead on t2 (unresolved across tables)
    t1 = {"x": 0.9, "y": 0.5, "z": 0.5}
    t2 = {"x": 0.9, "y": 0.5, "z": 1.2}
    per = {}
    for t, means in (("t1", t1), ("t2", t2)):
        ms = _metrics(means, rng)
        if t == "t1":
            ms["z"] = ms["y"]  # identical results: never separated
        per[t] = {"final_utility": D.compare(ms, higher=True), "slo_violation": D.compare(ms, higher=False)}
    out = cross_table(per)
    fu, slo = out["final_utility"], out["slo_violation"]
    assert fu["pairs"]["x vs y"]["verdict"] == "holds" and fu["pairs"]["x vs y"]["better"] == "x"
    assert fu["pairs"]["x vs z"]["verdict"] == "flips" and fu["pairs"]["x vs z"]["better"] is None
    assert fu["pairs"]["y vs z"]["verdict"] == "unresolved"
    assert fu["pairs"]["y vs z"]["decisions"] == {"t1": "unresolved", "t2": "<"}
    assert fu["holds_on_every_table"] == ["x ≻ y"] and fu["flips"] == ["x vs z"]
    # lower is better: the same values, the other method is the better one
    assert slo["pairs"]["x vs y"]["verdict"] == "holds" and slo["pairs"]["x vs y"]["better"] == "y"
    assert slo["holds_on_every_table"] == ["y ≻ x"]
    # winner sets: t1 {x} (higher) / {y, z} (lower); t2 {z} / {y}
    assert fu["winners"] == {"t1": ["x"], "t2": ["z"]} and fu["in_winner_set_on_every_table"] == []
    assert set(slo["winners"]["t1"]) == {"y", "z"} and slo["winners"]["t2"] == ["y"]
    assert slo["in_winner_set_on_every_table"] == ["y"] and not slo["same_winner_set_on_every_table"]


def test_table_list_parsing_and_conditions(tmp_path):
    make_small_table().save(tmp_path / "t.npz")
    ts = parse_tables([f"{tmp_path / 't.npz'}", "mine=synth:7:50", "default"])
    assert [t.name for t in ts] == ["t", "mine", "default"]
    assert (ts[1].synth_seed, ts[1].synth_requests) == (7, 50)
    (tmp_path / "s.toml").write_text('[robustness]\nseeds = 2\n[tables]\nzz = "synth:3"\naa = "default"\n')
    spec = load_spec(tmp_path / "s.toml")
    assert spec["seeds"] == 2
    assert [(t.name, t.synth_seed) for t in parse_tables(spec["tables"])] == [("zz", 3), ("aa", None)]
    c = table_conditions(load_table(ts[2].path))
    assert c["quality_measured"] is False and c["generator_seed"] == 0
    # a table whose quality was kept from the synthetic model is not a measured-quality table
    h = load_table(ts[2].path)
    h.meta.update(source="profiling_bridge", device={"name": "GPU X"}, latency={"method": "model"},
                  quality_source="kept from src/e5jax/data/default_table.npz: e5jax.synth")
    c = table_conditions(h)
    assert c["latency_measured"] and "GPU X" in c["latency"] and c["quality_measured"] is False
    assert c["quality"].startswith("SYNTHETIC")
    h.meta.update(quality_source="quality harness (exact match) of a checkpoint")
    assert table_conditions(h)["quality_measured"] is True


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("robust")
    (d / "cfg.toml").write_text(CONFIG)
    old = os.environ.get("E5JAX_OVERHEAD")
    os.environ["E5JAX_OVERHEAD"] = "off"
    try:
        rc = cli_main(["robustness", "--tables", TABLES, "--config", str(d / "cfg.toml"), "--out", str(d / "out"),
                       "--no-progress"])
    finally:
        os.environ.pop("E5JAX_OVERHEAD") if old is None else os.environ.__setitem__("E5JAX_OVERHEAD", old)
    assert rc == 0
    return d


def test_end_to_end_writes_the_report(run_dir):
    out = run_dir / "out"
    doc = json.loads((out / FILE).read_text())
    assert doc["complete"] and list(doc["tables"]) == ["s1", "s2"]
    for t, seed in (("s1", 1), ("s2", 2)):  # generated into the out dir, recorded with their seed
        c = doc["tables"][t]
        assert c["generated"] and c["generator_seed"] == seed and c["quality_measured"] is False
        assert load_table(out / "tables" / f"{t}.npz").meta["generator"]["seed"] == seed
    # every verdict is decide.across of the decisions in each table's own e5_decisions.json
    per = {t: json.loads((out / t / DECISIONS).read_text())["questions"] for t in ("s1", "s2")}
    assert set(doc["questions"]) == set(per["s1"])
    for q, r in doc["questions"].items():
        assert len(r["pairs"]) == 3
        for p in r["pairs"].values():
            dec = {t: D.pair(per[t][q], p["a"], p["b"])["decision"] for t in per}
            assert p["decisions"] == dec and p["verdict"] == D.across(dec)["verdict"]
        assert r["winners"] == {t: per[t][q]["winners"] for t in per}
        assert r["in_winner_set_on_every_table"] == [m for m in per["s1"][q]["methods"]
                                                    if all(m in per[t][q]["winners"] for t in per)]
    text = (out / SUMMARY).read_text()
    assert "Which answers hold on every table" in text and "synth:1:40" in text and "synthetic" in text
    assert text.count("\n| ") == 1 + 2 + 1 + len(doc["questions"])  # conditions table + the winner-set table
    assert (out / FIG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_the_finished_table_and_continues(run_dir, capsys):
    src = run_dir / "out"
    out = run_dir / "resume"
    shutil.copytree(src, out)  # copy2: mtimes kept
    shutil.rmtree(out / "s2")  # as if interrupted before the second table
    s1 = {p: p.stat().st_mtime_ns for p in (out / "s1").rglob("*") if p.is_file()}
    os.environ["E5JAX_OVERHEAD"] = "off"
    try:
        rc = cli_main(["robustness", "--tables", TABLES, "--config", str(run_dir / "cfg.toml"), "--out", str(out),
                       "--no-progress"])
    finally:
        os.environ.pop("E5JAX_OVERHEAD")
    assert rc == 0
    err = capsys.readouterr().err
    assert any(line.startswith("[1/2] s1:") and line.endswith("complete, skipped") for line in err.splitlines())
    assert any(line.startswith("[2/2] s2:") and not line.endswith("skipped") for line in err.splitlines())
    assert {p: p.stat().st_mtime_ns for p in (out / "s1").rglob("*") if p.is_file()} == s1
    assert (out / "s2" / DECISIONS).is_file()
    a, b = (json.loads((d / FILE).read_text())["questions"] for d in (src, out))
    for q in a:  # the same seeds and tables: the same decisions (values equal up to float rounding)
        assert a[q]["winners"] == b[q]["winners"]
        dec = [{k: p["decisions"] for k, p in x[q]["pairs"].items()} for x in (a, b)]
        assert dec[0] == dec[1]
        assert np.allclose([r["value"] for r in a[q]["methods"]["s2"].values()],
                           [r["value"] for r in b[q]["methods"]["s2"].values()], atol=1e-6)


def test_another_spec_in_the_same_out_is_refused(run_dir, capsys):
    out = run_dir / "out"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    rc = cli_main(["robustness", "--tables", TABLES, "--config", str(run_dir / "cfg.toml"), "--seeds", "3",
                   "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "another table list, config or seeds" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("tables,words", [
    ("a=/nonexistent/t.npz", "no such file"),
    ("nosuchtable", "unknown table name 'nosuchtable'"),
    ("default,default", "given twice"),
    ("x=synth:one", "synth:SEED"),
    ("figures=default", "table name 'figures'"),
])
def test_bad_table_list_one_line_exit_2_nothing_written(tmp_path, capsys, tables, words):
    out = tmp_path / "out"
    rc = cli_main(["robustness", "--tables", tables, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and words in err, err
    assert not out.exists()


def test_bad_spec_one_line_exit_2_nothing_written(tmp_path, capsys):
    out = tmp_path / "out"
    for text, words in (("[tables]\n", "[tables] is missing or empty"), ("[robustnes]\n", "unknown section"),
                        ("[tables]\na = \"/nonexistent.npz\"\n", "no such file")):
        (tmp_path / "s.toml").write_text(text)
        rc = cli_main(["robustness", "--spec", str(tmp_path / "s.toml"), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and words in err, err
    assert not out.exists()
