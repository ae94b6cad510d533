"""The watchdog stops a program that does not return (one line naming it, exit 3, the checkpoint kept) and
--resume continues; the metrics stream writes one line per chunk as training goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import make_known_oracle_table
from e5jax import watch

RUN = """[run]
seeds = 2
methods = ["lut"]
total_env_steps = 1024
env_steps_per_update = 64
eval_every = 4
checkpoint_every_chunks = 1
"""


def test_guard_fires_past_its_limit_and_not_before(monkeypatch):
    fired = []
    monkeypatch.setattr(watch.os, "_exit", lambda code: fired.append(code))
    wd = watch.Watchdog(factor=3.0, floor_s=0.2)
    assert wd.limit("ppo") == 0.2
    wd.chunk_done("ppo", 0.5)
    assert wd.limit("ppo") == pytest.approx(1.5) and wd.limit("dpo") == 0.2 and wd.limit() == 0.2
    with wd.guard("fast chunk"):
        pass
    time.sleep(0.3)
    assert fired == []  # cancelled when the block returned
    with wd.guard("stuck chunk"):
        time.sleep(0.5)
    assert fired == [watch.EXIT_CODE]
    monkeypatch.setenv("E5JAX_WATCHDOG", "off")
    assert watch.Watchdog.from_env() is None
    monkeypatch.setenv("E5JAX_WATCHDOG", "soon")
    with pytest.raises(ValueError, match="E5JAX_WATCHDOG"):
        watch.Watchdog.from_env()


def test_injected_stall_stops_the_run_in_one_line_and_resume_finishes(tmp_path):
    make_known_oracle_table(R=60).save(tmp_path / "t.npz")
    (tmp_path / "run.toml").write_text(RUN)
    out = tmp_path / "run"
    env = {**os.environ, "E5JAX_OVERHEAD": "off", "E5JAX_WATCHDOG_FLOOR_S": "8", "E5JAX_WATCHDOG_STALL": "lut:3"}
    cmd = [sys.executable, "-m", "e5jax", "run", "--no-figures", "--config", str(tmp_path / "run.toml"), "--table",
           str(tmp_path / "t.npz"), "--out", str(out), "--no-progress"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == watch.EXIT_CODE, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if "watchdog" in ln]
    assert len(lines) == 1 and "lut chunk 3/4" in lines[0] and "8 s" in lines[0] and "--resume" in lines[0]
    stream = [json.loads(ln) for ln in (out / watch.METRICS_FILE).read_text().splitlines()]
    assert [(r["method"], r["chunk"], r["updates"]) for r in stream] == [("lut", 1, 4), ("lut", 2, 8)]
    assert all(r["val_utility"] is not None and r["chunk_s"] > 0 for r in stream)
    assert not (out / "e5_training_curves.json").exists()

    env.pop("E5JAX_WATCHDOG_STALL")
    p = subprocess.run(cmd[:-3] + ["--resume", str(out), "--no-progress"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    curves = json.loads((out / "e5_training_curves.json").read_text())
    assert curves["methods"]["lut"]["updates"][-1] == 16
    stream = [json.loads(ln) for ln in (out / watch.METRICS_FILE).read_text().splitlines()]
    assert [r["chunk"] for r in stream] == [1, 2, 3, 4]  # resumed from the chunk-2 checkpoint


def test_tensorboard_events_hold_the_stream_scalars(tmp_path):
    """--tensorboard: the chunk's scalars (row means) are TensorBoard events at step = updates."""
    import struct

    import numpy as np
    from tensorboardX.proto import event_pb2

    stream = watch.MetricsStream(tmp_path, tensorboard=True)
    rec = stream.chunk("ppo", 1, 4, {"train": {"loss": np.array([1.0, 3.0])},
                                     "eval": {"utility": np.array([[0.5, 0.7], [0.3, 0.5]])}}, 0.25)
    stream.close()
    assert rec["train"] == {"loss": 2.0} and rec["val_utility"] == 0.5
    got = {}
    for f in (tmp_path / watch.TENSORBOARD_DIR).glob("events.out.tfevents.*"):
        data = f.read_bytes()
        while data:  # TFRecord: length (8), its crc (4), the record, its crc (4)
            (n,) = struct.unpack("<Q", data[:8])
            ev = event_pb2.Event.FromString(data[12:12 + n])
            data = data[16 + n:]
            for v in ev.summary.value:
                got[(v.tag, ev.step)] = v.simple_value
    assert got[("ppo/train/loss", 4)] == 2.0 and got[("ppo/val/utility", 4)] == 0.5
    assert json.loads((tmp_path / watch.METRICS_FILE).read_text())["chunk"] == 1
