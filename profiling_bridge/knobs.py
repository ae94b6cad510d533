"""The three knobs, applied for real through transformers' own modules.

* ``vision_tokens``: keep k of the projected image features (:func:`select_image_features`) and place k
  image placeholders in the prompt; the LM sees k + text tokens.
* ``top_k``: each router's ``gate.top_k`` (the value is copied into the router at construction, so
  ``config.num_experts_per_tok`` has no effect after it).
* ``active_blocks``: the decoder runs ``layers[: config.num_hidden_layers]``; we set the LM config's
  ``num_hidden_layers`` (the KV cache is then built for those layers only).

:func:`applied` sets top_k and active_blocks and restores them afterwards (bit-identical outputs).
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import torch

from profiling_bridge.archs import BridgeError, num_image_tokens

KNOB_NAMES = ("vision_tokens", "top_k", "active_blocks")
SELECTION_RULES = ("uniform", "attention")


@dataclass(frozen=True)
class KnobConfig:
    vision_tokens: int
    top_k: int
    active_blocks: int

    def label(self) -> str:
        return f"(vision_tokens={self.vision_tokens}, top_k={self.top_k}, active_blocks={self.active_blocks})"


def grid_configs(grid: dict[str, tuple[int, ...]]) -> list[KnobConfig]:
    """All configs of a knob grid in the table's row-major order (last knob varies fastest)."""
    check_grid_names(grid)
    return [KnobConfig(**dict(zip(KNOB_NAMES, lv))) for lv in itertools.product(*(grid[k] for k in KNOB_NAMES))]


def check_grid_names(grid) -> None:
    if tuple(grid) != KNOB_NAMES:
        raise BridgeError(f"knobs {list(grid)} not supported: the bridge applies exactly {', '.join(KNOB_NAMES)} (in that order)")


def parse_grid(items: list[str], default: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """``["vision_tokens=4,8,16", "top_k=1,2"]`` over ``default``; levels sorted, unique, positive ints."""
    grid = dict(default)
    for item in items:
        name, sep, levels = item.partition("=")
        if not sep or name not in KNOB_NAMES:
            raise BridgeError(f"--grid {item!r}: expected KNOB=L1,L2,... with KNOB one of {', '.join(KNOB_NAMES)}")
        try:
            values = sorted({int(v) for v in levels.split(",") if v.strip()})
        except ValueError:
            raise BridgeError(f"--grid {item!r}: levels must be integers") from None
        if not values or values[0] < 1:
            raise BridgeError(f"--grid {item!r}: levels must be positive integers")
        grid[name] = tuple(values)
    return {k: grid[k] for k in KNOB_NAMES}


def language_model(model) -> torch.nn.Module:
    return model.model.language_model


def routers(model) -> list[torch.nn.Module]:
    """Each decoder layer's router (``OlmoeTopKRouter``, ``MixtralTopKRouter``, ... all expose ``top_k``)."""
    return [layer.mlp.gate for layer in language_model(model).layers]


def check_levels(model, grid: dict[str, tuple[int, ...]]) -> None:
    """Raise BridgeError if a level cannot be applied to this model."""
    limits = dict(
        vision_tokens=num_image_tokens(model.config),
        top_k=model.config.text_config.num_experts,
        active_blocks=len(language_model(model).layers),
    )
    for name, levels in grid.items():
        if max(levels) > limits[name]:
            raise BridgeError(f"knob {name} level {max(levels)} exceeds the model's {limits[name]} ({name} must be <= {limits[name]})")


@contextlib.contextmanager
def applied(model, cfg: KnobConfig):
    """Set top_k on every router and active_blocks on the LM config; restore both on exit."""
    lm_config = language_model(model).config
    gates = routers(model)
    saved_layers, saved_top_k = lm_config.num_hidden_layers, [g.top_k for g in gates]
    try:
        lm_config.num_hidden_layers = cfg.active_blocks
        for g in gates:
            g.top_k = cfg.top_k
        yield model
    finally:
        lm_config.num_hidden_layers = saved_layers
        for g, k in zip(gates, saved_top_k):
            g.top_k = k


def select_image_features(features: torch.Tensor, k: int, rule: str, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Keep ``k`` of the ``[N, H]`` projected image features, in their original order.

    ``uniform``: evenly spaced indices (a uniform stride over the patch sequence).
    ``attention``: the k patches with the highest ``scores`` (e.g. [CLS] attention), see runner.
    """
    n = features.shape[0]
    if not 1 <= k <= n:
        raise BridgeError(f"vision_tokens={k} outside 1..{n}")
    if rule == "uniform":
        idx = torch.linspace(0, n - 1, k, device=features.device).round().long()
    elif rule == "attention":
        if scores is None:
            raise BridgeError("attention-ranked selection needs attention scores")
        idx = torch.topk(scores, k).indices.sort().values
    else:
        raise BridgeError(f"unknown selection rule {rule!r} (known: {', '.join(SELECTION_RULES)})")
    return features[idx]
