"""The GPU scripts stay honest on the CPU: experiments/gpu_run.py end to end (tiny arch), the kernel-time and
routing-skew experiments on the tiny arch, and the cost-model calibration recovering known parameters."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))


def _run(args, timeout=240):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_gpu_run_tiny_bridge_and_skew(tmp_path):
    """The same steps as on the GPU (bridge profile + e5jax validate, routing skew), tiny arch on the CPU."""
    r = _run(["experiments/gpu_run.py", "--tiny", "--steps", "env,bridge,routing_skew", "--out", str(tmp_path)])
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "gpu_run.json").read_text())
    assert doc["tiny"] and set(doc["steps"]) == {"bridge", "routing_skew"}
    bridge = doc["steps"]["bridge"]
    assert bridge["rc"] == 0 and bridge["validate"]["rc"] == 0
    assert bridge["validate"]["summary"]["num_configs"] == 8
    assert doc["env"]["torch"] == torch.__version__
    skew = json.loads((tmp_path / "routing_skew.json").read_text())
    rows = {(r["top_k"], r["skew"]): r for r in skew["rows"]}
    assert {s for _, s in rows} == {"uniform", "zipf1", "zipf2", "hot"}
    for (k, s), row in rows.items():
        load = row["prefill_load"]
        if s == "hot":  # every token to the same k experts: exactly k hit per layer, each with 1/k of the load
            assert load["experts_hit_per_layer"] == k and load["busiest_expert_share"] == pytest.approx(1 / k)
        assert row["prefill_ms"]["p50"] > 0 and row["decode_step_ms"]["p50"] > 0
    assert rows[(4, "uniform")]["prefill_load"]["experts_hit_per_layer"] > rows[(4, "hot")]["prefill_load"]["experts_hit_per_layer"]
    # at most 8 files come back from the device
    assert len(list(tmp_path.iterdir())) <= 8


def test_gpu_run_rejects_unknown_step(tmp_path):
    r = _run(["experiments/gpu_run.py", "--tiny", "--steps", "bridge,nope", "--out", str(tmp_path / "o")])
    assert r.returncode == 2 and "unknown step 'nope'" in r.stderr and not (tmp_path / "o").exists()


def test_kernel_time_tiny_and_union():
    import gpu_kernel_time as K

    assert K.union_us([(0, 2), (1, 3), (5, 6)]) == 4.0  # [0, 3] and [5, 6]
    assert K.union_us([]) == 0.0


def test_calibration_recovers_known_cost_parameters():
    """Fit the synthetic cost model to latencies it generated itself with other parameters: recovered exactly."""
    import calibrate_cost_model as C
    from e5jax.synth import SynthParams, generate

    true = dataclasses.replace(SynthParams(), overhead_ms=3.0, prefill_dense_us=0.5, prefill_expert_us=0.1,
                               decode_head_ms=0.2, decode_dense_ms=0.3, decode_expert_ms=0.02, decode_kv_us=0.05)
    t = generate(seed=1, num_requests=40)
    knobs = {k: np.asarray(v) for k, v in t.knobs.items()}
    f = dict(zip(t.feature_names, t.features.T))
    prompt, out = f["prompt_tokens"], f["expected_output_tokens"]
    target = sum(C.synth_parts(true, prompt, out, knobs).values())
    fitted, err = C.fit(target, SynthParams(), prompt, out, knobs, vision_ms=true.vision_encoder_ms)
    assert err["median_ape_pct"] < 0.5
    fit_lat = sum(C.synth_parts(fitted, prompt, out, knobs).values())
    np.testing.assert_allclose(fit_lat, target, rtol=0.02)
    s = C.summarize(C.synth_parts(true, prompt, out, knobs), knobs)
    assert 0 < s["smallest_over_full"] < 1 and sum(s["stage_share_at_full"].values()) == pytest.approx(1.0)


def test_compile_flags_step_runs_every_variant_with_its_flags_and_trace_cache(tmp_path):
    """gpu_run's compile_flags step, with a stand-in for ``e5jax run`` that records the environment it got."""
    import gpu_run as G

    run_dir, traces = tmp_path / "run", tmp_path / "traces"
    fake = ("import json, os, pathlib; d = pathlib.Path(%r); d.mkdir(exist_ok=True); "
            "m = {'compile_time_s': 1.0, 'compile_breakdown_s': {}, 'train_time_s': 2.0, "
            "'curves': {'val_utility_norm': {'mean': [0.1, 0.5]}}}; "
            "(d / 'e5_training_curves.json').write_text(json.dumps({'meta': {'total_wall_time_s': 3.0, 'env': "
            "{k: os.environ.get(k) for k in ('XLA_FLAGS', 'E5JAX_TRACE_CACHE', 'E5JAX_JAX_CACHE', 'E5JAX_OVERHEAD')}}, "
            "'methods': {'lut': m}}))" % str(run_dir))
    seen = []
    real = G.run_compile_summary

    def spy(d):
        seen.append(json.loads((d / "e5_training_curves.json").read_text())["meta"]["env"])
        return real(d)

    G.run_compile_summary = spy
    try:
        with open(tmp_path / "log.txt", "w") as log:
            rec = G.compile_flags_step([sys.executable, "-c", fake], run_dir, traces, 120, log, {"XLA_FLAGS": "--base"})
    finally:
        G.run_compile_summary = real
    assert rec["rc"] == 0 and list(rec["variants"]) == [n for n, _, _ in G.COMPILE_VARIANTS]
    assert [e["XLA_FLAGS"] for e in seen] == [" ".join(x for x in ("--base", f) if x) for _, f, _ in G.COMPILE_VARIANTS]
    assert all(e["E5JAX_JAX_CACHE"] == "off" and e["E5JAX_OVERHEAD"] == "off" for e in seen)
    first = seen[0]["E5JAX_TRACE_CACHE"]  # the warm variant reads the first run's trace cache, the others their own
    assert seen[-1]["E5JAX_TRACE_CACHE"] == first and all(e["E5JAX_TRACE_CACHE"] != first for e in seen[1:-1])
    assert rec["variants"]["default"]["methods"]["lut"]["final_utility_norm"] == 0.5
    assert not run_dir.exists() and not traces.exists()


