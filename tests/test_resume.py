"""Kill -9 mid-training, resume, and get exactly the uninterrupted run's results (wall-clock fields aside);
checkpoints from another config are refused; a run never writes over another unless told to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
E5JAX = [sys.executable, "-m", "e5jax"]
CONFIG = """[run]
seeds = 2
methods = ["lut", "grpo"]
total_env_steps = 25600
env_steps_per_update = 256
eval_every = 4
checkpoint_every_chunks = 1
"""
WALL = ("wall_time", "chunk_time_s", "compile_time_s", "train_time", "eval_time", "created", "command", "total_wall_time_s",
        "checkpoints", "resumed", "host")


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if not k.startswith(WALL)}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _run(args, **kw):
    env = dict(os.environ, E5JAX_OVERHEAD="off")
    return subprocess.run(E5JAX + ["run", *args, "--no-progress"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "ck.toml"
    p.write_text(CONFIG)
    return p


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path, config):
    full = tmp_path / "full"
    r = _run(["--config", str(config), "--out", str(full)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (full / "checkpoints").exists()  # removed once the run is complete

    killed = tmp_path / "killed"
    env = dict(os.environ, E5JAX_OVERHEAD="off")
    proc = subprocess.Popen(E5JAX + ["run", "--config", str(config), "--out", str(killed), "--no-progress"], cwd=ROOT,
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

    # the same directory without --resume is refused, nothing touched
    r = _run(["--config", str(config), "--out", str(killed)])
    assert r.returncode == 2 and "pass --resume" in r.stderr and ck.is_dir()
    r = _run(["--config", str(config), "--resume", str(killed)])
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("e5_training_curves.json", "e5_sample_efficiency.json", "e5_final_frontiers.json",
                 "e5_stability_analysis.json"):
        a = _strip(json.loads((full / name).read_text()))
        b = _strip(json.loads((killed / name).read_text()))
        assert a == b, name
    doc = json.loads((killed / "e5_training_curves.json").read_text())
    assert doc["complete"] and doc["meta"]["resumed"]["finished_before"] == ["lut"]


def test_resume_refuses_another_config(tmp_path, config):
    out = tmp_path / "run"
    proc_cfg = tmp_path / "one.toml"
    proc_cfg.write_text(CONFIG.replace('methods = ["lut", "grpo"]', 'methods = ["lut"]'))
    assert _run(["--config", str(proc_cfg), "--out", str(out)]).returncode == 0
    other = tmp_path / "other.toml"
    other.write_text(CONFIG.replace("seeds = 2", "seeds = 3"))
    r = _run(["--config", str(other), "--resume", str(out)])
    assert r.returncode == 2 and "another run config" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # --overwrite replaces the run's own outputs and nothing else
    (out / "notes.txt").write_text("mine")
    r = _run(["--config", str(proc_cfg), "--out", str(out), "--overwrite"])
    assert r.returncode == 0 and (out / "notes.txt").read_text() == "mine"
