"""Quality harness: a JSONL VQA dataset scored per config (metrics and prompt: :mod:`profiling_bridge.vqa`).

Dataset format, one JSON object per line (image paths relative to the JSONL file)::

    {"id": "q0", "image": "img/q0.png", "question": "What colour is the square?",
     "answers": ["red", "red", "dark red"], "task_type": "general_vqa",
     "split": "train", "metric": "vqa"}

``split`` defaults to ``train``, ``metric`` to ``vqa`` (``vqa`` or ``exact_match``). Prompts follow
LLaVA-1.5 (:func:`profiling_bridge.vqa.prompt_ids`); answers are greedy, up to ``max_new_tokens`` or EOS.

With random weights the scores are meaningless (the mechanics are real): every output records
whether the weights were random.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from profiling_bridge.archs import BridgeError
from profiling_bridge.batch_eval import candidate_logprobs, captured_logits, evaluate_batched
from profiling_bridge.knobs import KnobConfig
from profiling_bridge.request_shapes import FEATURE_NAMES, Requests
from profiling_bridge.runner import MLLMRunner
from profiling_bridge.vqa import METRIC_FNS, METRICS, answer_candidates, candidate_scores, exact_match, graded_scores, prompt_ids


# --------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class QAItem:
    id: str
    image: Path
    question: str
    answers: tuple[str, ...]
    task_type: str
    split: str = "train"
    metric: str = "vqa"
    features: tuple[tuple[str, float], ...] = ()  # optional per-item features (name, value), e.g. image statistics


def load_dataset(path: str | Path) -> list[QAItem]:
    p = Path(path)
    if not p.is_file():
        raise BridgeError(f"{p}: no such file")
    items, seen = [], set()
    for lineno, line in enumerate(p.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise BridgeError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
        for key in ("id", "image", "question", "answers", "task_type"):
            if key not in d:
                raise BridgeError(f"{p}:{lineno}: missing key {key!r}")
        answers = d["answers"]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise BridgeError(f"{p}:{lineno}: 'answers' must be a non-empty list of strings")
        metric = d.get("metric", "vqa")
        if metric not in METRICS:
            raise BridgeError(f"{p}:{lineno}: unknown metric {metric!r} (known: {', '.join(METRICS)})")
        image = p.parent / d["image"]
        if not image.is_file():
            raise BridgeError(f"{p}:{lineno}: image {str(image)!r} not found")
        if str(d["id"]) in seen:
            raise BridgeError(f"{p}:{lineno}: id {d['id']!r} appears more than once")
        seen.add(str(d["id"]))
        features = d.get("features", {})
        if not isinstance(features, dict) or not all(isinstance(v, (int, float)) for v in features.values()):
            raise BridgeError(f"{p}:{lineno}: 'features' must be an object of numbers")
        if items and sorted(features) != [n for n, _ in items[0].features]:
            raise BridgeError(f"{p}:{lineno}: features {sorted(features)} differ from the first item's "
                              f"{[n for n, _ in items[0].features]}")
        items.append(QAItem(str(d["id"]), image, d["question"], tuple(answers), d["task_type"],
                            d.get("split", "train"), metric, tuple((n, float(features[n])) for n in sorted(features))))
    if not items:
        raise BridgeError(f"{p}: no items")
    return items


def write_toy_dataset(directory: str | Path, n: int = 8, image_size: int = 56, seed: int = 0) -> Path:
    """A tiny generated VQA dataset (coloured squares), every 4th item in the val split."""
    colours = dict(red=(220, 30, 30), green=(30, 200, 30), blue=(30, 30, 220), yellow=(230, 220, 30))
    rng = np.random.default_rng(seed)
    d = Path(directory)
    (d / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        name = list(colours)[i % len(colours)]
        img = np.full((image_size, image_size, 3), 255, dtype=np.uint8)
        a, b = sorted(rng.integers(0, image_size, size=2))
        img[a:b + 1, a:b + 1] = colours[name]
        Image.fromarray(img).save(d / "images" / f"q{i}.png")
        counting = i % 2 == 1
        lines.append(dict(
            id=f"q{i}", image=f"images/q{i}.png",
            question="How many squares are there?" if counting else "What colour is the square?",
            answers=["1", "one", "1"] if counting else [name] * 3,
            task_type="counting" if counting else "general_vqa",
            split="val" if i % 4 == 3 else "train",
            metric="exact_match" if counting else "vqa",
        ))
    path = d / "data.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


# --------------------------------------------------------------------------- tokenizer / images
class ByteTokenizer:
    """Stand-in tokenizer for random-weight archs (no hub): UTF-8 bytes at ids offset..offset+255."""

    def __init__(self, vocab_size: int, offset: int = 3):
        if offset + 256 > vocab_size:
            raise BridgeError(f"byte tokenizer needs a vocab of at least {offset + 256}, got {vocab_size}")
        self.offset = offset

    def encode(self, text: str) -> list[int]:
        return [self.offset + b for b in text.encode("utf-8")]

    def decode(self, ids) -> str:
        return bytes(i - self.offset for i in ids if self.offset <= i < self.offset + 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A local transformers tokenizer (from a ``--weights`` checkpoint directory)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


def load_tokenizer(model, weights: str | None = None):
    if weights is not None and any((Path(weights) / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        return HFTokenizer(AutoTokenizer.from_pretrained(weights, local_files_only=True))
    return ByteTokenizer(model.config.text_config.vocab_size)


def image_processor(model, weights: str | None = None):
    if weights is not None and (Path(weights) / "preprocessor_config.json").exists():
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(weights, local_files_only=True)
    from transformers import CLIPImageProcessorPil

    s = model.config.vision_config.image_size
    return CLIPImageProcessorPil(size={"shortest_edge": s}, crop_size={"height": s, "width": s})


# --------------------------------------------------------------------------- harness
def requests_from_dataset(items: list[QAItem], tokenizer, model, source: str) -> Requests:
    """Request shapes of a dataset: text prompt tokens, and the first reference's tokens + EOS as output.

    Features: ``prompt_tokens, expected_output_tokens`` and the items' own ``features``, every column kept: a column
    with the same value for every item (e.g. ``expected_output_tokens`` with one-word answers under a word tokenizer)
    is uninformative to a controller (``e5jax validate`` notes it) but ``refresh`` needs the output length.
    """
    tc = model.config.text_config
    prompt = np.array([len(prompt_ids(tokenizer, it.question, 0, model.config.image_token_id, tc.bos_token_id)) for it in items])
    output = np.array([len(tokenizer.encode(it.answers[0])) + 1 for it in items])
    names = FEATURE_NAMES + tuple(n for n, _ in items[0].features)
    columns = np.column_stack([prompt, output, np.array([[v for _, v in it.features] for it in items]).reshape(len(items), -1)])
    return Requests(
        ids=np.array([it.id for it in items]),
        task_types=np.array([it.task_type for it in items]),
        split=np.array([it.split for it in items]),
        feature_names=names,
        features=columns.astype(np.float64),
        prompt_tokens=prompt.astype(np.int64),
        output_tokens=output.astype(np.int64),
        source=source,
    )


def evaluate(
    runner: MLLMRunner,
    items: list[QAItem],
    configs: list[KnobConfig],
    tokenizer,
    processor,
    max_new_tokens: int = 16,
    progress: bool = True,
    batch_size: int = 1,
) -> dict:
    """Score every item under every config. Returns ``[N, C]`` arrays in [0, 1] and the predictions:

    * ``scores``: the item's metric of the greedy answer;
    * ``exact_match``: exact match of the greedy answer (:func:`profiling_bridge.vqa.exact_match`);
    * ``graded``: the expected metric under the model's teacher-forced distribution over the dataset's answer
      vocabulary (``answer_candidates``; :func:`profiling_bridge.vqa.graded_scores`).

    ``batch_size > 1``: the batched harness (:mod:`profiling_bridge.batch_eval`), same prompts and decoding.
    """
    if batch_size > 1:
        return evaluate_batched(runner, items, configs, tokenizer, processor, max_new_tokens, batch_size, progress)
    model = runner.model
    tc = model.config.text_config
    texts, candidates = answer_candidates(items, tokenizer)
    cand_scores = candidate_scores(items, texts)
    scores, graded, exact = (np.zeros((len(items), len(configs))) for _ in range(3))
    predictions = [[""] * len(configs) for _ in items]
    with tqdm(total=len(items) * len(configs), desc="quality", disable=not progress) as bar:
        for i, it in enumerate(items):
            with Image.open(it.image) as im:
                pixels = processor(images=im.convert("RGB"), return_tensors="pt")["pixel_values"]
            pixels = pixels.to(runner.device, runner.dtype)
            for c, cfg in enumerate(configs):
                ids = torch.tensor([prompt_ids(tokenizer, it.question, cfg.vision_tokens, model.config.image_token_id,
                                               tc.bos_token_id)], device=runner.device)
                with captured_logits(model) as logits:
                    gen = runner.generate(cfg, pixels, ids, max_new_tokens, stop_at_eos=True)
                predictions[i][c] = tokenizer.decode(gen.tokens)
                scores[i, c] = METRIC_FNS[it.metric](predictions[i][c], it.answers)
                exact[i, c] = exact_match(predictions[i][c], it.answers)
                feats = runner.encode_image(pixels, cfg.vision_tokens)[None] if any(len(x) > 1 for x in candidates) else None
                logp = candidate_logprobs(runner, cfg, ids, feats, logits[0][:, -1], candidates)
                graded[i, c] = graded_scores(logp, cand_scores[i:i + 1])[0]
                bar.update(1)
    return dict(scores=scores, graded=graded, exact_match=exact, predictions=predictions, answer_candidates=list(texts))
