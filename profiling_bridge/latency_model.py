"""Latency model fitted from stage grids, and its validation against end-to-end measurements.

    latency(request, config) = vision(v) + prefill(P + v, b, k) + sum_{t=0}^{O-2} decode(P + v + t, b, k)

with P text prompt tokens, O output tokens, v = vision_tokens, b = active_blocks, k = top_k. ``prefill``
and ``decode`` are piecewise-linear interpolants (scipy ``make_interp_spline(k=1)``) of the measured
p50 grids at the config's own (b, k): linear extrapolation above the grid, clamped below at the
smallest measurement of that (b, k) (both stages are flat, overhead-bound, at small token counts).
The decode sum over a request's KV lengths is a difference of cumulative sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import make_interp_spline

from profiling_bridge.knobs import KnobConfig


@dataclass
class LatencyModel:
    vision_ms: dict[int, float]  # p50 per vision_tokens level
    blocks: np.ndarray  # active_blocks levels measured
    top_ks: np.ndarray  # top_k levels measured
    prefill_tokens: np.ndarray  # [T]
    prefill_ms: np.ndarray  # [T, B, K] p50
    decode_kv: np.ndarray  # [L]
    decode_ms: np.ndarray  # [L, B, K] p50 per decode step

    def _stage(self, xs: np.ndarray, values: np.ndarray, x, b: int, k: int) -> np.ndarray:
        ys = values[:, _index(self.blocks, b), _index(self.top_ks, k)]
        x = np.asarray(x, dtype=np.float64)
        if len(xs) == 1:  # a single measured length: constant in x
            return np.full(x.shape, ys[0])
        line = make_interp_spline(xs.astype(np.float64), ys, k=1)  # piecewise linear, extrapolates linearly
        return np.maximum(line(x), ys.min())

    def prefill(self, tokens, b: int, k: int) -> np.ndarray:
        return self._stage(self.prefill_tokens, self.prefill_ms, tokens, b, k)

    def decode(self, kv, b: int, k: int) -> np.ndarray:
        return self._stage(self.decode_kv, self.decode_ms, kv, b, k)

    def predict(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray, configs: list[KnobConfig]) -> np.ndarray:
        """[R, C] end-to-end latency in ms."""
        return sum(stages(self, prompt_tokens, output_tokens, configs).values())

    def to_dict(self) -> dict:
        """The fitted grids, JSON-serialisable (goes into the table's meta)."""
        return dict(
            formula="vision(v) + prefill(P+v, b, k) + sum_{t=0}^{O-2} decode(P+v+t, b, k); piecewise-linear in tokens",
            vision_p50_ms={str(k): v for k, v in self.vision_ms.items()},
            axes=dict(active_blocks=self.blocks.tolist(), top_k=self.top_ks.tolist()),
            prefill_tokens=self.prefill_tokens.tolist(),
            prefill_p50_ms=np.round(self.prefill_ms, 4).tolist(),
            decode_kv_lengths=self.decode_kv.tolist(),
            decode_step_p50_ms=np.round(self.decode_ms, 4).tolist(),
        )


def from_dict(d: dict) -> LatencyModel:
    """Inverse of :meth:`LatencyModel.to_dict` (a table's ``meta.latency.model``)."""
    return LatencyModel(
        vision_ms={int(k): float(v) for k, v in d["vision_p50_ms"].items()},
        blocks=np.asarray(d["axes"]["active_blocks"]), top_ks=np.asarray(d["axes"]["top_k"]),
        prefill_tokens=np.asarray(d["prefill_tokens"]), prefill_ms=np.asarray(d["prefill_p50_ms"], float),
        decode_kv=np.asarray(d["decode_kv_lengths"]), decode_ms=np.asarray(d["decode_step_p50_ms"], float),
    )


def stages(model: LatencyModel, prompt_tokens, output_tokens, configs: list[KnobConfig]) -> dict[str, np.ndarray]:
    """[R, C] vision, prefill and decode ms of :meth:`LatencyModel.predict` (their sum is its prediction)."""
    prompt_tokens, output_tokens = np.asarray(prompt_tokens), np.asarray(output_tokens)
    out = {k: np.zeros((len(prompt_tokens), len(configs))) for k in ("vision", "prefill", "decode")}
    for c, cfg in enumerate(configs):
        start = prompt_tokens + cfg.vision_tokens
        stop = start + np.maximum(output_tokens - 1, 0)
        cum = np.concatenate([[0.0], np.cumsum(model.decode(np.arange(int(stop.max()) + 1), cfg.active_blocks, cfg.top_k))])
        out["vision"][:, c] = model.vision_ms[cfg.vision_tokens]
        out["prefill"][:, c] = model.prefill(start, cfg.active_blocks, cfg.top_k)
        out["decode"][:, c] = cum[stop] - cum[start]
    return out


def _index(levels: np.ndarray, value: int) -> int:
    hits = np.flatnonzero(levels == value)
    if len(hits) == 0:
        raise KeyError(f"level {value} not measured (measured: {levels.tolist()})")
    return int(hits[0])


def ape_summary(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Median and p95 absolute percentage error (in %)."""
    ape = 100.0 * np.abs(np.asarray(predicted) - np.asarray(measured)) / np.asarray(measured)
    return dict(n=int(len(ape)), median_ape_pct=float(np.median(ape)), p95_ape_pct=float(np.percentile(ape, 95)))
