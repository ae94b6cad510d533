"""Kill -9 mid-training, resume with no flag but --resume, and get exactly the uninterrupted run's results (wall-clock
fields aside); resume takes the recorded config and table, refuses another in one line; a run never writes over
another unless told to."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_known_oracle_table
from e5jax.cli import main as cli_main
from e5jax.config import load_config
from e5jax.errors import UsageError
from e5jax.io import write_json
from e5jax.run import RECORD, make_meta, recorded_configs, recorded_meta, resume_differences, run_from_args
from e5jax.table import default_table_path, load_table

ROOT = Path(__file__).resolve().parents[1]
E5JAX = [sys.executable, "-m", "e5jax"]
CONFIG = """[run]
seeds = 2
methods = ["lut", "grpo"]
total_env_steps = 12288
env_steps_per_update = 256
eval_every = 4
checkpoint_every_chunks = 1
"""
WALL = ("wall_time", "chunk_time_s", "compile_time_s", "compile_breakdown_s", "train_time", "eval_time", "created",
        "command", "total_wall_time_s", "phases_s", "checkpoint", "resumed", "host")  # checkpoint*: the settings and the saves


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if not k.startswith(WALL)}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _run(args, **kw):
    env = dict(os.environ, E5JAX_OVERHEAD="off")
    return subprocess.run(E5JAX + ["run", *args, "--no-progress", "--no-figures"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "ck.toml"
    p.write_text(CONFIG)
    return p


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path, config, capsys):
    full = tmp_path / "full"  # the uninterrupted run saves no checkpoint: results do not depend on them
    plain = tmp_path / "plain.toml"
    plain.write_text(CONFIG.replace("checkpoint_every_chunks = 1", "checkpoint_every_chunks = 0\ncheckpoint_every_s = 1e9"))
    r = _run(["--config", str(plain), "--out", str(full)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (full / "checkpoints").exists()  # removed once the run is complete

    killed = tmp_path / "killed"
    env = dict(os.environ, E5JAX_OVERHEAD="off")
    proc = subprocess.Popen(E5JAX + ["run", "--config", str(config), "--out", str(killed), "--no-progress",
                            "--no-figures"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = killed / "checkpoints" / "grpo"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300 and proc.poll() is None:
        if ck.is_dir() and any(p.name.isdigit() and int(p.name) >= 2 for p in ck.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = json.loads((killed / "e5_training_curves.json").read_text())
    assert list(partial["methods"]) == ["lut"] and partial["complete"] is False

    # the same directory without --resume is refused, nothing touched (in this process: the refusal is the CLI's)
    before = {p: p.stat().st_mtime_ns for p in killed.rglob("*")}
    assert cli_main(["run", "--config", str(config), "--out", str(killed), "--no-progress"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in killed.rglob("*")} == before
    r = _run(["--resume", str(killed)])  # the config is the one recorded in the directory
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("e5_training_curves.json", "e5_sample_efficiency.json", "e5_final_frontiers.json",
                 "e5_stability_analysis.json"):
        a = _strip(json.loads((full / name).read_text()))
        b = _strip(json.loads((killed / name).read_text()))
        assert a == b, name
    doc = json.loads((killed / "e5_training_curves.json").read_text())
    assert doc["complete"] and doc["meta"]["resumed"]["finished_before"] == ["lut"]


def test_resume_refuses_another_config(tmp_path, config, capsys):
    out = tmp_path / "run"
    proc_cfg = tmp_path / "one.toml"
    proc_cfg.write_text(CONFIG.replace('methods = ["lut", "grpo"]', 'methods = ["lut"]')
                        .replace("total_env_steps = 12288", "total_env_steps = 2048"))
    assert _run(["--config", str(proc_cfg), "--out", str(out)]).returncode == 0
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.replace("seeds = 2", "seeds = 3"))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert cli_main(["run", "--config", str(other), "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "another run config (methods: " in err and "seeds: 2 there, 3 given" in err
    assert len(err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing written
    # --overwrite replaces the run's own outputs and nothing else
    (out / "notes.txt").write_text("mine")
    r = _run(["--config", str(proc_cfg), "--out", str(out), "--overwrite"])
    assert r.returncode == 0 and (out / "notes.txt").read_text() == "mine"


def _args(**kw):
    a = dict(config=None, table=None, out=None, seeds=None, methods=None, thresholds=None, resume=None, overwrite=False,
             no_progress=True)
    return argparse.Namespace(**{**a, **kw})


@pytest.fixture
def recorded(tmp_path, config):
    """A run directory as a run leaves it when killed before its first method finished: only checkpoints/run.json."""
    make_known_oracle_table(R=60).save(tmp_path / "t.npz")
    table = load_table(tmp_path / "t.npz")
    cfg = tmp_path / "rec.toml"
    cfg.write_text(CONFIG + 'lam = 1.5\nthresholds = "slo=0.1"\n[grpo]\nlr = 0.001\n')
    run, cfgs = load_config(cfg)
    out = tmp_path / "run"
    write_json(out / RECORD, {"meta": make_meta(run, cfgs, table, tmp_path / "t.npz")})
    return out, cfg, run, cfgs, table


def test_resume_takes_the_recorded_config_and_table(recorded):
    out, cfg, run, cfgs, table = recorded
    meta = recorded_meta(out)
    assert recorded_configs(meta, _args()) == (run, cfgs)  # rebuilt exactly: every value, every method's config
    assert meta["table"]["path"].endswith("t.npz")
    sha = meta["table"]["sha256_16"]
    assert resume_differences(meta, run, cfgs, sha) == []
    same = recorded_configs(meta, _args(config=str(cfg)))  # the same config given explicitly: accepted
    assert same == (run, cfgs) and resume_differences(meta, *same, sha) == []
    re_thr = recorded_configs(meta, _args(thresholds="slo=0.2"))  # reporting settings may change
    assert re_thr[0].thresholds == "slo=0.2" and resume_differences(meta, *re_thr, sha) == []
    assert resume_differences(meta, *recorded_configs(meta, _args(seeds=3)), sha) == [
        "run config (seeds: 2 there, 3 given)"]
    assert resume_differences(meta, run, cfgs, "0" * 16) == [f"table (sha256_16: {sha} there, {'0' * 16} given)"]
    other = out.parent / "other.toml"
    other.write_text(cfg.read_text().replace("lr = 0.001", "lr = 0.002"))
    assert resume_differences(meta, *recorded_configs(meta, _args(config=str(other))), sha) == [
        "grpo config (lr: 0.001 there, 0.002 given)"]


@pytest.mark.parametrize("flags, says", [({"seeds": 3}, "another run config (seeds: 2 there, 3 given)"),
                                         ({"methods": "lut"}, "another run config (methods: "),
                                         ({"table": str(default_table_path())}, "another table (sha256_16: ")])
def test_resume_refuses_other_flags_in_one_line_writing_nothing(recorded, flags, says):
    out, *_ = recorded
    before = sorted(out.rglob("*"))
    with pytest.raises(UsageError) as e:
        run_from_args(_args(resume=str(out), **flags))
    assert says in str(e.value) and "\n" not in str(e.value) and "without --config" in str(e.value)
    assert sorted(out.rglob("*")) == before


def test_resume_names_a_recorded_table_that_is_gone(recorded):
    out, *_ = recorded
    (out.parent / "t.npz").unlink()
    with pytest.raises(UsageError, match=r"its table .*t\.npz is not there; pass --table"):
        run_from_args(_args(resume=str(out)))
