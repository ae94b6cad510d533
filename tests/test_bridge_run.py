"""Profiling bridge -> lab: `e5jax run` trains on a table the bridge measured (tiny model, CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from profiling_bridge.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "experiments" / "e5_quick.toml"


def test_e5jax_run_trains_on_a_bridge_table(tmp_path):
    shapes = [dict(request_id=f"r{i}", task_type=["general_vqa", "captioning"][i % 2], split="val" if i % 3 == 2 else "train",
                   prompt_tokens=8 + 7 * i, output_tokens=2 + i % 3) for i in range(6)]
    (tmp_path / "shapes.json").write_text(json.dumps(shapes))
    table = tmp_path / "tiny.npz"
    rc = main(["profile", "--arch", "tiny", "--requests", str(tmp_path / "shapes.json"), "--out", str(table),
               "--method", "e2e", "--grid", "vision_tokens=4,16", "top_k=1,4", "active_blocks=2,4",
               "--threads", "1", "--warmup", "1", "--e2e-repeats", "2", "--no-progress"])
    assert rc == 0
    out = tmp_path / "run"
    res = subprocess.run([str(Path(sys.executable).parent / "e5jax"), "run", "--config", str(QUICK), "--table", str(table),
                          "--seeds", "1", "--methods", "supervised", "--out", str(out), "--no-progress",
                          "--no-figures"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    curves = json.loads((out / "e5_training_curves.json").read_text())
    assert set(curves["methods"]) == {"supervised"}
    # early, log-spaced eval points (1, 2, 4, 8 updates) before the regular interval of 10, env steps per point
    m = curves["methods"]["supervised"]
    assert m["updates"] == [0, 1, 2, 4, 8, 10, 20, 30, 40]
    steps = m["env_steps_per_seed"][0]  # supervised labels all 4 train requests (8 configs each) in the first update
    assert steps[0] == 0 and steps[1] == 32 and all(b >= a for a, b in zip(steps, steps[1:]))
    assert len(m["curves"]["val_utility_norm"]["mean"]) == len(m["updates"]) == len(m["wall_time_s"])
