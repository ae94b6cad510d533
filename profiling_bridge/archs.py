"""Model architectures as config dicts kept in the repo, built with random weights (no hub access).

Latency does not depend on weight values, with one exception: MoE routing balance. A random router
(weights ~ N(0, initializer_range)) spreads tokens roughly uniformly over the experts, while a trained
router can be skewed; with ``grouped_mm`` experts the cost follows the number of distinct experts hit and
the largest group, so a skewed router can be somewhat faster or slower. docs/bridge.md has the details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration


class BridgeError(ValueError):
    """Bad input to the bridge (unknown arch, impossible knob level, bad file). One-line message."""


@dataclass(frozen=True)
class ArchSpec:
    name: str
    description: str
    config: dict[str, Any]  # LlavaConfig kwargs; vision_config / text_config are plain dicts
    grid: dict[str, tuple[int, ...]] = field(default_factory=dict)  # default knob grid (row-major order)


# CLIP ViT-L/14-336 as used by LLaVA-1.5 (openai/clip-vit-large-patch14-336): 24 layers, 576 patches.
CLIP_VIT_L_14_336 = dict(
    model_type="clip_vision_model",
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)

# OLMoE-1B-7B-0924 language model: 16 layers, hidden 2048, 64 experts (ffn 1024), top-8.
OLMOE_1B_7B = dict(
    model_type="olmoe",
    vocab_size=50304,
    hidden_size=2048,
    intermediate_size=1024,
    num_hidden_layers=16,
    num_attention_heads=16,
    num_key_value_heads=16,
    num_experts=64,
    num_experts_per_tok=8,
    norm_topk_prob=False,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    pad_token_id=1,
    eos_token_id=50279,
    bos_token_id=None,
    tie_word_embeddings=False,
)

ARCHS: dict[str, ArchSpec] = {
    "llava-olmoe": ArchSpec(
        name="llava-olmoe",
        description="LLaVA-1.5-style MLLM: CLIP ViT-L/14-336 tower (576 image tokens) + 2-layer GELU projector "
        "+ OLMoE-1B-7B-shaped MoE LM (16 layers, 64 experts, top-8); ~7.2B parameters",
        config=dict(
            vision_config=CLIP_VIT_L_14_336,
            text_config=OLMOE_1B_7B,
            image_token_id=50303,  # an unused id inside OLMoE's padded vocab (50280 real tokens)
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            projector_hidden_act="gelu",
        ),
        grid=dict(vision_tokens=(36, 72, 144, 288, 576), top_k=(1, 2, 4, 8), active_blocks=(8, 10, 12, 14, 16)),
    ),
    "tiny": ArchSpec(
        name="tiny",
        description="tiny LLaVA-style MLLM for CPU tests: 2-layer CLIP tower (56px, patch 14: 16 image tokens) "
        "+ 4-layer OLMoE LM (hidden 64, 8 experts, top-4); ~0.37M parameters",
        config=dict(
            vision_config=dict(
                model_type="clip_vision_model",
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=56,
                patch_size=14,
                projection_dim=32,
                hidden_act="quick_gelu",
            ),
            text_config=dict(
                model_type="olmoe",
                vocab_size=512,
                hidden_size=64,
                intermediate_size=32,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=4,
                num_experts=8,
                num_experts_per_tok=4,
                max_position_embeddings=2048,
                pad_token_id=0,
                eos_token_id=1,
                bos_token_id=2,
                tie_word_embeddings=False,
            ),
            image_token_id=511,  # must be < the text vocab size
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            projector_hidden_act="gelu",
        ),
        grid=dict(vision_tokens=(4, 8, 16), top_k=(1, 2, 4), active_blocks=(2, 3, 4)),
    ),
}


# Trained on easy-vqa by `e5jax-bridge train-tiny` (profiling_bridge/tiny_vqa.py, docs/measured_table.md): the
# `tiny` arch's config with these sizes.
_TINY = ARCHS["tiny"].config
ARCHS["tiny-llava-olmoe"] = ArchSpec(
    name="tiny-llava-olmoe",
    description="CPU-sized LLaVA + OLMoE for easy-vqa: 3-layer CLIP ViT (64px, patch 8: 64 image tokens) "
    "+ 6-layer OLMoE LM (hidden 128, 8 experts of width 64, top-2 nominal, normalized top-k weights); ~1.9M parameters",
    config=dict(
        _TINY,
        vision_config=dict(_TINY["vision_config"], hidden_size=96, intermediate_size=192, num_hidden_layers=3,
                           num_attention_heads=4, image_size=64, patch_size=8, projection_dim=96),
        text_config=dict(
            _TINY["text_config"],
            vocab_size=64,  # word-level tokenizer of easy-vqa (tiny_vqa.build_tokenizer)
            hidden_size=128, intermediate_size=64, num_hidden_layers=6, num_experts_per_tok=2,
            norm_topk_prob=True,  # top-k weights sum to 1 at every k, so the top_k knob keeps the output scale
            max_position_embeddings=256,
        ),
        image_token_id=63,
        vision_feature_layer=-1,
    ),
    grid=dict(vision_tokens=(4, 8, 16, 32, 64), top_k=(1, 2, 4), active_blocks=(2, 3, 4, 5, 6)),
)


def get_arch(name: str) -> ArchSpec:
    if name not in ARCHS:
        raise BridgeError(f"unknown arch {name!r} (known: {', '.join(sorted(ARCHS))})")
    return ARCHS[name]


def make_config(spec: ArchSpec) -> LlavaConfig:
    return LlavaConfig(**spec.config)


def build_model(
    arch: str,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    experts_implementation: str | None = None,
    weights: str | None = None,
) -> LlavaForConditionalGeneration:
    """Build ``arch`` in eval mode with random weights (seeded), or load a local checkpoint directory.

    Parameters are created directly on ``device`` (no CPU copy of a 7B model); ``device="meta"`` builds
    the shapes only, e.g. to count parameters.
    """
    spec = get_arch(arch)
    kwargs: dict[str, Any] = dict(dtype=dtype, attn_implementation=attn_implementation)
    if experts_implementation is not None:
        kwargs["experts_implementation"] = experts_implementation
    if weights is not None:
        model = LlavaForConditionalGeneration.from_pretrained(weights, local_files_only=True, **kwargs)
        model = model.to(device)
    else:
        torch.manual_seed(seed)
        with torch.device(device):
            model = LlavaForConditionalGeneration._from_config(make_config(spec), **kwargs)
    if experts_implementation is not None:
        # from_config applies it to every sub-config; only the LM has experts.
        model.set_experts_implementation({"text_config": experts_implementation})
    return model.eval()


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def num_image_tokens(config: LlavaConfig) -> int:
    """Projected image features per image (the most vision_tokens can keep)."""
    vc = config.vision_config
    patches = (vc.image_size // vc.patch_size) ** 2
    return patches if config.vision_feature_select_strategy == "default" else patches + 1


def describe(model: LlavaForConditionalGeneration) -> dict[str, Any]:
    """Provenance of a built model, JSON-serialisable."""
    tc = model.config.text_config
    return dict(
        model_class=type(model).__name__,
        language_model_class=type(model.model.language_model).__name__,
        vision_tower_class=type(model.model.vision_tower).__name__,
        num_params=num_params(model),
        image_tokens=num_image_tokens(model.config),
        num_hidden_layers=len(model.model.language_model.layers),
        num_experts=getattr(tc, "num_experts", None),
        num_experts_per_tok=getattr(tc, "num_experts_per_tok", None),
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
        attn_implementation=dict(
            vision=model.config.vision_config._attn_implementation, text=tc._attn_implementation
        ),
        experts_implementation=tc._experts_implementation,
    )