def test_engine_step_validates_runs_and_packs_the_table(tmp_path):
    """gpu_run's engine step with stand-ins: the table it profiles is validated, E5 runs on it with the overhead
    analysis off, and the table and the run's JSON come back in one archive; a failed profile stops it there."""
    import tarfile

    import gpu_run as G

    work, dest = tmp_path / "engine", tmp_path / "engine.tgz"
    table = work / "t.npz"
    make_table = [sys.executable, "-c", "import sys, pathlib; pathlib.Path(sys.argv[2]).write_bytes(b'npz')", "--out",
                  str(table)]
    run = ("import os, json, pathlib; d = pathlib.Path(%r) / 'run'; d.mkdir(parents=True); "
           "(d / 'e5_training_curves.json').write_text(json.dumps({'overhead': os.environ.get('E5JAX_OVERHEAD')}))"
           % str(work))
    cmds = dict(engine=make_table, engine_validate=[sys.executable, "-c", "print('x', '{\"num_configs\": 8}')"],
                engine_run=[sys.executable, "-c", run])
    with open(tmp_path / "log.txt", "w") as log:
        rec = G.engine_step(cmds, work, dest, 120, log, dict(__import__("os").environ))
    assert rec["rc"] == 0 and rec["validate"]["summary"] == {"num_configs": 8} and rec["run"]["rc"] == 0
    assert rec["packed"] == ["run/e5_training_curves.json", "t.npz"] and not work.exists()
    with tarfile.open(dest) as tar:
        assert json.loads(tar.extractfile("run/e5_training_curves.json").read()) == {"overhead": "off"}
    failed = dict(cmds, engine=[sys.executable, "-c", "raise SystemExit(3)", "--out", str(table)])
    dest.unlink()
    with open(tmp_path / "log.txt", "w") as log:
        rec = G.engine_step(failed, work, dest, 120, log, {})
    assert rec["rc"] == 3 and "validate" not in rec and "run" not in rec and not dest.exists()
