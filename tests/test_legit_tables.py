"""Legitimate tables run: one task type (the task LUT is a per-budget LUT) and a feature constant on train
(uninformative). `e5jax validate` notes them; every method trains on them to finite results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_small_table
from e5jax.cli import main as cli_main
from e5jax.methods import METHODS
from e5jax.table import load_table, table_notes

TINY = """[run]
seeds = 2
methods = [{methods}]
total_env_steps = 48
env_steps_per_update = 24
eval_every = 2

[learner]
hidden = [16]
"""


def one_task(R=12):
    t = make_small_table(R=R)
    return t.replace(task_types=np.full(t.num_requests, "a"))


def constant_feature(R=12):
    t = make_small_table(R=R)
    return t.replace(features=np.stack([t.features[:, 0], np.full(t.num_requests, 3.0)], 1))


TABLES = {"one_task": one_task, "constant_feature": constant_feature}


def test_notes_name_what_is_legitimate_but_uninformative():
    assert table_notes(make_small_table()) == []
    assert table_notes(one_task()) == ["1 task type ('a'): the task LUT is a per-budget LUT"]
    assert table_notes(constant_feature()) == ["feature f1 is constant on train (3): uninformative"]
    t = make_small_table()
    f = t.features.copy()
    f[t.split == "train", 0] = -1.0  # constant on train only: still uninformative to a controller trained on train
    assert table_notes(t.replace(features=f)) == ["feature f0 is constant on train (-1): uninformative (it varies on val)"]


@pytest.mark.parametrize("kind", list(TABLES))
def test_validate_prints_the_notes(tmp_path, capsys, kind):
    path = tmp_path / "t.csv"
    TABLES[kind]().to_csv(path)
    assert load_table(path).num_requests == 12  # loads (no refusal)
    assert cli_main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    want = {"one_task": "note: 1 task type ('a'): the task LUT is a per-budget LUT",
            "constant_feature": "note: feature f1 is constant on train (3): uninformative"}[kind]
    assert want in [line.strip() for line in out.splitlines()], out[:600]


def test_every_method_runs_to_finite_results(tmp_path, capsys, monkeypatch):
    """One run on a table with both: one task type and a constant feature column (one compile of every method)."""
    monkeypatch.setenv("E5JAX_OVERHEAD", "off")  # the timing analysis is tested in test_overhead.py
    t = one_task()
    t = t.replace(features=np.stack([t.features[:, 0], np.full(t.num_requests, 3.0)], 1))
    table = tmp_path / "t.npz"
    t.save(table)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.format(methods=", ".join(f'"{m}"' for m in METHODS)))
    out = tmp_path / "run"
    rc = cli_main(["run", "--config", str(cfg), "--table", str(table), "--out", str(out), "--no-progress",
                   "--no-figures"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    doc = json.loads((out / "e5_final_frontiers.json").read_text())
    assert set(doc["methods"]) == set(METHODS)
    for name, m in doc["methods"].items():
        for metric in ("utility", "utility_norm", "quality_mean"):
            vals = np.asarray(m["per_budget"][metric]["mean"], float)
            assert vals.shape == (5,) and np.all(np.isfinite(vals)), (name, metric, vals)
