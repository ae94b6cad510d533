"""Several processes under jax.distributed (2 local processes x 2 CPU devices, the command of docs/sweep.md): the
same results as one process, only process 0 writes, and a job that cannot start is refused in one line (exit 2,
nothing written). The sweep's multi-process check is in test_sweep.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port, run_job
from e5jax.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """[run]
seeds = 4
methods = ["lut"]
total_env_steps = 2048
env_steps_per_update = 256
eval_every = 4
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    p = tmp_path_factory.mktemp("dist") / "d.toml"
    p.write_text(CONFIG)
    return p


def test_two_processes_give_one_process_results_and_one_writer(tmp_path, config, monkeypatch):
    out = tmp_path / "job"
    res = run_job(["run", "--config", str(config), "--out", str(out), "--no-progress", "--no-figures"], cwd=ROOT)
    assert [r.returncode for r in res] == [0, 0], res[0].stderr[-2000:] + res[1].stderr[-2000:]
    assert "process 1 of 2, 2 of 4 devices here" in res[1].stderr
    assert "final greedy val utility" in res[0].stdout and "final greedy val utility" not in res[1].stdout
    job = json.loads((out / "e5_training_curves.json").read_text())
    assert len(job["meta"]["host"]["devices"]) == 4
    stages = job["methods"]["lut"]["compile_breakdown_s"]
    assert stages["init_s"] > 0 and all(stages[p][k] > 0 for p in ("chunk", "evaluate") for k in ("trace_s", "lower_s", "compile_s"))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # 2 chunks, written once (process 0), not once per process
    assert (out / "summary.md").is_file() and not (out / "checkpoints").exists()

    monkeypatch.setenv("E5JAX_OVERHEAD", "off")
    one = tmp_path / "one"
    assert cli_main(["run", "--config", str(config), "--out", str(one), "--no-progress", "--no-figures"]) == 0  # 1 process, 1 device
    ref = json.loads((one / "e5_training_curves.json").read_text())
    a, b = (np.array(d["methods"]["lut"]["per_budget"]["val_utility"]["per_seed"], float) for d in (job, ref))
    assert a.shape == b.shape == (4, 5, 5)  # seeds x eval points (0, 1, 2, 4, 8 updates) x budgets
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)  # the partitioned program may round the last bit
    assert np.ptp(a[:, -1].mean(-1)) > 0 and not np.allclose(a[:, 0], a[:, -1])  # seeds differ; it learned


ALONE = [  # refused before JAX starts: one process is enough
    (["--num-processes", "2", "--process-id", "2"], "--process-id must be in 0..1"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "give HOST:PORT"),
    (["--coordinator", "localhost:{port}", "--num-processes", "2", "--process-id", "1"], "not reachable within 1 s"),
    (["--coordinator", "localhost:{port}", "--num-processes", "3", "--process-id", "0"], "1, 2 of 3 did not join"),
]


@pytest.mark.parametrize("flags,words", ALONE, ids=[w for _, w in ALONE])
def test_a_process_that_cannot_join_is_one_line_exit_2(tmp_path, config, capsys, flags, words):
    out = tmp_path / "never"
    port = free_port()
    rc = cli_main(["run", "--config", str(config), "--out", str(out), "--no-progress", "--coordinator-timeout", "1",
                   *[f.format(port=port) for f in flags]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and words in err[0], err
    assert not out.exists()


PAIRS = [  # (args of process 0, of process 1, words): both processes refuse
    (["--num-processes", "2", "--process-id", "0"], ["--num-processes", "3", "--process-id", "1"],
     "started for 3 processes, process 0 for 2"),
    (["--num-processes", "2", "--process-id", "0"], ["--num-processes", "2", "--process-id", "1", "--seeds", "8"],
     "another command"),
    (["--num-processes", "2", "--process-id", "0", "--seeds", "3"],
     ["--num-processes", "2", "--process-id", "1", "--seeds", "3"], "seeds = 3 cannot be split evenly over the 4 devices"),
]


@pytest.mark.parametrize("first,second,words", PAIRS, ids=[w for *_, w in PAIRS])
def test_a_job_that_cannot_start_is_one_line_exit_2_nothing_written(tmp_path, config, first, second, words):
    port = free_port()
    out = tmp_path / "never"
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", E5JAX_OVERHEAD="off")
    base = [sys.executable, "-m", "e5jax", "run", "--config", str(config), "--out", str(out), "--no-progress",
            "--coordinator-timeout", "20", "--coordinator", f"localhost:{port}"]
    procs = [subprocess.Popen(base + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=env) for args in (first, second)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        lines = [x for x in err.splitlines() if x.startswith("e5jax: error")]
        assert p.returncode == 2 and len(lines) == 1 and words in lines[0], err[-1500:]
        assert "Check failure" not in err  # never JAX's C++ abort
    assert not out.exists()
