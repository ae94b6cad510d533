"""easy-vqa and a tiny LLaVA + OLMoE trained on it, for a fully measured CPU table (docs/measured_table.md).

* :func:`load_easy_vqa`: the `easy-vqa` PyPI package (MIT; 4,000 / 1,000 images of 64x64, 38,575 / 9,673
  questions, 13 answers) as :class:`profiling_bridge.quality.QAItem` s with a question type and cheap image
  statistics a front end could compute (edge density, colour count, foreground fraction).
* :func:`write_requests`: a sample of test questions as the bridge's JSONL quality dataset (split train/val by
  image), the input of ``e5jax-bridge profile --quality-harness``.
* :func:`build_tokenizer`: a word-level tokenizer over the dataset's words (every answer is one token).
* :func:`train`: the ``tiny-llava-olmoe`` arch trained (on easy-vqa, or on generated shapes-vqa questions:
  ``task_set="shapes"``, :mod:`profiling_bridge.shapes_vqa`) so that the three knobs degrade gracefully:
  random vision-token dropping (k from the knob grid, uniform-stride or random subsets), a LayerSkip-style
  early-exit loss through the shared final norm + LM head at every block (weights growing with depth), and
  a per-layer random router top-k (Matryoshka-MoE style). The checkpoint directory (weights in fp16, config,
  tokenizer, train meta) is written atomically; ``--weights DIR`` loads it everywhere in the bridge.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from e5jax.io import atomic_write
from profiling_bridge.archs import BridgeError, build_model, get_arch
from profiling_bridge.batch_eval import evaluate_batched
from profiling_bridge.knobs import KnobConfig, language_model, routers, select_image_features
from profiling_bridge.quality import HFTokenizer, QAItem, image_processor, load_tokenizer
from profiling_bridge import shapes_vqa
from profiling_bridge.vqa import PROMPT, prompt_ids

ARCH = "tiny-llava-olmoe"
TASK_SETS = ("easy-vqa", "shapes")  # what train-tiny trains on: easy-vqa, or shapes-vqa (profiling_bridge/shapes_vqa.py)
SHAPES_TRAIN_SIZE = 12000  # generated shapes-vqa train questions (seed [seed, 1]); its test set: seed [0, 2]
SHAPES_TEST_SIZE = 2000
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0..3, matching the arch's pad / eos / bos ids
TASK_TYPES = ("color", "shape", "yes_no")


def _easy_vqa():
    try:
        import easy_vqa
    except ImportError:
        raise BridgeError("the easy-vqa package is not installed (pip install -e '.[bridge]')") from None
    return easy_vqa


def question_type(question: str) -> str:
    """``color`` (what colour ...), ``shape`` (what shape / what is the <colour> shape) or ``yes_no``."""
    q = question.lower()
    if not q.startswith("what"):
        return "yes_no"
    return "color" if "color" in q else "shape"


def image_stats(path) -> dict[str, float]:
    """Cheap statistics of a 64x64 RGB image: edge density, distinct colours, foreground fraction."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.int16)
    gray = a.mean(-1)
    grad = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    background = a[0, 0]
    return dict(edge_density=float((grad > 30).mean()),
                colour_count=float(len(np.unique(a.reshape(-1, 3), axis=0))),
                fg_fraction=float((np.abs(a - background).max(-1) > 40).mean()))


def load_easy_vqa(split: str, limit: int | None = None, stats: bool = False) -> list[QAItem]:
    """easy-vqa questions of ``split`` ("train" or "test") in file order; ``stats`` adds image statistics
    (:func:`image_stats`) as the items' features."""
    ev = _easy_vqa()
    if split == "train":
        (questions, answers, image_ids), paths = ev.get_train_questions(), ev.get_train_image_paths()
    elif split == "test":
        (questions, answers, image_ids), paths = ev.get_test_questions(), ev.get_test_image_paths()
    else:
        raise BridgeError(f"easy-vqa split {split!r}: use train or test")
    n = len(questions) if limit is None else min(limit, len(questions))
    cache: dict[int, tuple] = {}
    items = []
    for i in range(n):
        img = int(image_ids[i])
        if stats and img not in cache:
            cache[img] = tuple(sorted(image_stats(paths[img]).items()))
        items.append(QAItem(id=f"easyvqa-{split}-{i}", image=Path(paths[img]), question=questions[i],
                            answers=(answers[i],), task_type=question_type(questions[i]), split=split,
                            metric="exact_match", features=cache.get(img, ())))
    return items


