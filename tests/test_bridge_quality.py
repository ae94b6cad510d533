"""Profiling bridge, quality harness: metrics, dataset format, per-config scoring on the tiny model."""

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from profiling_bridge.archs import BridgeError, build_model  # noqa: E402
from profiling_bridge.cli import main  # noqa: E402
from profiling_bridge.knobs import grid_configs  # noqa: E402
from profiling_bridge.quality import (  # noqa: E402
    ByteTokenizer,
    evaluate,
    image_processor,
    load_dataset,
    requests_from_dataset,
    write_toy_dataset,
)
from profiling_bridge.runner import MLLMRunner  # noqa: E402
from profiling_bridge.vqa import exact_match, normalize_vqa, vqa_accuracy  # noqa: E402

GRID = dict(vision_tokens=(4, 16), top_k=(1, 4), active_blocks=(2, 4))


def test_vqa_normalization_follows_the_official_rules():
    assert normalize_vqa("Two dogs.") == "2 dogs"
    assert normalize_vqa("The  Cat!") == "cat"
    assert normalize_vqa("isnt it") == "isn't it"
    assert normalize_vqa("1,000") == "1000"


def test_vqa_accuracy_standard_leave_one_out():
    ten = ["2"] * 3 + ["3"] * 7
    assert vqa_accuracy("two", ten) == pytest.approx(0.9)  # (3 * 2/3 + 7 * 1) / 10
    assert vqa_accuracy("3", ten) == pytest.approx(1.0)
    assert vqa_accuracy("4", ten) == 0.0
    assert vqa_accuracy("yes", ["yes", "Yes", "no"]) == pytest.approx(2 / 3)  # few references: matches / n
    assert vqa_accuracy("red", ["red"]) == 1.0


def test_exact_match():
    assert exact_match(" Paris. ", ["paris", "Lyon"]) == 1.0
    assert exact_match("the paris", ["paris"]) == 0.0


def test_dataset_format_errors(tmp_path):
    path = write_toy_dataset(tmp_path, n=4)
    items = load_dataset(path)
    assert [it.split for it in items] == ["train", "train", "train", "val"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(dict(id="x", image="images/q0.png", question="?", task_type="t")) + "\n")
    with pytest.raises(BridgeError, match="bad.jsonl:1: missing key 'answers'"):
        load_dataset(bad)
    bad.write_text(json.dumps(dict(id="x", image="nope.png", question="?", answers=["a"], task_type="t")) + "\n")
    with pytest.raises(BridgeError, match="not found"):
        load_dataset(bad)


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer(512)
    ids = tok.encode("héllo?")
    assert min(ids) >= 3 and max(ids) < 3 + 256 and tok.decode(ids + [511, 1]) == "héllo?"


def test_harness_scores_every_item_under_every_config(tmp_path):
    torch.set_num_threads(1)
    items = load_dataset(write_toy_dataset(tmp_path, n=4))
    runner = MLLMRunner(build_model("tiny", seed=0))
    tok, proc = ByteTokenizer(512), image_processor(runner.model)
    configs = grid_configs(GRID)
    res = evaluate(runner, items, configs, tok, proc, max_new_tokens=4, progress=False)
    assert res["scores"].shape == (4, 8) and np.all((res["scores"] >= 0) & (res["scores"] <= 1))
    # mechanics: with the references set to the model's own greedy answers every score is 1
    rigged = [dataclasses.replace(it, answers=(res["predictions"][i][0],), metric="exact_match") for i, it in enumerate(items)]
    again = evaluate(runner, rigged, configs[:1], tok, proc, max_new_tokens=4, progress=False)
    assert again["predictions"] == [[res["predictions"][i][0]] for i in range(4)]
    assert np.all(again["scores"] == 1.0)
    # and the request shapes of a dataset: text prompt tokens, first reference + EOS
    req = requests_from_dataset(items, tok, runner.model, "toy")
    q = items[0].question
    assert req.prompt_tokens[0] == 1 + len("USER: ") + len(f"\n{q} ASSISTANT:")
    assert req.output_tokens[0] == len(items[0].answers[0]) + 1


