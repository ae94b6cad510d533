"""Batched quality harness: the same prompts, knobs and greedy decoding as :func:`quality.evaluate`, many items per
forward pass.

The vision tower does not depend on top_k or active_blocks, so each image is encoded once; per config, items whose
prompts have the same length (same question length under a word tokenizer) share one batched prefill and greedy
decode (no padding, no attention mask: every row is a real prompt). Only the ``uniform`` selection rule is batched
(attention ranking needs each item's own attention map): use ``--batch-size 1`` for ``--selection attention``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from profiling_bridge.archs import BridgeError
from profiling_bridge.knobs import KnobConfig, applied, select_image_features
from profiling_bridge.runner import MLLMRunner
from profiling_bridge.vqa import METRIC_FNS, prompt_ids


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


@torch.inference_mode()
def generate_batch(runner: MLLMRunner, cfg: KnobConfig, prompt_ids: torch.Tensor, feats: torch.Tensor,
                   max_new_tokens: int) -> list[list[int]]:
    """Greedy answers of ``[B, L]`` prompts (each with ``k`` image placeholders) given kept features ``[B, k, H]``.

    Rows stop at EOS (the EOS itself is dropped); the batch stops when every row has stopped.
    """
    eos = runner.config.text_config.eos_token_id
    steps = []
    with applied(runner.model, cfg):
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
    return answers


def evaluate_batched(runner: MLLMRunner, items, configs: list[KnobConfig], tokenizer, processor,
                     max_new_tokens: int = 16, batch_size: int = 256, progress: bool = True) -> dict:
    """Like :func:`profiling_bridge.quality.evaluate` (same return value), batched."""
    if runner.selection != "uniform":
        raise BridgeError("the batched harness supports --selection uniform only (use --batch-size 1)")
    model = runner.model
    tc = model.config.text_config
    feats = image_features(runner, items, processor, batch_size).transpose(0, 1)  # [image_tokens, N, H]
    scores = np.zeros((len(items), len(configs)))
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
                    for i, ans in zip(rows, generate_batch(runner, cfg, ids, kept[rows], max_new_tokens)):
                        predictions[i][c] = tokenizer.decode(ans)
                        scores[i, c] = METRIC_FNS[items[i].metric](predictions[i][c], items[i].answers)
                    bar.update(len(chunk))
    return dict(scores=scores, predictions=predictions)