def image_id(item: QAItem) -> int:
    return int(item.image.stem)


def write_requests(out: str | Path, requests: int = 1500, seed: int = 0, val_fraction: float = 0.25) -> Path:
    """A seeded sample of ``requests`` easy-vqa test questions as a JSONL quality dataset (``out`` directory).

    The lab's split is by image: a random ``val_fraction`` of the test images are ``val``, the rest ``train``,
    so a controller is evaluated on images it never profiled. Image paths point into the installed package.
    """
    items = load_easy_vqa("test")
    if not 1 <= requests <= len(items):
        raise BridgeError(f"--requests must be in 1..{len(items)}")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(items), size=requests, replace=False))
    images = sorted({image_id(items[i]) for i in chosen})
    val = set(rng.choice(images, size=max(1, round(val_fraction * len(images))), replace=False).tolist())
    stats = {img: image_stats(items[i].image) for i in chosen for img in [image_id(items[i])]}
    lines = []
    for i in chosen:
        it = items[i]
        lines.append(dict(id=it.id, image=str(it.image.resolve()), question=it.question, answers=list(it.answers),
                          task_type=it.task_type, split="val" if image_id(it) in val else "train",
                          metric=it.metric, features=stats[image_id(it)]))
    path = Path(out) / "requests.jsonl"
    text = "".join(json.dumps(x) + "\n" for x in lines)
    atomic_write(path, lambda f: f.write(text))
    return path


# --------------------------------------------------------------------------- tokenizer
def _words(texts) -> set[str]:
    return set(re.findall(r"\w+|[^\w\s]+", " ".join(texts).lower().replace("{question}", "")))


def check_task_set(task_set: str) -> str:
    if task_set not in TASK_SETS:
        raise BridgeError(f"unknown task set {task_set!r} (known: {', '.join(TASK_SETS)})")
    return task_set


def vocabulary(task_set: str = "easy-vqa") -> list[str]:
    """Specials, then every word of the prompt template and of the task set's questions and answers (sorted)."""
    if check_task_set(task_set) == "shapes":
        return list(SPECIALS) + sorted(_words(PROMPT) | shapes_vqa.vocabulary_words())
    ev = _easy_vqa()
    return list(SPECIALS) + sorted(_words([*PROMPT, *ev.get_train_questions()[0], *ev.get_test_questions()[0], *ev.get_answers()]))


def build_tokenizer(vocab_size: int, image_token_id: int, task_set: str = "easy-vqa"):
    """A transformers fast tokenizer (word level, lower-cased) whose ids stay below ``image_token_id``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = vocabulary(task_set)
    if len(words) > min(vocab_size, image_token_id):
        raise BridgeError(f"{task_set} needs {len(words)} token ids, the arch has {min(vocab_size, image_token_id)}")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>")


# --------------------------------------------------------------------------- training
def _pixels(items: list[QAItem], processor) -> tuple[torch.Tensor, np.ndarray]:
    """Preprocessed pixels of the distinct images ``[I, 3, S, S]`` and each item's row in it."""
    paths = sorted({it.image for it in items})
    row = {p: i for i, p in enumerate(paths)}
    chunks = []
    for s in range(0, len(paths), 500):
        images = []
        for p in paths[s:s + 500]:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        chunks.append(processor(images=images, return_tensors="pt")["pixel_values"])
    return torch.cat(chunks), np.array([row[it.image] for it in items])


SHAPES = ("circle", "rectangle", "triangle")


