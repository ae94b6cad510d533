"""The trace cache (e5jax.tracecache): a program loaded from it computes what the program traced afresh computes,
bit for bit; it is found again by a second compile and missed when anything its key covers changes."""

from __future__ import annotations

import importlib
import sys

import jax
import numpy as np
import pytest

from conftest import make_known_oracle_table
from e5jax import engine, loop, tracecache
from e5jax import env as E
from e5jax.config import config_from_dict
from e5jax.methods.common import Program, variant

RAW = {"run": {"seeds": 2, "methods": ["lut", "grpo"], "total_env_steps": 1024, "env_steps_per_update": 256,
               "eval_every": 2}}


def _outputs(p, env):
    """A chunk and an evaluation of prepared method ``p``, on the host."""
    states, m = p.chunk(p.states, engine.chunk_keys(p.keys, 0), env, p.masks[0], *p.rows)
    return jax.device_get((states, m, p.evaluate(states, env, *p.rows)))


def _same(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return (jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and len(la) == len(lb)
            and all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True) for x, y in zip(la, lb)))


@pytest.mark.parametrize("name", ["lut", "grpo"])
def test_cached_program_equals_the_traced_one(tmp_path, monkeypatch, name):
    run, cfgs = config_from_dict(RAW)
    env = E.env_from_run(run, make_known_oracle_table())
    p = loop.init_method(name, cfgs[name], run, env)
    monkeypatch.setenv("E5JAX_TRACE_CACHE", "off")
    plain = loop.compile_method(p, env)
    assert "trace_cache" not in plain.compile_parts["chunk"]
    monkeypatch.setenv("E5JAX_TRACE_CACHE", str(tmp_path / "traces"))
    first = loop.compile_method(p, env)
    again = loop.compile_method(p, env)
    assert [first.compile_parts[k]["trace_cache"] for k in ("chunk", "evaluate")] == ["miss", "miss"]
    assert [again.compile_parts[k]["trace_cache"] for k in ("chunk", "evaluate")] == ["hit", "hit"]
    assert len(list((tmp_path / "traces").iterdir())) == 2
    ref = _outputs(plain, env)
    assert _same(ref, _outputs(first, env)) and _same(ref, _outputs(again, env))
    # the initial states: the method's init program compiled ahead of time (cache off), from a fresh entry and from
    # a found one all equal the jitted Trainer.init's
    want = jax.device_get(p.trainer.init(p.keys, env))
    assert _same(want, jax.device_get(p.states))
    monkeypatch.setenv("E5JAX_TRACE_CACHE", str(tmp_path / "init_traces"))
    for _ in range(2):
        assert _same(want, jax.device_get(loop.init_method(name, cfgs[name], run, env).states))
    assert [f.name.split("-")[0] for f in (tmp_path / "init_traces").iterdir()] == ["init"]  # one entry, found again
    monkeypatch.setenv("E5JAX_TRACE_CACHE", str(tmp_path / "traces"))
    if name == "grpo":  # another config value the program closes over, or another number of rows: new entries
        _, other = config_from_dict({**RAW, "learner": {"lr": 1e-3}})
        loop.compile_method(loop.init_method(name, other[name], run, env), env)
        assert sorted(f.name.split("-")[0] for f in (tmp_path / "traces").iterdir()) == [
            "chunk_eval", "chunk_eval", "evaluate", "evaluate", "init"]  # and the other config's init program
        run3, _ = config_from_dict(RAW, seeds=3)
        three = loop.compile_method(loop.init_method(name, cfgs[name], run3, env), env)
        assert three.compile_parts["chunk"]["trace_cache"] == "miss"
        with pytest.raises(TypeError, match="structure"):  # the rows' env overrides missing: refused, not misread
            first.evaluate(p.states, env, {"lam": np.ones(2, np.float32)})


def test_key_follows_sources_label_and_arguments(tmp_path, monkeypatch):
    mod = tmp_path / "tc_user_method.py"
    mod.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("tc_user_method")
    try:
        args = (np.zeros((2, 3), np.float32), {"b": np.int32(1)})
        k = tracecache.key("label", "prog", args)
        assert k == tracecache.key("label", "prog", args)
        assert k != tracecache.key("other label", "prog", args)
        assert k != tracecache.key("label", "prog", (np.zeros((2, 4), np.float32), {"b": np.int32(1)}))
        mod.write_text("X = 2  # a user's method, edited\n")
        assert k != tracecache.key("label", "prog", args)
    finally:
        sys.modules.pop("tc_user_method", None)


def test_not_used_under_a_variant_or_when_off(tmp_path, monkeypatch):
    f = jax.jit(lambda x: x + 1)
    monkeypatch.setenv("E5JAX_TRACE_CACHE", str(tmp_path))
    assert tracecache.staged(f, (np.ones(3),), None, "p", lambda: 0.0) is None  # no label: not cacheable
    with variant(Program(metrics=lambda *a: {})):
        assert tracecache.usable() is not None
        assert tracecache.staged(f, (np.ones(3),), "l", "p", lambda: 0.0) is None
    compiled, times = tracecache.staged(f, (np.ones(3),), "l", "p", lambda: 0.0)
    assert times["trace_cache"] == "miss" and np.array_equal(compiled(np.ones(3)), np.full(3, 2.0))
    monkeypatch.setenv("E5JAX_TRACE_CACHE", "off")
    assert tracecache.cache_dir() is None


def test_an_unwritable_cache_directory_is_a_miss_not_a_failure(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("E5JAX_TRACE_CACHE", str(blocker / "traces"))
    compiled, times = tracecache.staged(jax.jit(lambda x: x * 2), (np.ones(3),), "l", "p", lambda: 0.0)
    assert times["trace_cache"].startswith("miss, not written") and np.array_equal(compiled(np.ones(3)), np.full(3, 2.0))
