"""experiments/hangs.py's bookkeeping: outcome classification, hang rates, the child environment, and one run of a
trivial child each way (exits ok, errors, stalls idle, outlives its time limit)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("hangs", ROOT / "experiments" / "hangs.py")
hangs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hangs)


def test_classify_and_rate():
    assert hangs.classify(0, "exec\nok 1.0s\n", False, False) == "ok"
    assert hangs.classify(0, "exec\n", False, False) == "error"  # no ok line
    assert hangs.classify(1, "ok\n", False, False) == "error"
    assert hangs.classify(None, "exec\n", True, False) == "hang"
    assert hangs.classify(-9, "", False, True) == "hang"
    s = hangs.summarize(["ok", "hang", "hang", "error", "ok"])
    assert (s["runs"], s["oks"], s["hangs"], s["errors"]) == (5, 2, 2, 1) and s["hang_rate"] == 0.5
    assert hangs.summarize(["error"])["hang_rate"] is None
    assert hangs.last_stage("exec\nstage init\nstage shared 3\n") == "shared 3"
    assert hangs.last_stage("exec\n") == "compile"


def test_setting_env_names_every_flag():
    s = hangs.S("x", devices=4, xla={"xla_cpu_multi_thread_eigen": "true"}, env={"NPROC": "1"})
    env = hangs.setting_env(s, {"XLA_FLAGS": "--foo", "NPROC": "7", "PATH": "/bin"})
    assert env["NPROC"] == "1" and env["PATH"] == "/bin" and "--foo" not in env["XLA_FLAGS"]
    assert "--xla_cpu_multi_thread_eigen=true" in env["XLA_FLAGS"]
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" in env["XLA_FLAGS"]
    assert "--xla_force_host_platform_device_count=4" in env["XLA_FLAGS"]


def _run(code: str, timeout=5.0, idle_s=0.6):
    return hangs.run_once([sys.executable, "-c", code], {}, timeout=timeout, idle_s=idle_s, poll=0.05)


def test_run_once_outcomes():
    assert _run("print('exec'); print('ok 0s')")["outcome"] == "ok"
    assert _run("print('exec'); raise SystemExit(3)")["outcome"] == "error"
    idle = _run("import time; print('exec', flush=True); time.sleep(30)")  # parked: no CPU, nothing runnable
    assert idle["outcome"] == "hang" and idle["stalled"] and idle["wall_s"] < 5
    busy = _run("print('exec', flush=True)\nwhile True: pass", timeout=1.5)  # busy: only the time limit stops it
    assert busy["outcome"] == "hang" and busy["timed_out"] and not busy["stalled"]
    before = _run("import time; time.sleep(1.2); print('exec'); print('ok')")  # idle before 'exec' is no stall
    assert before["outcome"] == "ok"
