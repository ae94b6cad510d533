"""shapes-vqa: seeded generator, answers on known scenes, and a tiny end-to-end train -> profile -> validate -> run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")
pytest.importorskip("transformers")

from conftest import tiny_vqa_profile_args  # noqa: E402
from e5jax.cli import main as e5jax_main  # noqa: E402
from e5jax.table import load_table  # noqa: E402
from profiling_bridge import quality as qh  # noqa: E402
from profiling_bridge import shapes_vqa as sv  # noqa: E402
from profiling_bridge import tiny_vqa as tv  # noqa: E402
from profiling_bridge.cli import main as bridge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "experiments" / "e5_quick.toml"

A = sv.Obj("circle", "red", "small", x=10, y=30, r=3)
B = sv.Obj("rectangle", "blue", "large", x=40, y=30, r=10)
C = sv.Obj("circle", "green", "large", x=40, y=8, r=6)
SCENE = sv.Scene((A, B, C), clutter=0, background=(240, 240, 240), specks=())


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_answers_on_a_known_scene():
    assert sv.count_answer(SCENE) == "3" and sv.count_answer(SCENE, "circle") == "2" and sv.count_answer(SCENE, "triangle") == "0"
    assert sv.exists_answer(SCENE, "small", "red", "circle") == "yes"
    assert sv.exists_answer(SCENE, "large", "red", "circle") == "no"  # size matters
    assert sv.exists_answer(SCENE, "small", "green", "circle") == "no"
    assert sv.related(SCENE, A, "right of") == [B, C] and sv.related(SCENE, A, "left of") == []
    assert sv.related(SCENE, B, "above") == [C] and sv.related(SCENE, C, "below") == [A, B]
    assert sv.related(SCENE, B, "left of") == [A]  # C's centre is right above B's: neither left nor right of it
    img = np.asarray(sv.render(SCENE))
    for o in SCENE.objects:  # each object's centre pixel has its colour, the corner the background
        assert tuple(img[o.y, o.x]) == sv.COLOURS[o.colour]
    assert tuple(img[0, 63]) == (240, 240, 240)


def test_patch_targets_on_a_known_scene():
    t = sv.patch_targets(SCENE)  # 8 x 8 patches of 8 px, row-major; (shape, colour, size) index + 1, centre
    assert t.shape == (64, 4)
    red, blue, green = (list(sv.COLOURS).index(c) + 1 for c in ("red", "blue", "green"))
    np.testing.assert_array_equal(t[3 * 8 + 1], [1, red, 1, 1])  # A's centre (10, 30): circle, red, small
    np.testing.assert_array_equal(t[3 * 8 + 5], [2, blue, 2, 1])  # B's centre (40, 30): rectangle, blue, large
    np.testing.assert_array_equal(t[1 * 8 + 5], [1, green, 2, 1])  # C's centre (40, 8)
    assert t[:, 3].sum() == 3 and not t[0].any() and not t[63].any()
    np.testing.assert_array_equal(t[2 * 8 + 3], [2, blue, 2, 0])  # B covers x 30-31, y 20-23 of it: 8 px
    assert not t[5 * 8 + 3].any()  # B covers 2 px of it (x 30-31, y 40): below MIN_COVER
    assert (t[:, 0] == 2).sum() == 14 and (t[:, 0] == 1).sum() == 2 + 4  # B's patches; A's two, C's four
    cluttered = sv.Scene(SCENE.objects, clutter=1, background=SCENE.background, specks=((60, 60, "red"), (1, 1, "blue")))
    np.testing.assert_array_equal(sv.patch_targets(cluttered), t)  # specks are background


def test_patch_loss_scores_the_right_targets():
    y = torch.from_numpy(sv.patch_targets(SCENE))[None]
    sure = torch.cat([F.one_hot(y[..., i], n) for i, n in enumerate(tv.PATCH_HEADS)] + [y[..., 3:]], -1).float() * 40 - 20
    assert tv.patch_loss(sure, y) < 1e-6
    wrong = y.clone()
    wrong[0, 3 * 8 + 1, 1] = 1  # A's colour says black
    assert tv.patch_loss(sure, wrong) > 40 / 64 / 2


def _recomputed(scene, question):
    """The answer of a generated question, recomputed from the scene by parsing the question text."""
    if m := re.fullmatch(r"how many (\w+?)s are there\?", question):
        return sv.count_answer(scene, None if m[1] == "shape" else m[1])
    if m := re.fullmatch(r"is there a (\w+) (\w+) (\w+)\?", question):
        return sv.exists_answer(scene, m[1], m[2], m[3])
    if m := re.fullmatch(r"what color is the (\w+) (\w+)\?", question):
        (o,) = sv.matching(scene, size=m[1], shape=m[2])
        return o.colour
    if m := re.fullmatch(r"what is the (\w+) (\w+) shape\?", question):
        (o,) = sv.matching(scene, size=m[1], colour=m[2])
        return o.shape
    m = re.fullmatch(r"what color is the shape (left of|right of|above|below) the (\w+) (\w+)\?", question)
    (anchor,) = sv.matching(scene, size=m[2], shape=m[3])
    (target,) = sv.related(scene, anchor, m[1])
    return target.colour


def test_generator_is_seeded_and_answers_are_right():
    reqs = sv.generate(200, seed=5)
    again = sv.generate(200, seed=5)
    assert [r[1:] for r in reqs] == [r[1:] for r in again] and [r[0] for r in reqs] == [r[0] for r in again]
    assert [r[1:4] for r in sv.generate(20, seed=6)] != [r[1:4] for r in reqs[:20]]
    assert {t: sum(r[3] == t for r in reqs) for t in sv.QUESTION_TYPES} == {t: 40 for t in sv.QUESTION_TYPES}
    for scene, question, answer, _t, features in reqs:
        assert _recomputed(scene, question) == answer
        assert features["object_count"] == len(scene.objects) and features["clutter"] == scene.clutter
    exists = [r[2] for r in reqs if r[3] == "exists"]
    assert 0.3 < np.mean([a == "yes" for a in exists]) < 0.7
    # every word is in the tokenizer, every answer one token, within the arch's ids
    tok = qh.HFTokenizer(tv.build_tokenizer(64, 63, "shapes"))
    for _s, question, answer, _t, _f in reqs:
        assert 3 not in tok.encode(question) and len(tok.encode(answer)) == 1
    assert len(tv.vocabulary("shapes")) <= 63


def test_requests_file_is_reproducible_and_bad_types_are_refused(tmp_path, capsys):
    for d in ("a", "b"):
        assert bridge(["shapes-vqa", "--out", str(tmp_path / d), "--requests", "12", "--seed", "3"]) == 0
    a, b = (tmp_path / d / "requests.jsonl" for d in ("a", "b"))
    assert a.read_text() == b.read_text()
    assert (tmp_path / "a/images/7.png").read_bytes() == (tmp_path / "b/images/7.png").read_bytes()
    items = qh.load_dataset(a)
    assert {it.split for it in items} == {"train", "val"} and {it.task_type for it in items} == set(sv.QUESTION_TYPES)
    assert [n for n, _ in items[0].features] == sorted(["object_count", "object_size", "clutter", "edge_density",
                                                         "colour_count", "fg_fraction"])
    capsys.readouterr()
    assert bridge(["shapes-vqa", "--out", str(tmp_path / "c"), "--types", "count,colour"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown question type 'colour'" in err and not (tmp_path / "c").exists()
    assert bridge(["shapes-vqa", "--out", str(tmp_path / "d"), "--requests", "8", "--types", "relation"]) == 0
    assert {it.task_type for it in qh.load_dataset(tmp_path / "d" / "requests.jsonl")} == {"relation"}


def test_tiny_end_to_end_train_profile_validate_run(tmp_path, capsys):
    ck = tmp_path / "ck"
    assert bridge(["train-tiny", "--task-set", "shapes", "--out", str(ck), "--steps", "3", "--batch-size", "4",
                   "--limit", "40", "--vision-steps", "2", "--test-limit", "10", "--summary", str(tmp_path / "s.json"),
                   "--no-progress"]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["train"]["task_set"] == "shapes" and s["test"]["task_set"] == "shapes" and s["test"]["test_questions"] == 10
    assert set(s["test"]["full_accuracy_by_type"]) <= set(sv.QUESTION_TYPES)
    assert bridge(["shapes-vqa", "--out", str(tmp_path / "data"), "--requests", "15", "--seed", "1"]) == 0
    table_path = tmp_path / "t.npz"
    assert bridge(tiny_vqa_profile_args(ck, tmp_path / "data" / "requests.jsonl", table_path)) == 0
    t = load_table(table_path)
    assert t.exact_match is not None and set(np.unique(t.exact_match)) <= {0.0, 1.0}
    assert np.all((t.quality > 0) & (t.quality < 1))  # graded: a probability, no 0/1 ties
    assert {"object_count", "object_size", "clutter"} <= set(t.feature_names) and set(t.task_names) == set(sv.QUESTION_TYPES)
    capsys.readouterr()
    assert e5jax_main(["validate", str(table_path)]) == 0
    out = capsys.readouterr().out
    assert "column exact_match" in out and re.search(r"quality +all: +0 of 15 requests equal under all configs", out)
    res = subprocess.run([str(Path(sys.executable).parent / "e5jax"), "run", "--config", str(QUICK), "--table", str(table_path),
                          "--seeds", "1", "--methods", "lut", "--out", str(tmp_path / "run"), "--no-progress",
                          "--no-figures"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "lut" in json.loads((tmp_path / "run" / "e5_training_curves.json").read_text())["methods"]


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_vision_keeps_the_tower_and_trains_the_rest(tmp_path, freeze):
    from profiling_bridge.archs import build_model

    meta = tv.train(tmp_path / "ck", steps=2, batch_size=4, limit=16, vision_steps=0, task_set="shapes",
                    progress=False, log=lambda *_: None, freeze_vision=freeze)
    assert meta["freeze_vision"] is freeze
    init, trained = build_model(tv.ARCH, seed=0), build_model(tv.ARCH, weights=str(tmp_path / "ck"))
    a = {k: v.half().float() for k, v in init.state_dict().items()}  # checkpoints hold fp16 weights
    b = trained.state_dict()
    tower = [k for k in a if ".vision_tower." in k or k.startswith("vision_tower.")]
    rest = [k for k in a if k not in tower and "embed" not in k]
    assert tower and rest
    assert all(torch.equal(a[k], b[k]) for k in tower) is freeze  # frozen: every tower weight as initialised
    assert not all(torch.equal(a[k], b[k]) for k in rest)  # the projector / language model learned either way


def test_knob_effects_by_size_reads_the_right_columns():
    sys.path.insert(0, str(ROOT / "experiments"))
    import knob_effects_by_size as K

    t = load_table(ROOT / "artifacts/tables/cpu_tiny_llava_olmoe_shapes.npz")
    res = K.by_size(t)
    small = t.features[:, list(t.feature_names).index("object_size")] <= K.SMALL_MAX
    assert res["all"]["small"]["n"] + res["all"]["large"]["n"] == len(t.quality)
    assert res["all"]["small"]["full"] == round(float(t.quality[small, -1].mean()), 4)  # row-major: full config last
    assert res["all"]["large"]["vision_tokens=64"] == res["all"]["large"]["full"]
    assert res["all"]["large"]["active_blocks=6"] == res["all"]["large"]["full"]
    vt4 = np.ravel_multi_index((0, 2, 4), [len(v) for v in t.knobs.values()])
    assert res["color"]["small"]["vision_tokens=4"] == round(float(t.quality[small & (t.task_types == "color"), vt4].mean()), 4)


def test_exists_probe_asks_the_generators_question_in_its_three_attribute_form():
    """experiments/exists_probe.py --attributes 3 poses exactly the generator's exists questions (same draws)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import exists_probe as X

    for seed in range(40):
        scene = sv.random_scene(np.random.default_rng([seed, 0]), 1 + seed % 5, seed % 3)
        if scene is None:
            continue
        assert X.exists_question(np.random.default_rng(seed), scene, 3, sv) == sv.ask(np.random.default_rng(seed), "exists", scene)
        q, a, _ = X.exists_question(np.random.default_rng(seed), scene, 2, sv)
        words = q[len("is there a "):-1].split()
        assert len(words) == 2 and a == ("yes" if sv.matching(scene, colour=words[0], shape=words[1]) else "no")