def image_labels(items: list[QAItem], n_images: int, img_row: np.ndarray, colours: list[str]) -> torch.Tensor:
    """Per image ``[I, 2]`` (shape index, colour index), -100 where no question of ``items`` tells it.

    Read from the questions and answers themselves: a shape question's answer is the shape, a colour question's
    the colour ("what color is the circle?" also names the shape), a yes/no question about a shape or colour
    answered "yes" names it.
    """
    lab = torch.full((n_images, 2), -100, dtype=torch.long)
    for it, r in zip(items, img_row):
        q, a = it.question.lower(), it.answers[0]
        words = set(re.findall(r"\w+", q))
        if it.task_type == "shape":
            lab[r, 0] = SHAPES.index(a)
        elif it.task_type == "color":
            lab[r, 1] = colours.index(a)
            named = words & set(SHAPES)
            if named:
                lab[r, 0] = SHAPES.index(named.pop())
        elif a == "yes" and "not" not in words and "no" not in words:
            if words & set(SHAPES):
                lab[r, 0] = SHAPES.index((words & set(SHAPES)).pop())
            if words & set(colours):
                lab[r, 1] = colours.index((words & set(colours)).pop())
    return lab


def shape_colour_loss(logits: torch.Tensor, y: torch.Tensor):
    """easy-vqa's tower targets: cross-entropy of the shape and of the colour (:func:`image_labels`), each over the
    images whose label some question gives (0 where neither is known)."""
    return sum(F.cross_entropy(part, t) for part, t in ((logits[:, :len(SHAPES)], y[:, 0]), (logits[:, len(SHAPES):], y[:, 1]))
               if bool((t >= 0).any()))  # ignore_index=-100: images whose label no question gives


PATCH_HEADS = (len(shapes_vqa.SHAPES) + 1, len(shapes_vqa.COLOURS) + 1, len(shapes_vqa.SIZES) + 1)  # + "none"


def patch_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """shapes-vqa's tower targets, per patch (:func:`shapes_vqa.patch_targets`): cross-entropy of the shape, colour
    and size of the object the patch shows (class 0: none) and binary cross-entropy of "holds an object's centre";
    ``logits [B, N, sum(PATCH_HEADS) + 1]``, ``y [B, N, 4]``."""
    parts = torch.split(logits, [*PATCH_HEADS, 1], dim=-1)
    ce = sum(F.cross_entropy(part.reshape(-1, part.shape[-1]), y[..., i].reshape(-1)) for i, part in enumerate(parts[:-1]))
    return ce + F.binary_cross_entropy_with_logits(parts[-1][..., 0], y[..., 3].float())


