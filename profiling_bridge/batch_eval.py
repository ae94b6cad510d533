"""Batched quality harness: the same prompts, knobs and greedy decoding as :func:`quality.evaluate`, many items per
forward pass.

The vision tower does not depend on top_k or active_blocks, so each image is encoded once; per config, items whose
prompts have the same length (same question length under a word tokenizer) share one batched prefill and greedy
decode (no padding, no attention mask: every row is a real prompt). Only the ``uniform`` selection rule is batched
(attention ranking needs each item's own attention map): use ``--batch-size 1`` for ``--selection attention``.

Beside the greedy answer's score, the graded quality (:func:`profiling_bridge.vqa.graded_scores`) reads the
prefill's next-token logits: one-token answers cost nothing more, longer candidate answers one teacher-forced
prefill per distinct prefix.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from profiling_bridge.archs import BridgeError
from profiling_bridge.knobs import KnobConfig, applied, select_image_features
from profiling_bridge.runner import MLLMRunner
from profiling_bridge.vqa import METRIC_FNS, answer_candidates, candidate_scores, exact_match, graded_scores, prompt_ids


@torch.inference_mode()
def image_features(runner: MLLMRunner, items, processor, batch_size: int) -> torch.Tensor:
    """Projected features of every item's whole image, ``[N, image_tokens, H]``."""
    out = []
    for s in range(0, len(items), batch_size):
        images = []
        for it in items[s:s + batch_size]:
            with Image.open(it.image) as im:
                images.append(im.convert("RGB"))
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(runner.device, runner.dtype)
        out.append(torch.stack(list(runner.model.model.get_image_features(pixel_values=pixels).pooler_output)))
    return torch.cat(out)


@contextlib.contextmanager
def captured_logits(model):
    """The LM head's outputs of every forward pass inside the block, in order (the first is the prefill's)."""
    out = []
    hook = model.lm_head.register_forward_hook(lambda module, args, logits: out.append(logits))
    try:
        yield out
    finally:
        hook.remove()


@torch.inference_mode()
def candidate_logprobs(runner: MLLMRunner, cfg: KnobConfig, prompt_ids: torch.Tensor, feats: torch.Tensor,
                       first_logits: torch.Tensor, candidates) -> np.ndarray:
    """Teacher-forced log-probability ``[B, A]`` of each candidate's tokens (EOS not included) after the prompts.

    ``first_logits [B, V]``: the prefill's next-token logits (one-token candidates need nothing more); every longer
    candidate's further tokens are scored by a prefill of prompt + its prefix under ``cfg`` (each distinct prefix once).
    """
    next_logp = {(): first_logits.float().log_softmax(-1)}
    out = torch.zeros(prompt_ids.shape[0], len(candidates))
    for a, seq in enumerate(candidates):
        for j, token in enumerate(seq):
            prefix = tuple(seq[:j])
            if prefix not in next_logp:
                ids = torch.cat([prompt_ids, torch.tensor(prefix, device=prompt_ids.device).expand(len(prompt_ids), -1)], 1)
                with applied(runner.model, cfg), captured_logits(runner.model) as logits:
                    runner.prefill(ids, feats.reshape(-1, feats.shape[-1]))
                next_logp[prefix] = logits[0][:, -1].float().log_softmax(-1)
            out[:, a] += next_logp[prefix][:, token].cpu()
    return out.double().numpy()


@torch.inference_mode()
def generate_batch(runner: MLLMRunner, cfg: KnobConfig, prompt_ids: torch.Tensor, feats: torch.Tensor,
                   max_new_tokens: int) -> tuple[list[list[int]], torch.Tensor]:
    """Greedy answers of ``[B, L]`` prompts (each with ``k`` image placeholders) given kept features ``[B, k, H]``,
    and the prefill's next-token logits ``[B, V]``.

    Rows stop at EOS (the EOS itself is dropped); the batch stops when every row has stopped.
    """
    eos = runner.config.text_config.eos_token_id
    steps = []
    with applied(runner.model, cfg):
        with captured_logits(runner.model) as logits:
            token, cache = runner.prefill(prompt_ids, feats.reshape(-1, feats.shape[-1]))
        steps.append(token)
        done = token == eos
        for _ in range(max_new_tokens - 1):
            if bool(done.all()):
                break
            token = runner.decode_step(token, cache)
            steps.append(token)
            done |= token == eos
    answers = []
    for row in torch.stack(steps, 1).tolist():
        answers.append(row[: row.index(eos)] if eos in row else row)
    return answers, logits[0][:, -1]


def evaluate_batched(runner: MLLMRunner, items, configs: list[KnobConfig], tokenizer, processor,
                     max_new_tokens: int = 16, batch_size: int = 256, progress: bool = True) -> dict:
    """Like :func:`profiling_bridge.quality.evaluate` (same return value), batched."""
    if runner.selection != "uniform":
        raise BridgeError("the batched harness supports --selection uniform only (use --batch-size 1)")
    model = runner.model
    tc = model.config.text_config
    feats = image_features(runner, items, processor, batch_size).transpose(0, 1)  # [image_tokens, N, H]
    texts, candidates = answer_candidates(items, tokenizer)
    cand_scores = candidate_scores(items, texts)
    scores, graded, exact = (np.zeros((len(items), len(configs))) for _ in range(3))
    predictions = [[""] * len(configs) for _ in items]
    with tqdm(total=len(items) * len(configs), desc="quality (batched)", disable=not progress) as bar:
        for c, cfg in enumerate(configs):
            kept = select_image_features(feats, cfg.vision_tokens, "uniform").transpose(0, 1)  # [N, k, H]
            groups = defaultdict(list)  # prompt length -> (item index, ids)
            for i, it in enumerate(items):
                ids = prompt_ids(tokenizer, it.question, cfg.vision_tokens, model.config.image_token_id, tc.bos_token_id)
                groups[len(ids)].append((i, ids))
            for members in groups.values():
                for s in range(0, len(members), batch_size):
                    chunk = members[s:s + batch_size]
                    rows = [i for i, _ in chunk]
                    ids = torch.tensor([x for _, x in chunk], device=runner.device)
                    answers, first = generate_batch(runner, cfg, ids, kept[rows], max_new_tokens)
                    logp = candidate_logprobs(runner, cfg, ids, kept[rows], first, candidates)
                    graded[rows, c] = graded_scores(logp, cand_scores[rows])
                    for i, ans in zip(rows, answers):
                        predictions[i][c] = tokenizer.decode(ans)
                        scores[i, c] = METRIC_FNS[items[i].metric](predictions[i][c], items[i].answers)
                        exact[i, c] = exact_match(predictions[i][c], items[i].answers)
                    bar.update(len(chunk))
    return dict(scores=scores, graded=graded, exact_match=exact, predictions=predictions, answer_candidates=list(texts))
