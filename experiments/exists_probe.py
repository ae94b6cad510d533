"""Can the tiny model learn shapes-vqa's ``exists`` question at all? A fine-tuning probe (docs/shapes_table.md).

Starting from a trained checkpoint (``--weights``, the vision tower frozen), fine-tune on ``exists`` questions only
for ``--steps`` steps of batch 64 (the full config, lr 5e-4, train_tiny's loop), then score exact match on 400
held-out ``exists`` questions (seed ``[0, 2]``). ``--attributes 3`` asks the generator's form
(``profiling_bridge.shapes_vqa``: "is there a small red circle?", half the questions change the size, colour or
shape of an object of the scene); ``2`` a two-attribute variant ("is there a red circle?": colour or shape changed;
"yes" when any object has both). A question type the model cannot learn even alone gives quality that does not
depend on the config: noise in a test bed of knob effects.

    python experiments/exists_probe.py --weights artifacts/shapes/ck --attributes 3 --steps 300 \
        --out artifacts/shapes/exists_probe_3attr.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def exists_question(rng, scene, attributes: int, shapes_vqa):
    """(question, answer, object size) of an ``exists`` question in the ``attributes``-attribute form."""
    names = ("size", "colour", "shape") if attributes == 3 else ("colour", "shape")
    values = dict(size=tuple(shapes_vqa.SIZES), colour=tuple(shapes_vqa.COLOURS), shape=shapes_vqa.SHAPES)
    o = scene.objects[int(rng.integers(len(scene.objects)))]
    attrs = {n: getattr(o, n) for n in names}
    if rng.random() < 0.5:
        name = names[int(rng.integers(len(names)))]
        attrs[name] = [v for v in values[name] if v != attrs[name]][int(rng.integers(len(values[name]) - 1))]
    words = " ".join(attrs[n] for n in names)
    return f"is there a {words}?", "yes" if shapes_vqa.matching(scene, **attrs) else "no", o.r


@contextlib.contextmanager
def exists_only(attributes: int):
    """shapes_vqa generates ``exists`` questions only, in the given form, inside the block."""
    from profiling_bridge import shapes_vqa as S

    ask, items = S.ask, S.temporary_items

    def ask_form(rng, qtype, scene):
        return exists_question(rng, scene, attributes, S) if qtype == "exists" else ask(rng, qtype, scene)

    @contextlib.contextmanager
    def exists_items(n, seed, split="train", types=S.QUESTION_TYPES, stats=False):
        with items(n, seed, split, ("exists",), stats) as out:
            yield out

    S.ask, S.temporary_items = ask_form, exists_items
    try:
        yield S
    finally:
        S.ask, S.temporary_items = ask, items


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="trained tiny checkpoint to start from")
    ap.add_argument("--attributes", type=int, choices=(2, 3), default=2)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--test", type=int, default=400, help="held-out exists questions scored")
    ap.add_argument("--out", default=None, help="JSON result")
    args = ap.parse_args(argv)
    import torch

    from profiling_bridge import tiny_vqa
    from profiling_bridge.archs import build_model, get_arch
    from profiling_bridge.batch_eval import evaluate_batched
    from profiling_bridge.quality import image_processor, load_tokenizer
    from profiling_bridge.runner import MLLMRunner

    torch.set_num_threads(1)
    build = tiny_vqa.build_model
    tiny_vqa.build_model = lambda arch, seed=0, experts_implementation=None: build(
        arch, weights=args.weights, experts_implementation=experts_implementation)
    t0 = time.perf_counter()
    with exists_only(args.attributes) as S, tempfile.TemporaryDirectory() as d:
        try:
            meta = tiny_vqa.train(Path(d) / "ck", steps=args.steps, batch_size=64, lr=5e-4, seed=0, progress=False,
                                  full_fraction=0.0, vision_steps=0, task_set="shapes", train_size=3000,
                                  freeze_vision=True, log=lambda *a: None)
        finally:
            tiny_vqa.build_model = build
        runner = MLLMRunner(build_model(tiny_vqa.ARCH, weights=str(Path(d) / "ck")))
        cfg = tiny_vqa.knob_sweep_configs(get_arch(tiny_vqa.ARCH).grid)[:1]
        with S.temporary_items(args.test, [0, 2], "test") as (items, _):
            res = evaluate_batched(runner, items, cfg, load_tokenizer(runner.model, str(Path(d) / "ck")),
                                   image_processor(runner.model, str(Path(d) / "ck")), max_new_tokens=4,
                                   batch_size=256, progress=False)
    score = res["scores"][:, 0]
    yes = np.array([it.answers[0] == "yes" for it in items])
    out = dict(command=" ".join(["python", *sys.argv]), weights=args.weights, attributes=args.attributes,
               steps=args.steps, example=items[0].question, loss_every_100=meta["loss_every_100"],
               final_loss=meta["final_loss"], test_questions=len(items), test_accuracy=round(float(score.mean()), 4),
               yes_share=round(float(yes.mean()), 4), accuracy_on_yes=round(float(score[yes].mean()), 4),
               accuracy_on_no=round(float(score[~yes].mean()), 4), seconds=round(time.perf_counter() - t0, 1))
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
