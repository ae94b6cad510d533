"""The measured CPU table's pieces: easy-vqa loader, tiny-llava-olmoe train -> checkpoint -> profile, harness."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("easy_vqa")

from conftest import tiny_vqa_profile_args  # noqa: E402
from e5jax.table import load_table  # noqa: E402
from profiling_bridge import quality as qh  # noqa: E402
from profiling_bridge import tiny_vqa as tv  # noqa: E402
from profiling_bridge.archs import build_model  # noqa: E402
from profiling_bridge.cli import main as bridge  # noqa: E402
from profiling_bridge.knobs import grid_configs  # noqa: E402
from profiling_bridge.runner import MLLMRunner  # noqa: E402
from profiling_bridge.vqa import exact_match  # noqa: E402


def test_easy_vqa_loader_few_items():
    items = tv.load_easy_vqa("test", limit=6, stats=True)
    assert len(items) == 6
    answers = set(__import__("easy_vqa").get_answers())
    for it in items:
        assert it.image.is_file() and it.answers[0] in answers and it.metric == "exact_match"
        assert it.task_type == tv.question_type(it.question)
        f = dict(it.features)
        assert set(f) == {"colour_count", "edge_density", "fg_fraction"}
        assert 0 <= f["edge_density"] <= 1 and 0 < f["fg_fraction"] < 1 and f["colour_count"] >= 2
    assert tv.question_type("what color is the shape?") == "color"
    assert tv.question_type("what is the blue shape?") == "shape"
    assert tv.question_type("is there not a red shape in the image?") == "yes_no"


def test_tokenizer_and_majority_baseline():
    tok = qh.HFTokenizer(tv.build_tokenizer(64, 63))
    ids = tok.encode("USER: what color is the shape? ASSISTANT:")
    assert max(ids) < 63 and 3 not in ids  # no <unk>
    assert tok.decode([tok.encode("teal")[0], 1]) == "teal"  # EOS (id 1) is skipped
    train = tv.load_easy_vqa("train", limit=200)
    base = tv.majority_baselines(train, train)
    assert base["majority_answer"] in {"yes", "no"} and base["question_majority_accuracy"] >= base["majority_accuracy"]


def test_exact_match_on_known_answers():
    assert exact_match("Red.", ["red"]) == 1.0
    assert exact_match(" circle ", ["circle"]) == 1.0
    assert exact_match("circles", ["circle"]) == 0.0
    assert exact_match("", ["no"]) == 0.0


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # tiny models on a small shared CPU: one thread is far faster and steadier


def test_batched_harness_matches_one_by_one(tmp_path):
    path = qh.write_toy_dataset(tmp_path, n=6)
    items = qh.load_dataset(path)
    runner = MLLMRunner(build_model("tiny", seed=0))
    configs = grid_configs(dict(vision_tokens=(4, 16), top_k=(1, 4), active_blocks=(2, 4)))
    tok, proc = qh.load_tokenizer(runner.model), qh.image_processor(runner.model)
    one = qh.evaluate(runner, items, configs, tok, proc, max_new_tokens=4, progress=False)
    batched = qh.evaluate(runner, items, configs, tok, proc, max_new_tokens=4, progress=False, batch_size=4)
    assert batched["predictions"] == one["predictions"]
    np.testing.assert_array_equal(batched["scores"], one["scores"])
    np.testing.assert_array_equal(batched["exact_match"], one["exact_match"])
    # graded quality, multi-token (byte) answers teacher-forced: the same in both harnesses, a probability
    np.testing.assert_allclose(batched["graded"], one["graded"], rtol=1e-4, atol=1e-6)
    assert np.all((one["graded"] > 0) & (one["graded"] < 1))
    # known answers: references set to the model's own greedy answers score 1 everywhere
    for it, preds in zip(items, one["predictions"]):
        assert exact_match(preds[0], [preds[0]]) == 1.0


def test_train_tiny_checkpoint_profile_and_validate(tmp_path, capsys):
    ck, summary = tmp_path / "ck", tmp_path / "summary.json"
    assert bridge(["train-tiny", "--out", str(ck), "--steps", "4", "--batch-size", "4", "--limit", "64",
                   "--vision-steps", "2", "--full-fraction", "0.5",
                   "--test-limit", "12", "--summary", str(summary), "--no-progress"]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "train_meta.json"} <= {p.name for p in ck.iterdir()}
    s = json.loads(summary.read_text())
    assert s["test"]["test_questions"] == 12 and 0 <= s["test"]["full_accuracy"] <= 1
    assert set(s["test"]["accuracy_per_knob_level_others_full"]["active_blocks"]) == {"2", "3", "4", "5", "6"}
    assert s["train"]["vision_steps"] == 2 and s["train"]["full_config_steps"] == 2 and s["train"]["balance"]

    assert bridge(["easy-vqa", "--out", str(tmp_path / "data"), "--requests", "16", "--seed", "1"]) == 0
    table_path = tmp_path / "t.npz"
    assert bridge(tiny_vqa_profile_args(ck, tmp_path / "data" / "requests.jsonl", table_path, max_new_tokens=3, warmup=1,
                                        repeats=2, validate_samples=2)) == 0
    t = load_table(table_path)
    assert t.exact_match.shape == (16, 8) and set(np.unique(t.exact_match)) <= {0.0, 1.0}
    assert np.all((t.quality > 0) & (t.quality < 1))  # graded: the probability of the right answer
    assert {"prompt_tokens", "edge_density", "colour_count", "fg_fraction"} <= set(t.feature_names)
    assert "expected_output_tokens" in t.feature_names  # kept even when constant (one-word answers): refresh needs it
    assert not t.meta["quality_is_placeholder"] and set(t.task_types) <= set(tv.TASK_TYPES)


def test_image_labels_from_questions():
    items = tv.load_easy_vqa("train", limit=300)
    paths = sorted({it.image for it in items})
    row = np.array([paths.index(it.image) for it in items])
    colours = sorted({it.answers[0] for it in items if it.task_type == "color"})
    lab = tv.image_labels(items, len(paths), row, colours)
    for it, r in zip(items, row):  # every shape / colour question agrees with its image's label
        if it.task_type == "shape":
            assert tv.SHAPES[lab[r, 0]] == it.answers[0]
        elif it.task_type == "color":
            assert colours[lab[r, 1]] == it.answers[0]
    assert (lab[:, 0] >= 0).float().mean() > 0.5


def test_knob_effects_on_a_small_table():
    from conftest import make_small_table

    from profiling_bridge.knob_effects import knob_effects

    t = make_small_table()
    e = knob_effects(t)
    for name, rows in e["knobs"].items():
        top = rows[str(int(t.knobs[name][-1]))]
        assert top["latency_over_full"] == 1.0 and top["quality"] == e["full_quality"]
    assert e["smallest_over_full_latency"] < 1
    # per task type: the requests' own means, weighted back to the overall mean
    tasks = np.asarray(t.task_types)
    assert sum(d["requests"] for d in e["by_task"].values()) == t.num_requests
    for task, d in e["by_task"].items():
        assert d["full_quality"] == round(float(t.quality[tasks == task, t.full_config].mean()), 4)
    name = next(iter(t.knobs))
    low = str(int(t.knobs[name][0]))
    overall = sum(d["knobs"][name][low] * d["requests"] for d in e["by_task"].values()) / t.num_requests
    assert abs(overall - e["knobs"][name][low]["quality"]) < 1e-3