def pretrain_vision(model, pixels: torch.Tensor, labels: torch.Tensor, out_dim: int, loss_fn, steps: int,
                    batch_size: int, lr: float, rng: np.random.Generator, per_patch: bool = False) -> list[float]:
    """Stage 1, a stand-in for a pre-trained vision tower: the tower alone learns each image's ``labels`` through a
    linear head of ``out_dim`` outputs on the patch features LLaVA feeds the projector: on their mean
    (:func:`shape_colour_loss`, images flipped horizontally with p=0.5), or on each patch (``per_patch``,
    :func:`patch_loss`, no flip: the labels are placed); the head is dropped."""
    tower = model.model.vision_tower
    hidden = model.config.vision_config.hidden_size
    heads = torch.nn.Linear(hidden, out_dim)
    params = [*tower.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    layer = model.config.vision_feature_layer
    losses = []
    for _ in range(steps):
        idx = rng.choice(len(pixels), size=min(batch_size, len(pixels)), replace=False)
        px = pixels[idx]
        if not per_patch:
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            px = torch.where(flip[:, None, None, None], px.flip(-1), px)
        h = tower(pixel_values=px, output_hidden_states=True).hidden_states[layer][:, 1:]
        logits = heads(h if per_patch else h.mean(1))
        loss = loss_fn(logits, labels[idx])
        if not torch.is_tensor(loss):
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


def exit_weights(layers: int) -> torch.Tensor:
    """LayerSkip-style early-exit loss weights: growing linearly with depth, summing to 1."""
    w = torch.arange(1, layers + 1, dtype=torch.float32)
    return w / w.sum()


def train_step_loss(model, batch_ids: torch.Tensor, targets: torch.Tensor, target_pos: torch.Tensor,
                    feats: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Early-exit loss: cross-entropy of every block's output (final norm + LM head) at the target positions.

    ``batch_ids [B, L]`` right-padded prompts + answer (causal attention: padding never reaches a real token),
    ``feats [B, k, H]`` the kept image features, ``targets`` / ``target_pos [B, T]``.
    """
    lm = language_model(model)
    embeds = model.get_input_embeddings()(batch_ids)
    mask = (batch_ids == model.config.image_token_id)[..., None].expand_as(embeds)
    embeds = embeds.masked_scatter(mask, feats.reshape(-1, feats.shape[-1]).to(embeds.dtype))
    outputs = []
    hooks = [layer.register_forward_hook(lambda m, a, out: outputs.append(out[0] if isinstance(out, tuple) else out))
             for layer in lm.layers]
    try:
        lm(inputs_embeds=embeds, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    rows = torch.arange(batch_ids.shape[0])[:, None]
    loss = 0.0
    for w, h in zip(weights, outputs):
        logits = model.lm_head(lm.norm(h[rows, target_pos]))
        loss = loss + w * F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return loss


def save_checkpoint(model, tokenizer, out: Path, meta: dict) -> None:
    """Weights (fp16 safetensors), config, tokenizer and ``train_meta.json``, written to a temporary directory
    next to ``out`` and renamed into place (a reader sees the old checkpoint or the new one, never a mix)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix="." + out.name + "."))
    try:
        model.to(torch.float16).save_pretrained(tmp)
        model.to(torch.float32)
        tokenizer.save_pretrained(tmp)
        (tmp / "train_meta.json").write_text(json.dumps(meta, indent=1))
        old = out.with_name("." + out.name + ".old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def train(out: str | Path, steps: int = 2000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
          arch: str = ARCH, limit: int | None = None, progress: bool = True, log=print,
          full_fraction: float = 0.0, vision_steps: int = 0, balance: bool = False, task_set: str = "easy-vqa",
          train_size: int = SHAPES_TRAIN_SIZE, freeze_vision: bool = False) -> dict:
    """Train ``arch`` on easy-vqa's train split, or on ``train_size`` generated shapes-vqa questions (``task_set``
    ``shapes``, seed ``[seed, 1]``; ``limit`` caps either); returns the train meta (also in ``out/train_meta.json``).

    ``full_fraction``: the first ``round(full_fraction * steps)`` steps train the full config only (every image
    token, the grid's largest top-k, loss on the last block's output); the knob-aware recipe follows.
    ``vision_steps``: steps of :func:`pretrain_vision` before that (batch ``batch_size``, lr ``lr``).
    ``balance``: sample the question types equally often (easy-vqa's train split is 74% yes/no, 13% shape).
    ``freeze_vision``: the vision tower keeps its stage-1 weights during the VQA steps (LLaVA's recipe: only the
    projector and the language model learn); otherwise the VQA loss trains it too.
    """
    spec = get_arch(arch)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(arch, seed=seed, experts_implementation="eager").train()  # eager experts: faster backward on CPU
    tokenizer = build_tokenizer(model.config.text_config.vocab_size, model.config.image_token_id, task_set)
    processor = image_processor(model)
    t0, cpu0 = time.perf_counter(), time.process_time()
    with _train_items(task_set, limit, train_size, seed) as (items, targets):
        pixels, img_row = _pixels(items, processor)
    answer_id = {a: tokenizer.convert_tokens_to_ids(a) for a in {it.answers[0] for it in items}}
    tc, img_tok = model.config.text_config, model.config.image_token_id
    wrap = HFTokenizer(tokenizer)
    prompts: dict[tuple[str, int], list[int]] = {}  # (question, k) -> the harness's prompt ids
    v_levels = spec.grid["vision_tokens"]
    n_layers = model.config.text_config.num_hidden_layers
    max_k = max(spec.grid["top_k"])
    weights = exit_weights(n_layers)
    last_only = torch.zeros(n_layers)
    last_only[-1] = 1.0
    full_steps = int(round(full_fraction * steps))
    gates = routers(model)
    if targets is None:  # easy-vqa: each image's shape and colour, read from the questions
        colours = sorted({it.answers[0] for it in items if it.task_type == "color"})
        labels, out_dim, loss_fn = image_labels(items, len(pixels), img_row, colours), len(SHAPES) + len(colours), shape_colour_loss
    else:  # shapes-vqa: the object each patch shows
        labels = torch.zeros((len(pixels), *targets.shape[1:]), dtype=torch.long)
        labels[torch.from_numpy(img_row)] = torch.from_numpy(targets)
        out_dim, loss_fn = sum(PATCH_HEADS) + 1, patch_loss
    per_patch = targets is not None
    vision_losses = (pretrain_vision(model, pixels, labels, out_dim, loss_fn, vision_steps, batch_size, lr, rng, per_patch)
                     if vision_steps else [])
    vision_seconds = time.perf_counter() - t0
    if freeze_vision:  # no gradient reaches the tower: its forward builds no graph
        model.model.vision_tower.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    types = np.array([it.task_type for it in items])
    p_item = None
    if balance:
        counts = Counter(types.tolist())
        p_item = np.array([1.0 / (len(counts) * counts[t]) for t in types])
        p_item /= p_item.sum()
    losses = []
    with tqdm(total=steps, desc="train-tiny", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        for step in range(steps):
            idx = rng.choice(len(items), size=batch_size, replace=False, p=p_item)
            knobs = step >= full_steps  # the full-config phase first, then the knob-aware recipe
            k = int(rng.choice(v_levels)) if knobs else max(v_levels)  # vision-token dropping: a level per batch
            for g in gates:  # per-layer random top-k (1..max level of the grid)
                g.top_k = int(rng.integers(1, max_k + 1)) if knobs else max_k
            seqs, tpos, tgt = [], [], []
            for i in idx:
                key = (items[i].question, k)
                if key not in prompts:
                    prompts[key] = prompt_ids(wrap, items[i].question, k, img_tok, tc.bos_token_id)
                ids, a = prompts[key], answer_id[items[i].answers[0]]
                tpos.append([len(ids) - 1, len(ids)])
                tgt.append([a, tc.eos_token_id])
                seqs.append(ids + [a, tc.eos_token_id])
            width = max(map(len, seqs))
            batch_ids = torch.tensor([s + [tc.pad_token_id] * (width - len(s)) for s in seqs])
            px = pixels[img_row[idx]]
            if not per_patch:  # easy-vqa: a label-preserving augmentation (not for shapes-vqa: left of / right of)
                flip = torch.from_numpy(rng.random(batch_size) < 0.5)
                px = torch.where(flip[:, None, None, None], px.flip(-1), px)
            feats = torch.stack(list(model.model.get_image_features(pixel_values=px).pooler_output))  # [B, N, H]
            if not knobs or rng.random() < 0.5:  # the inference rule: uniform stride
                feats = select_image_features(feats.transpose(0, 1), k, "uniform").transpose(0, 1)
            else:  # a random subset, in order
                keep = torch.from_numpy(np.sort(rng.choice(feats.shape[1], size=k, replace=False)))
                feats = feats[:, keep]
            loss = train_step_loss(model, batch_ids, torch.tensor(tgt), torch.tensor(tpos), feats,
                                   weights if knobs else last_only)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % 50 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    for g in gates:
        g.top_k = model.config.text_config.num_experts_per_tok
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    meta = dict(arch=arch, task_set=task_set, seed=seed, steps=steps, batch_size=batch_size, lr=lr, full_fraction=full_fraction,
                full_config_steps=full_steps, vision_steps=vision_steps, freeze_vision=freeze_vision, balance=balance, vision_seconds=round(vision_seconds, 1),
                vision_final_loss=round(float(np.mean(vision_losses[-50:])), 4) if vision_losses else None,
                train_questions=len(items), question_types=dict(sorted(Counter(types.tolist()).items())),
                train_seconds=round(seconds, 1), train_cpu_seconds=round(cpu_seconds, 1), torch_threads=torch.get_num_threads(),
                final_loss=round(float(np.mean(losses[-50:])), 4), loss_every_100=[round(x, 4) for x in losses[::100]],
                recipe=dict(vision_tokens=f"per batch a level of {list(v_levels)}; half uniform stride, half random subset",
                            top_k=f"per layer and step uniform in 1..{max_k}", early_exit_weights=weights.tolist(),
                            augmentation="none" if per_patch else "horizontal flip p=0.5",
                            vision_targets="per patch: shape, colour, size, centre" if per_patch else "shape and colour per image", optimizer="AdamW wd 0.01, warmup 5%, cosine to 10%, clip 1.0"))
    save_checkpoint(model.eval(), tokenizer, Path(out), meta)
    log(f"trained {arch} for {steps} steps x {batch_size} in {seconds:.0f} s (loss {meta['final_loss']}); checkpoint: {out}")
    return meta


@contextlib.contextmanager
def _train_items(task_set: str, limit: int | None, train_size: int, seed: int):
    """(train items, per-item scene targets or None); shapes-vqa's images live in a temporary directory."""
    if check_task_set(task_set) == "shapes":
        with shapes_vqa.temporary_items(min(train_size, limit or train_size), [seed, 1]) as out:
            yield out
    else:
        yield load_easy_vqa("train", limit=limit), None


# --------------------------------------------------------------------------- evaluation summary
def majority_baselines(train: list[QAItem], test: list[QAItem]) -> dict[str, float]:
    """Test accuracy of the most frequent train answer, overall and per question string (question-only)."""
    overall = Counter(it.answers[0] for it in train).most_common(1)[0][0]
    by_q: dict[str, Counter] = {}
    for it in train:
        by_q.setdefault(it.question, Counter())[it.answers[0]] += 1
    per_q = {q: c.most_common(1)[0][0] for q, c in by_q.items()}
    return dict(majority_answer=overall,
                majority_accuracy=float(np.mean([it.answers[0] == overall for it in test])),
                question_majority_accuracy=float(np.mean([it.answers[0] == per_q.get(it.question, overall) for it in test])))


def knob_sweep_configs(grid: dict[str, tuple[int, ...]]) -> list[KnobConfig]:
    """The full config, then every level of each knob with the other two at full."""
    full = {k: max(v) for k, v in grid.items()}
    out = [KnobConfig(**full)]
    for name, levels in grid.items():
        out += [KnobConfig(**dict(full, **{name: int(x)})) for x in levels if x != full[name]]
    return out


@contextlib.contextmanager
def _test_items(task_set: str, limit: int | None):
    """(test items, train items for the majority baselines: for shapes-vqa the train set of seed 0, its first
    10 x ``limit`` questions where ``limit`` is given); shapes-vqa's test images live in a temporary directory."""
    if check_task_set(task_set) == "shapes":
        n = SHAPES_TRAIN_SIZE if limit is None else min(SHAPES_TRAIN_SIZE, 10 * limit)
        train = [QAItem(id=str(i), image=Path(), question=q, answers=(a,), task_type=t)
                 for i, (_s, q, a, t, _f) in enumerate(shapes_vqa.generate(n, [0, 1]))]
        with shapes_vqa.temporary_items(min(SHAPES_TEST_SIZE, limit or SHAPES_TEST_SIZE), [0, 2], split="test") as (test, _):
            yield test, train
    else:
        yield load_easy_vqa("test", limit=limit), load_easy_vqa("train")


def test_accuracy(runner, weights: str, batch_size: int = 512, progress: bool = True, limit: int | None = None,
                  task_set: str = "easy-vqa") -> dict:
    """Exact-match accuracy on easy-vqa's test split (or a generated shapes-vqa test set of 2,000 questions, seed
    [0, 2]): full config, each knob level (others full), per question type."""
    spec = get_arch(ARCH)
    configs = knob_sweep_configs(spec.grid)
    with _test_items(task_set, limit) as (test, train):
        res = evaluate_batched(runner, test, configs, load_tokenizer(runner.model, weights),
                               image_processor(runner.model, weights), max_new_tokens=4, batch_size=batch_size,
                               progress=progress)
    acc = res["scores"].mean(0)
    full = res["scores"][:, 0]
    types = np.array([it.task_type for it in test])
    type_names = sorted(set(types.tolist()))
    per_level = {name: {str(x): None for x in levels} for name, levels in spec.grid.items()}
    for cfg, a in zip(configs, acc):
        for name in per_level:
            if getattr(cfg, name) != max(spec.grid[name]) or cfg == configs[0]:
                per_level[name][str(getattr(cfg, name))] = round(float(a), 4)
    return dict(task_set=task_set, test_questions=len(test), full_config=configs[0].label(),
                full_accuracy=round(float(full.mean()), 4),
                full_accuracy_by_type={t: round(float(full[types == t].mean()), 4) for t in type_names},
                accuracy_per_knob_level_others_full=per_level,
                accuracy_by_type_per_config={cfg.label(): {t: round(float(res["scores"][types == t, c].mean()), 4) for t in type_names}
                                             for c, cfg in enumerate(configs)},
                **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in majority_baselines(train, test).items()})
