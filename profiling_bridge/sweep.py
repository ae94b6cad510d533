"""Latency of every (request, config): from a fitted latency model (default) or end-to-end runs."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from profiling_bridge.knobs import KnobConfig
from profiling_bridge.latency_model import LatencyModel, ape_summary
from profiling_bridge.measure import (
    MeasureSettings,
    measure_decode,
    measure_e2e,
    measure_prefill,
    measure_vision,
    token_grid,
)
from profiling_bridge.request_shapes import Requests
from profiling_bridge.runner import MLLMRunner

METHODS = ("model", "e2e")


@dataclass
class LatencyResult:
    latency_ms: np.ndarray  # [R, C] p50
    latency_std_ms: np.ndarray | None  # [R, C] std of the repeats (e2e method only)
    meta: dict  # method, settings, fitted model, validation


def sweep_latency(
    runner: MLLMRunner,
    requests: Requests,
    configs: list[KnobConfig],
    grid: dict[str, tuple[int, ...]],
    settings: MeasureSettings,
    method: str = "model",
    validate_samples: int = 20,
    prefill_points: int = 6,
    decode_points: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> LatencyResult:
    if runner.decode != "dynamic":  # one static cache length for the whole table: its longest request
        runner.set_static_len(int((requests.prompt_tokens + max(grid["vision_tokens"]) + np.maximum(requests.output_tokens, 2)).max()))
    warm_up(runner, requests, configs[-1], settings.warmup)
    if method == "e2e":
        return _sweep_e2e(runner, requests, configs, settings, progress)
    return _sweep_model(runner, requests, configs, grid, settings, validate_samples, prefill_points, decode_points, seed, progress)


def warm_up(runner: MLLMRunner, requests: Requests, cfg: KnobConfig, passes: int) -> None:
    """A few end-to-end passes of the full config before anything is timed (kernels, allocator)."""
    measure_e2e(runner, int(requests.prompt_tokens.max()), 2, cfg, warmup=passes, repeats=1)


def _bar(total: int, desc: str, progress: bool):
    return tqdm(total=total, desc=desc, disable=not progress, file=sys.stderr, dynamic_ncols=True)


def round_spread_summary(vision: dict, prefill: dict, decode: dict) -> dict:
    """Per stage, the median and max over its points of round_spread / p50 (how far apart the interleaved rounds'
    medians of one point lie, relative to its p50)."""
    def rel(spread, p50):
        r = np.asarray(spread, float).ravel() / np.asarray(p50, float).ravel()
        return dict(median=round(float(np.median(r)), 4), max=round(float(r.max()), 4))
    return dict(vision=rel([v["round_spread"] for v in vision.values()], [v["p50"] for v in vision.values()]),
                prefill=rel(prefill["round_spread"], prefill["p50"]),
                decode_step=rel(decode["round_spread"], decode["p50"]))


def _sweep_model(runner, requests, configs, grid, s, validate_samples, prefill_points, decode_points, seed, progress):
    v_levels, blocks, top_ks = (np.array(grid[k]) for k in ("vision_tokens", "active_blocks", "top_k"))
    first = requests.prompt_tokens + v_levels.min()
    last = requests.prompt_tokens + v_levels.max()
    prefill_tokens = token_grid(first.min(), last.max(), prefill_points)
    decode_kv = token_grid(first.min(), (last + np.maximum(requests.output_tokens - 2, 0)).max(), decode_points)
    n_val = min(validate_samples, len(requests) * len(configs))
    stage_points = len(v_levels) + (len(prefill_tokens) + len(decode_kv)) * len(blocks) * len(top_ks)
    with _bar(stage_points + n_val, "latency sweep", progress) as bar:
        vision = measure_vision(runner, v_levels, s, bar)
        prefill = measure_prefill(runner, prefill_tokens, blocks, top_ks, s, bar)
        decode = measure_decode(runner, decode_kv, blocks, top_ks, s, bar)
        model = LatencyModel(
            vision_ms={k: v["p50"] for k, v in vision.items()},
            blocks=blocks, top_ks=top_ks,
            prefill_tokens=prefill_tokens, prefill_ms=prefill["p50"],
            decode_kv=decode_kv, decode_ms=decode["p50"],
        )
        latency = model.predict(requests.prompt_tokens, requests.output_tokens, configs)
        validation = validate(runner, model, latency, requests, configs, s, n_val, seed, bar)
    meta = dict(
        method="model",
        statistic="p50 of the timed repeats of each stage",
        settings=s.to_dict(),
        model=model.to_dict(),
        stage_p95_ms=dict(
            vision={str(k): v["p95"] for k, v in vision.items()},
            prefill=np.round(prefill["p95"], 4).tolist(),
            decode_step=np.round(decode["p95"], 4).tolist(),
        ),
        stage_round_spread_ms=dict(
            vision={str(k): round(v["round_spread"], 4) for k, v in vision.items()},
            prefill=np.round(prefill["round_spread"], 4).tolist(),
            decode_step=np.round(decode["round_spread"], 4).tolist(),
            note=f"max - min of a point's per-round medians over {s.effective_rounds} interleaved sweeps of the grid",
        ),
        stage_relative_round_spread=round_spread_summary(vision, prefill, decode),
        validation=validation,
    )
    return LatencyResult(latency_ms=latency, latency_std_ms=None, meta=meta)


def validate(runner, model, predicted, requests, configs, s, n, seed, bar=None) -> dict:
    """Measure ``n`` random (request, config) pairs end to end; APE of the model against them."""
    if n <= 0:
        return dict(n=0, note="no end-to-end validation samples requested")
    rng = np.random.default_rng(seed)
    flat = rng.choice(len(requests) * len(configs), size=n, replace=False)
    samples = []
    for f in flat:
        r, c = divmod(int(f), len(configs))
        m = measure_e2e(runner, requests.prompt_tokens[r], requests.output_tokens[r], configs[c], warmup=1, repeats=s.e2e_repeats)
        samples.append(dict(
            request_id=str(requests.ids[r]), config=c, label=configs[c].label(),
            prompt_tokens=int(requests.prompt_tokens[r]), output_tokens=int(requests.output_tokens[r]),
            predicted_ms=round(float(predicted[r, c]), 4), measured_p50_ms=round(m["total"]["p50"], 4),
            measured_p95_ms=round(m["total"]["p95"], 4),
            measured_stage_p50_ms={k: round(v["p50"], 4) for k, v in m.items() if k != "total"},
        ))
        if bar is not None:
            bar.update(1)
    pred = np.array([x["predicted_ms"] for x in samples])
    meas = np.array([x["measured_p50_ms"] for x in samples])
    return dict(**ape_summary(pred, meas), seed=seed, samples=samples)


def _sweep_e2e(runner, requests, configs, s, progress):
    R, C = len(requests), len(configs)
    p50, std = np.zeros((R, C)), np.zeros((R, C))
    with _bar(R * C, "end-to-end sweep", progress) as bar:
        for r in range(R):
            for c, cfg in enumerate(configs):
                m = measure_e2e(runner, requests.prompt_tokens[r], requests.output_tokens[r], cfg, warmup=1, repeats=s.e2e_repeats)
                p50[r, c], std[r, c] = m["total"]["p50"], m["total"]["std"]
                bar.update(1)
    meta = dict(method="e2e", statistic="p50 (latency_ms) and std (latency_std_ms) of end-to-end repeats", settings=s.to_dict())
    return LatencyResult(latency_ms=p50, latency_std_ms=std, meta=meta)
