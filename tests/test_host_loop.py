"""The host loop (e5jax.loop): the compile pool's order and cancellation, and the run kept apart from the overhead
analysis (imported only when it runs)."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from e5jax import loop


def _fake_pool(monkeypatch, block: threading.Event | None = None):
    """compile_method replaced by a recorder (waits up to 0.5 s on ``block`` when given); returns the event log."""
    log, lock = [], threading.Lock()

    def compile_method(p, env):
        if block is not None:
            block.wait(0.5)
        with lock:
            log.append(("compile", p, threading.current_thread() is threading.main_thread()))
        return f"compiled {p}"

    monkeypatch.setattr(loop, "compile_method", compile_method)
    return log


def init_in_main(log):
    def init(name):
        log.append(("init", name, threading.current_thread() is threading.main_thread()))
        return name

    return init


def test_compile_pool_inits_here_compiles_in_threads(monkeypatch):
    log = _fake_pool(monkeypatch)
    also = []
    names = ["a", "b", "c"]
    with loop.compile_pool(names, init_in_main(log), None, also=lambda n, p: also.append((n, p)),
                           init_first=True) as compiled:
        compiled.wait(progress=False)
        assert [compiled[n] for n in names] == ["compiled a", "compiled b", "compiled c"]
    inits = [e for e in log if e[0] == "init"]
    assert [e[1] for e in inits] == names and all(e[2] for e in inits)  # in order, in this thread
    assert all(e[0] == "init" for e in log[:3])  # init_first: every init before any compile
    assert sorted(e[1] for e in log[3:]) == names and not any(e[2] for e in log[3:])  # compiles in the pool
    assert sorted(also) == [(n, n) for n in names]


def test_compile_pool_cancels_compiles_not_started(monkeypatch):
    monkeypatch.setattr(loop.os, "cpu_count", lambda: 1)  # one compile thread: the others wait in the queue
    log = _fake_pool(monkeypatch, block=threading.Event())
    with pytest.raises(ValueError):
        with loop.compile_pool(["a", "b", "c"], init_in_main(log), None) as compiled:
            raise ValueError("training failed")
    assert not compiled.futures["a"].cancelled()
    assert compiled.futures["b"].cancelled() and compiled.futures["c"].cancelled()
    assert [e[1] for e in log if e[0] == "compile"] == ["a"]


def test_run_does_not_import_the_overhead_analysis():
    code = "import sys, e5jax.run; assert 'e5jax.overhead' not in sys.modules, 'e5jax.run imported e5jax.overhead'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
