"""Latency measurements: stage grids (vision, prefill, decode) and end-to-end (request, config) runs.

Every stage point: ``warmup`` untimed passes, then ``repeats`` timed passes, rotating over a few input variants
(image, prompt ids, decode token) so MoE routing and caches see different inputs. With ``rounds`` > 1 the timed
passes of a stage grid are spread over that many sweeps of the whole grid (one untimed pass before each later
visit): a slow phase of the machine then lands on every point alike instead of on the few points measured during
it, and the spread of a point's per-round medians says how far its p50 can be trusted.
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
    rounds: int = 1  # sweeps of a stage grid the timed passes are spread over (at most ``repeats``)

    def to_dict(self) -> dict:
        return dict(warmup=self.warmup, repeats=self.repeats, e2e_repeats=self.e2e_repeats, input_variants=self.variants,
                    rounds=self.effective_rounds)

    @property
    def effective_rounds(self) -> int:
        return max(1, min(self.rounds, self.repeats))


def interleaved(points: list, s: MeasureSettings, bar=None) -> list[dict]:
    """Time every point of a stage grid in ``s.rounds`` sweeps over the grid. ``points[j](warmup, repeats)`` times
    one visit (its own knob setting and inputs) and returns ms per timed pass. Per point: ``summarize`` of all its
    passes, plus ``round_p50`` (the median of each round's passes) and ``round_spread`` (their max - min; 0 with one
    round). The progress bar ticks once per point, on its last visit."""
    rounds = s.effective_rounds
    per = [s.repeats // rounds + (r < s.repeats % rounds) for r in range(rounds)]
    samples = [[] for _ in points]
    medians = [[] for _ in points]
    for r in range(rounds):
        for j, point in enumerate(points):
            ms = np.asarray(point(s.warmup if r == 0 else min(s.warmup, 1), per[r]))
            samples[j].append(ms)
            medians[j].append(float(np.median(ms)))
            if r == rounds - 1:
                _tick(bar)
    out = []
    for j in range(len(points)):
        st = summarize(np.concatenate(samples[j]))
        st["round_p50"] = medians[j]
        st["round_spread"] = float(max(medians[j]) - min(medians[j]))
        out.append(st)
    return out


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

    def point(k):
        return lambda warmup, repeats: time_repeats(lambda i: runner.encode_image(pixels[i % len(pixels)], k),
                                                    runner.device, warmup, repeats)

    return dict(zip((int(k) for k in levels), interleaved([point(k) for k in levels], s, bar)))


def _grid(stats: list[dict], shape: tuple) -> dict[str, np.ndarray]:
    """p50 / p95 / round_spread arrays of a stage grid's points (row-major over ``shape``)."""
    return {key: np.array([st[key] for st in stats]).reshape(shape) for key in ("p50", "p95", "round_spread")}


def measure_prefill(runner: MLLMRunner, tokens, blocks, top_ks, s: MeasureSettings, bar=None) -> dict[str, np.ndarray]:
    """Prefill p50/p95 (and round spread) [T, B, K] over total prompt tokens x active_blocks x top_k."""
    points = []
    for total in tokens:
        text, image = _prompt_split(runner, int(total))
        ids = [runner.synthetic_prompt(text, image) for _ in range(s.variants)]
        feats = [_random_features(runner, image) for _ in range(s.variants)]
        for nb in blocks:
            for nk in top_ks:
                def point(warmup, repeats, ids=ids, feats=feats, cfg=KnobConfig(image, int(nk), int(nb))):
                    with applied(runner.model, cfg):
                        return time_repeats(lambda i: runner.prefill(ids[i % s.variants], feats[i % s.variants],
                                                                     runner.cache_len(int(total), 1)),
                                            runner.device, warmup, repeats)
                points.append(point)
    return _grid(interleaved(points, s, bar), (len(tokens), len(blocks), len(top_ks)))


def measure_decode(runner: MLLMRunner, kv_lengths, blocks, top_ks, s: MeasureSettings, bar=None) -> dict[str, np.ndarray]:
    """One decode step p50/p95 (and round spread) [L, B, K] with L tokens already in the KV cache.

    The cache is filled by a prefill of L tokens at each visit of a point and cropped back to L after each step
    (a static regime's cache has the length a request of L prompt tokens and two output tokens gets).
    """
    points = []
    for length in kv_lengths:
        text, image = _prompt_split(runner, int(length))
        ids = runner.synthetic_prompt(text, image)
        feats = _random_features(runner, image)
        tokens = [runner.synthetic_prompt(1, 0)[0] for _ in range(s.variants)]
        for nb in blocks:
            for nk in top_ks:
                def point(warmup, repeats, ids=ids, feats=feats, tokens=tokens, cfg=KnobConfig(image, int(nk), int(nb))):
                    with applied(runner.model, cfg):
                        _, cache = runner.prefill(ids, feats, runner.cache_len(int(length), 2))
                        return time_repeats(lambda i: runner.decode_step(tokens[i % s.variants], cache), runner.device,
                                            warmup, repeats, after=lambda i: cache.crop(-1))
                points.append(point)
    return _grid(interleaved(points, s, bar), (len(kv_lengths), len(blocks), len(top_ks)))


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
