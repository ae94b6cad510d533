"""Latency measurements: stage grids (vision, prefill, decode) and end-to-end (request, config) runs.

Every point: ``warmup`` untimed passes, then ``repeats`` timed passes, rotating over a few input
variants (image, prompt ids, decode token) so MoE routing and caches see different inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from profiling_bridge.knobs import KnobConfig, applied
from profiling_bridge.runner import MLLMRunner
from profiling_bridge.timing import RegionTimer, summarize, synchronize, time_repeats


@dataclass(frozen=True)
class MeasureSettings:
    warmup: int = 5
    repeats: int = 30
    e2e_repeats: int = 5
    variants: int = 4  # rotated inputs per point

    def to_dict(self) -> dict:
        return dict(warmup=self.warmup, repeats=self.repeats, e2e_repeats=self.e2e_repeats, input_variants=self.variants)


def token_grid(lo: int, hi: int, points: int) -> np.ndarray:
    """About ``points`` integers from lo to hi, geometrically spaced (both ends included)."""
    lo, hi = max(int(lo), 1), max(int(hi), int(lo), 1)
    return np.unique(np.rint(np.geomspace(lo, hi, max(points, 2))).astype(np.int64))


def _prompt_split(runner: MLLMRunner, total: int) -> tuple[int, int]:
    """(text, image) tokens summing to ``total``: as many image tokens as fit, at least one text token."""
    image = min(runner.max_image_tokens, total - 1)
    return total - image, image


def _random_features(runner: MLLMRunner, k: int) -> torch.Tensor:
    return torch.randn(k, runner.hidden_size, generator=runner.generator).to(runner.device, runner.dtype)


def measure_vision(runner: MLLMRunner, levels, s: MeasureSettings, bar=None) -> dict[int, dict]:
    """Vision stage (tower + projector + selection) per vision_tokens level."""
    pixels = [runner.random_pixels() for _ in range(s.variants)]
    out = {}
    for k in levels:
        ms = time_repeats(lambda i: runner.encode_image(pixels[i % len(pixels)], k), runner.device, s.warmup, s.repeats)
        out[int(k)] = summarize(ms)
        _tick(bar)
    return out


def measure_prefill(runner: MLLMRunner, tokens, blocks, top_ks, s: MeasureSettings, bar=None) -> dict[str, np.ndarray]:
    """Prefill p50/p95 [T, B, K] over total prompt tokens x active_blocks x top_k."""
    p50 = np.zeros((len(tokens), len(blocks), len(top_ks)))
    p95 = np.zeros_like(p50)
    for t, total in enumerate(tokens):
        text, image = _prompt_split(runner, int(total))
        ids = [runner.synthetic_prompt(text, image) for _ in range(s.variants)]
        feats = [_random_features(runner, image) for _ in range(s.variants)]
        for b, nb in enumerate(blocks):
            for k, nk in enumerate(top_ks):
                with applied(runner.model, KnobConfig(image, int(nk), int(nb))):
                    ms = time_repeats(lambda i: runner.prefill(ids[i % s.variants], feats[i % s.variants]),
                                      runner.device, s.warmup, s.repeats)
                st = summarize(ms)
                p50[t, b, k], p95[t, b, k] = st["p50"], st["p95"]
                _tick(bar)
    return dict(p50=p50, p95=p95)


def measure_decode(runner: MLLMRunner, kv_lengths, blocks, top_ks, s: MeasureSettings, bar=None) -> dict[str, np.ndarray]:
    """One decode step p50/p95 [L, B, K] with L tokens already in the KV cache.

    The cache is filled once per point by a prefill of L tokens and cropped back to L after each step.
    """
    p50 = np.zeros((len(kv_lengths), len(blocks), len(top_ks)))
    p95 = np.zeros_like(p50)
    for t, length in enumerate(kv_lengths):
        text, image = _prompt_split(runner, int(length))
        ids = runner.synthetic_prompt(text, image)
        feats = _random_features(runner, image)
        tokens = [runner.synthetic_prompt(1, 0)[0] for _ in range(s.variants)]
        for b, nb in enumerate(blocks):
            for k, nk in enumerate(top_ks):
                with applied(runner.model, KnobConfig(image, int(nk), int(nb))):
                    _, cache = runner.prefill(ids, feats)
                    ms = time_repeats(lambda i: runner.decode_step(tokens[i % s.variants], cache), runner.device,
                                      s.warmup, s.repeats, after=lambda i: cache.crop(-1))
                del cache
                st = summarize(ms)
                p50[t, b, k], p95[t, b, k] = st["p50"], st["p95"]
                _tick(bar)
    return dict(p50=p50, p95=p95)


def measure_e2e(runner: MLLMRunner, prompt_tokens: int, output_tokens: int, cfg: KnobConfig, warmup: int, repeats: int) -> dict:
    """Whole request (vision + prefill + output_tokens - 1 decode steps): summaries of total and stages."""
    pixels = [runner.random_pixels() for _ in range(2)]
    prompts = [runner.synthetic_prompt(int(prompt_tokens), cfg.vision_tokens) for _ in range(2)]

    def run(i, timer=None):
        runner.generate(cfg, pixels[i % 2], prompts[i % 2], int(output_tokens), timer=timer)

    for i in range(warmup):
        run(i)
    synchronize(runner.device)
    timer = RegionTimer(runner.device)
    for i in range(repeats):
        with timer.region("total"):
            run(i, timer)
    res = timer.results()
    out = {name: summarize(v) for name, v in res.items() if name != "decode"}
    if "decode" in res:
        out["decode_step"] = summarize(res["decode"])
    return out


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)
