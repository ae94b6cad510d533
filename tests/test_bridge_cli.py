"""Profiling bridge, command line: profile / refresh / merge-quality write tables the lab accepts."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from e5jax.table import ProfileTable, load_table  # noqa: E402
from profiling_bridge.cli import main  # noqa: E402
from profiling_bridge.quality import write_toy_dataset  # noqa: E402

E5JAX = Path(sys.executable).parent / "e5jax"
GRID = ["--grid", "vision_tokens=4,16", "top_k=1,4", "active_blocks=2,4"]
FAST = ["--threads", "1", "--warmup", "1", "--repeats", "3", "--e2e-repeats", "3", "--prefill-points", "3",
        "--decode-points", "3", "--no-progress"]
SHAPES = [
    dict(request_id="r0", task_type="general_vqa", split="train", prompt_tokens=12, output_tokens=3),
    dict(request_id="r1", task_type="captioning", split="train", prompt_tokens=30, output_tokens=5),
    dict(request_id="r2", task_type="general_vqa", split="val", prompt_tokens=20, output_tokens=2),
]


def _validate(path) -> subprocess.CompletedProcess:
    return subprocess.run([str(E5JAX), "validate", str(path)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    p = tmp_path_factory.mktemp("shapes") / "shapes.json"
    p.write_text(json.dumps(SHAPES))
    return p


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, shapes):
    out = tmp_path_factory.mktemp("profile") / "tiny.npz"
    rc = main(["profile", "--arch", "tiny", "--requests", str(shapes), "--out", str(out), "--validate-samples", "4",
               *GRID, *FAST])
    assert rc == 0
    return out


def test_profile_writes_a_table_the_lab_accepts(profiled, capsys):
    t = load_table(profiled)
    assert t.knob_names == ("vision_tokens", "top_k", "active_blocks") and t.num_configs == 8
    assert t.request_ids.tolist() == ["r0", "r1", "r2"] and t.feature_names == ("prompt_tokens", "expected_output_tokens")
    assert np.all(t.latency_ms > 0)
    # loose monotonic trend only (CPU): the full config is slower than the smallest one on average
    assert t.latency_ms[:, -1].mean() > t.latency_ms[:, 0].mean()
    m = t.meta
    assert m["source"] == "profiling_bridge" and m["arch"] == "tiny" and m["device"]["type"] == "cpu"
    assert m["versions"]["torch"] == torch.__version__ and m["model_info"]["experts_implementation"] == "grouped_mm"
    assert m["quality_is_placeholder"] is True and m["quality_source"].startswith("placeholder")
    v = m["latency"]["validation"]
    assert v["n"] == 4 and v["median_ape_pct"] >= 0 and v["p95_ape_pct"] >= v["median_ape_pct"]
    assert len(m["latency"]["model"]["prefill_p50_ms"]) == len(m["latency"]["model"]["prefill_tokens"])
    res = _validate(profiled)
    assert res.returncode == 0, res.stderr
    assert "8 configs" in res.stdout


def test_profile_e2e_method_measures_every_pair_with_std(tmp_path, shapes):
    out = tmp_path / "e2e.csv"
    rc = main(["profile", "--arch", "tiny", "--requests", str(shapes), "--out", str(out), "--method", "e2e",
               "--grid", "vision_tokens=4,16", "top_k=2", "active_blocks=4", *FAST])
    assert rc == 0
    t = load_table(out)
    assert t.latency_std_ms is not None and t.latency_std_ms.shape == (3, 2) and np.all(t.latency_std_ms >= 0)
    assert t.meta["latency"]["method"] == "e2e"


def test_profile_with_a_static_kv_cache(tmp_path, shapes):
    """--decode static: the stage grids, the latency model and its end-to-end validation run on preallocated caches
    of one length (the longest request's), and the table says which regime it measured."""
    out = tmp_path / "static.npz"
    rc = main(["profile", "--arch", "tiny", "--requests", str(shapes), "--out", str(out), "--decode", "static",
               "--validate-samples", "2", "--grid", "vision_tokens=4,16", "top_k=2", "active_blocks=4", *FAST])
    assert rc == 0
    t = load_table(out)
    assert t.meta["decode_regime"] == "static" and np.all(t.latency_ms > 0)
    assert t.meta["latency"]["validation"]["n"] == 2 and t.meta["latency"]["model"]["decode_step_p50_ms"]


def _with_quality(path: Path, out: Path, seed=1) -> ProfileTable:
    t = load_table(path)
    q = np.random.default_rng(seed).uniform(0.2, 0.9, t.quality.shape)
    t = t.replace(quality=q, meta={"source": "test quality", "quality_source": "hand-made for the test"})
    t.save(out)
    return load_table(out)


def test_refresh_remeasures_latency_and_keeps_quality(profiled, tmp_path):
    src = _with_quality(profiled, tmp_path / "in.csv")
    out = tmp_path / "refreshed.npz"
    rc = main(["refresh", "--table", str(tmp_path / "in.csv"), "--arch", "tiny", "--out", str(out),
               "--validate-samples", "2", *FAST])
    assert rc == 0
    t = load_table(out)
    np.testing.assert_array_equal(t.quality, src.quality.astype(np.float32))  # kept (npz stores float32)
    assert t.request_ids.tolist() == src.request_ids.tolist()
    assert not np.array_equal(t.latency_ms, src.latency_ms)  # re-measured
    assert t.meta["quality_source"].startswith(f"kept from {tmp_path / 'in.csv'}")
    assert t.meta["refreshed_from"]["meta"]["source"] == "test quality"
    assert _validate(out).returncode == 0


def test_profile_quality_from_and_merge_quality(profiled, shapes, tmp_path):
    src = _with_quality(profiled, tmp_path / "q.npz")
    merged = tmp_path / "merged.npz"
    assert main(["merge-quality", "--table", str(profiled), "--quality-from", str(tmp_path / "q.npz"), "--out", str(merged)]) == 0
    t = load_table(merged)
    np.testing.assert_array_equal(t.quality, src.quality)
    np.testing.assert_array_equal(t.latency_ms, load_table(profiled).latency_ms)
    assert t.meta["quality_source"].startswith("merged from") and t.meta["quality_is_placeholder"] is False

    out = tmp_path / "p.npz"
    rc = main(["profile", "--arch", "tiny", "--requests", str(shapes), "--out", str(out), "--quality-from",
               str(tmp_path / "q.npz"), "--method", "e2e", "--e2e-repeats", "1", *GRID, *FAST])
    assert rc == 0
    np.testing.assert_array_equal(load_table(out).quality, src.quality)


def test_profile_with_the_quality_harness(tmp_path):
    data = write_toy_dataset(tmp_path / "ds", n=4)
    out = tmp_path / "h.npz"
    rc = main(["profile", "--arch", "tiny", "--requests", str(data), "--out", str(out), "--quality-harness",
               "--max-new-tokens", "3", "--validate-samples", "2", *GRID, *FAST])
    assert rc == 0
    t = load_table(out)
    assert t.request_ids.tolist() == ["q0", "q1", "q2", "q3"] and t.split.tolist() == ["train"] * 3 + ["val"]
    assert "quality harness" in t.meta["quality_source"] and "RANDOM weights" in t.meta["quality_source"]
    assert np.all((t.quality >= 0) & (t.quality <= 1))


def test_profile_with_local_weights_directory(tmp_path):
    from profiling_bridge.archs import build_model

    build_model("tiny", seed=7).save_pretrained(tmp_path / "ckpt")
    data = write_toy_dataset(tmp_path / "ds", n=4)
    out = tmp_path / "w.npz"
    rc = main(["profile", "--arch", "tiny", "--weights", str(tmp_path / "ckpt"), "--requests", str(data), "--out", str(out),
               "--quality-harness", "--max-new-tokens", "2", "--method", "e2e", "--e2e-repeats", "1",
               "--grid", "vision_tokens=4,16", "top_k=2", "active_blocks=4", *FAST])
    assert rc == 0
    m = load_table(out).meta
    assert m["weights"] == str(tmp_path / "ckpt") and m["quality_is_placeholder"] is False
    assert "RANDOM" not in m["quality_source"]
    from profiling_bridge.cli import weights_digest

    assert m["weights_sha256"] == weights_digest(tmp_path / "ckpt") and len(m["weights_sha256"]) == 64
    assert len(m["latency"]["load_average"]["before"]) == 3  # the load is recorded with the latency

    # refresh with another checkpoint than the table's: one line, exit 2, nothing written
    build_model("tiny", seed=8).save_pretrained(tmp_path / "other")
    assert weights_digest(tmp_path / "other") != m["weights_sha256"]
    again = tmp_path / "refreshed.npz"
    argv = ["refresh", "--arch", "tiny", "--table", str(out), "--out", str(again), "--method", "e2e", "--e2e-repeats",
            "1", *FAST]
    r = subprocess.run([sys.executable, "-m", "profiling_bridge", *argv, "--weights", str(tmp_path / "other")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is not the one" in r.stderr and not again.exists()
    # the same checkpoint is accepted
    assert main([*argv, "--weights", str(tmp_path / "ckpt")]) == 0
    assert load_table(again).meta["weights_sha256"] == m["weights_sha256"]


def test_profile_refuses_a_loaded_machine_with_max_load(shapes, tmp_path, monkeypatch, capsys):
    import profiling_bridge.cli as cli

    monkeypatch.setattr(cli.os, "getloadavg", lambda: (9.5, 9.0, 8.0))
    out = tmp_path / "loaded.npz"
    rc = main(["profile", "--arch", "tiny", "--requests", str(shapes), "--out", str(out), "--max-load", "4", *GRID,
               *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "load average is 9.5" in err[0] and not out.exists()


def test_profile_from_an_existing_table_keeps_its_requests(profiled, tmp_path):
    out = tmp_path / "again.npz"
    rc = main(["profile", "--arch", "tiny", "--requests", str(profiled), "--out", str(out), "--method", "e2e",
               "--grid", "vision_tokens=4,8", "top_k=2", "active_blocks=3", *FAST])
    assert rc == 0
    src, t = load_table(profiled), load_table(out)
    assert t.request_ids.tolist() == src.request_ids.tolist()
    np.testing.assert_array_equal(t.features, src.features)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["profile", "--arch", "nope", "--requests", "{shapes}"], "unknown arch 'nope'"),
        (["profile", "--arch", "tiny", "--requests", "{tmp}/missing.json"], "missing.json: no such file"),
        (["profile", "--arch", "tiny", "--requests", "{shapes}", "--grid", "vision_tokens=4,32"], "vision_tokens level 32 exceeds"),
        (["profile", "--arch", "tiny", "--requests", "{bad_shapes}"], "has no 'output_tokens'"),
        (["profile", "--arch", "tiny", "--requests", "{val_only}"], "no request in the 'train' split"),
        (["profile", "--arch", "tiny", "--requests", "{shapes}", "--quality-from", "{bad_table}"], "bad.csv"),
        (["refresh", "--arch", "tiny", "--table", "{bad_table}"], "bad.csv"),
        (["profile", "--arch", "tiny", "--requests", "{shapes}", "--decode", "graphs"], "--decode graphs needs --device cuda"),
        (["profile", "--arch", "tiny", "--requests", "{shapes}", "--device", "cuda"] if not torch.cuda.is_available()
         else ["profile", "--arch", "nope", "--requests", "{shapes}"], "cuda" if not torch.cuda.is_available() else "nope"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(argv, message, tmp_path, shapes, capsys):
    (tmp_path / "bad.csv").write_text("request_id,split\nx,train\n")
    (tmp_path / "bad_shapes.json").write_text(json.dumps([{k: v for k, v in SHAPES[0].items() if k != "output_tokens"}]))
    (tmp_path / "val_only.json").write_text(json.dumps([dict(SHAPES[2])]))
    subs = dict(shapes=str(shapes), tmp=str(tmp_path), bad_table=str(tmp_path / "bad.csv"),
                bad_shapes=str(tmp_path / "bad_shapes.json"), val_only=str(tmp_path / "val_only.json"))
    out = tmp_path / "out.npz"
    rc = main([a.format(**subs) for a in argv] + ["--out", str(out), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("e5jax-bridge: error:") and message in err[0]
    assert not out.exists()


def test_bad_out_extension_is_rejected_before_measuring(shapes, tmp_path, capsys):
    rc = main(["profile", "--arch", "tiny", "--requests", str(shapes), "--out", str(tmp_path / "t.txt")])
    assert rc == 2 and "use a .csv or .npz" in capsys.readouterr().err


def test_one_task_and_constant_output_length_are_kept_and_refresh_works(tmp_path, capsys):
    """A dataset of one task whose answers all have the same length: profile keeps the constant
    expected_output_tokens column (it used to be dropped, which left refresh without output lengths), the lab
    accepts the table and notes both, and refresh re-measures it."""
    data = write_toy_dataset(tmp_path / "ds", n=4)
    items = [json.loads(line) for line in data.read_text().splitlines()]
    for it in items:  # every item: the counting question, one-token answer "1" (+ EOS: 2 output tokens)
        it.update(question="How many squares are there?", answers=["1", "one", "1"], task_type="counting",
                  metric="exact_match")
    data.write_text("".join(json.dumps(it) + "\n" for it in items))
    table = tmp_path / "one_task.npz"
    assert main(["profile", "--arch", "tiny", "--requests", str(data), "--out", str(table), "--quality-harness",
                 "--max-new-tokens", "2", "--validate-samples", "2", *GRID, *FAST]) == 0
    t = load_table(table)
    assert t.feature_names == ("prompt_tokens", "expected_output_tokens") and set(t.task_types) == {"counting"}
    assert np.all(t.features[:, 1] == 2)
    res = _validate(table)
    assert res.returncode == 0, res.stderr
    assert "note: 1 task type ('counting'): the task LUT is a per-budget LUT" in res.stdout
    assert "note: feature expected_output_tokens is constant on train (2): uninformative" in res.stdout
    out = tmp_path / "refreshed.npz"
    assert main(["refresh", "--table", str(table), "--arch", "tiny", "--out", str(out), "--validate-samples", "2",
                 *FAST]) == 0
    r = load_table(out)
    np.testing.assert_array_equal(r.quality, t.quality)
    np.testing.assert_array_equal(r.features, t.features)
    assert not np.array_equal(r.latency_ms, t.latency_ms) and _validate(out).returncode == 0


def test_refresh_of_a_table_without_output_lengths_takes_them_from_the_flag(profiled, tmp_path, capsys):
    """A table without expected_output_tokens (as the bridge wrote when it dropped constant columns): refresh
    names --output-tokens; with it, every request gets that output length, recorded in meta."""
    src = load_table(profiled)
    t = src.replace(feature_names=("prompt_tokens",), features=src.features[:, :1])
    path = tmp_path / "no_output.npz"
    t.save(path)
    out = tmp_path / "r.npz"
    rc = main(["refresh", "--table", str(path), "--arch", "tiny", "--out", str(out), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no feature 'expected_output_tokens'" in err[0] and "--output-tokens N" in err[0]
    assert not out.exists()
    rc = main(["refresh", "--table", str(profiled), "--arch", "tiny", "--out", str(out), "--output-tokens", "2", *FAST])
    assert rc == 2 and "has an expected_output_tokens column" in capsys.readouterr().err and not out.exists()
    assert main(["refresh", "--table", str(path), "--arch", "tiny", "--out", str(out), "--output-tokens", "2",
                 "--validate-samples", "2", *FAST]) == 0
    r = load_table(out)
    assert r.feature_names == ("prompt_tokens",) and r.meta["output_tokens"].startswith("2 for every request")
    assert all(s["output_tokens"] == 2 for s in r.meta["latency"]["validation"]["samples"])


def test_committed_shapes_table_comes_from_its_committed_checkpoint():
    """The shapes-vqa table's latency and quality were profiled with the checkpoint committed beside it (one
    command, one checkpoint: docs/shapes_table.md); its latency stage was timed in interleaved rounds."""
    from profiling_bridge.cli import weights_digest

    root = Path(__file__).resolve().parent.parent
    t = load_table(root / "artifacts/tables/cpu_tiny_llava_olmoe_shapes.npz")
    assert t.meta["weights_sha256"] == weights_digest(root / "artifacts/shapes/ck")
    assert "quality harness" in t.meta["quality_source"] and t.exact_match is not None
    assert t.meta["latency"]["settings"]["rounds"] == 10 and t.meta["latency"]["load_average"]["before"][0] < 1.5