def test_quality_command_writes_scores(tmp_path):
    data = write_toy_dataset(tmp_path, n=2)
    out = tmp_path / "q.json"
    rc = main(["quality", "--arch", "tiny", "--dataset", str(data), "--out", str(out), "--threads", "1",
               "--grid", "vision_tokens=4,16", "top_k=2", "active_blocks=2,4", "--max-new-tokens", "3", "--no-progress"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert np.array(rep["scores"]).shape == (2, 4) and rep["random_weights"] is True
    assert rep["provenance"]["versions"]["transformers"]


def test_graded_score_normalizes_over_the_answer_vocabulary():
    from profiling_bridge.batch_eval import candidate_logprobs
    from profiling_bridge.vqa import graded_scores

    # restricted softmax: token 3 (logit 5, not a candidate) takes no mass; probabilities 1/6, 2/6, 3/6
    first = torch.log(torch.tensor([[1.0, 2.0, 3.0, 0.0]]))
    first[0, 3] = 5.0
    logp = candidate_logprobs(None, None, torch.zeros(1, 2, dtype=torch.long), None, first, ((0,), (1,), (2,)))
    assert graded_scores(logp, np.array([[0.0, 1.0, 0.0]]))[0] == pytest.approx(2 / 6)
    assert graded_scores(logp, np.array([[1.0, 0.0, 1.0]]))[0] == pytest.approx(4 / 6)
    assert graded_scores(logp + 7.0, np.array([[0.0, 0.0, 1.0]]))[0] == pytest.approx(3 / 6)  # shift-invariant
    # fractional metrics (VQA accuracy): the expected metric
    assert graded_scores(np.log([[1.0, 1.0]]), np.array([[1.0, 2 / 3]]))[0] == pytest.approx(5 / 6)


def _confident(model, allowed, scale):
    """Logits of the LM head scaled by ``scale``, every token outside ``allowed`` masked out."""
    mask = torch.full((model.config.text_config.vocab_size,), float("-inf"))
    mask[list(allowed)] = 0.0
    return model.lm_head.register_forward_hook(lambda m, a, out: out * scale + mask)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_graded_equals_exact_match_for_a_confident_model(tmp_path, batch_size):
    torch.set_num_threads(1)
    items = load_dataset(write_toy_dataset(tmp_path, n=8))
    tok = ByteTokenizer(512)
    letters = "abcd"
    allowed = [tok.encode(x)[0] for x in letters]
    runner = MLLMRunner(build_model("tiny", seed=0))
    proc, configs = image_processor(runner.model), grid_configs(GRID)[:3]
    items = [dataclasses.replace(it, answers=(letters[i % 4],), metric="exact_match") for i, it in enumerate(items)]
    hook = _confident(runner.model, allowed, 1e4)
    try:
        first = evaluate(runner, items, configs[:1], tok, proc, max_new_tokens=1, progress=False, batch_size=batch_size)
        greedy = [p[0] for p in first["predictions"]]
        assert set(greedy) <= set(letters)
        # items 4..7: half answered as the model answers (exact match 1), half not (0); items 0..3 keep a, b, c, d
        rigged = items[:4] + [dataclasses.replace(it, answers=(greedy[i] if i % 2 else next(x for x in letters if x != greedy[i]),))
                              for i, it in enumerate(items) if i >= 4]
        res = evaluate(runner, rigged, configs, tok, proc, max_new_tokens=1, progress=False, batch_size=batch_size)
    finally:
        hook.remove()
    assert res["answer_candidates"] == list(letters)
    assert set(res["exact_match"][4:, 0]) == {0.0, 1.0}
    np.testing.assert_allclose(res["graded"], res["exact_match"], atol=1e-9)
    np.testing.assert_array_equal(res["scores"], res["exact_match"])
    # the same model unscaled: graded strictly between 0 and 1
    hook = _confident(runner.model, allowed, 1.0)
    try:
        soft = evaluate(runner, rigged, configs, tok, proc, max_new_tokens=1, progress=False, batch_size=batch_size)
    finally:
        hook.remove()
    assert np.all((soft["graded"] > 0) & (soft["graded"] < 1))
    np.testing.assert_array_equal(soft["exact_match"], res["exact_match"])
