"""One request through the model under one knob config, in three timed stages.

* vision: ``LlavaModel.get_image_features`` (tower + projector), then keep ``vision_tokens`` features;
* prefill: embed the prompt (k image placeholders + text), scatter the kept features into
  ``inputs_embeds`` (``get_placeholder_mask`` checks the counts match), run the LM, greedy first token;
* decode: one LM step per further output token on the KV cache (greedy).

The same code serves latency measurement (fixed output length) and the quality harness (stop at EOS).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
from transformers import LlavaForConditionalGeneration

from profiling_bridge.archs import BridgeError, num_image_tokens
from profiling_bridge.knobs import SELECTION_RULES, KnobConfig, applied, select_image_features
from profiling_bridge.timing import RegionTimer

# transformers 5.2x renamed ``past_key_values`` to ``cache`` (the old name is deprecated until 5.40).
CACHE_KW = "cache" if "cache" in inspect.signature(LlavaForConditionalGeneration.forward).parameters else "past_key_values"


@dataclass
class Generation:
    tokens: list[int]  # generated ids (host), or [] when not fetched
    prompt_len: int  # tokens entering the LM at prefill


class MLLMRunner:
    def __init__(self, model, device: str = "cpu", selection: str = "uniform", seed: int = 0):
        if selection not in SELECTION_RULES:
            raise BridgeError(f"unknown selection rule {selection!r} (known: {', '.join(SELECTION_RULES)})")
        self.model = model
        self.device = torch.device(device)
        self.selection = selection
        self.config = model.config
        self.image_token_id = model.config.image_token_id
        self.max_image_tokens = num_image_tokens(model.config)
        self.hidden_size = model.config.text_config.hidden_size
        self.dtype = next(model.parameters()).dtype
        self.generator = torch.Generator().manual_seed(seed)
        if selection == "attention":
            # Attention maps are only returned by the eager implementation.
            model.set_attn_implementation({"vision_config": "eager"})

    # ------------------------------------------------------------------ inputs
    def random_pixels(self) -> torch.Tensor:
        s = self.config.vision_config.image_size
        return torch.randn(1, 3, s, s, generator=self.generator).to(self.device, self.dtype)

    def synthetic_prompt(self, text_tokens: int, vision_tokens: int) -> torch.Tensor:
        """``[1, text + k]`` ids: one text token, k image placeholders, the remaining text tokens."""
        if text_tokens < 1:
            raise BridgeError(f"prompt needs at least 1 text token, got {text_tokens}")
        high = min(self.config.text_config.vocab_size, self.image_token_id)
        text = torch.randint(3, high, (text_tokens,), generator=self.generator)  # ids 0..2: special in our archs
        image = torch.full((vision_tokens,), self.image_token_id)
        return torch.cat([text[:1], image, text[1:]])[None].to(self.device)

    # ------------------------------------------------------------------ stages
    @torch.inference_mode()
    def encode_image(self, pixel_values: torch.Tensor, vision_tokens: int) -> torch.Tensor:
        """Projected image features ``[k, H]`` kept by the selection rule."""
        if self.selection == "attention":
            out = self.model.model.get_image_features(pixel_values=pixel_values, output_attentions=True)
            scores = self._cls_attention(out.attentions)
        else:
            out = self.model.model.get_image_features(pixel_values=pixel_values)
            scores = None
        return select_image_features(out.pooler_output[0], vision_tokens, self.selection, scores)

    def _cls_attention(self, attentions) -> torch.Tensor:
        """[CLS] -> patch attention (mean over heads) in the layer whose output is the feature layer."""
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int) or self.config.vision_feature_select_strategy != "default":
            raise BridgeError("attention-ranked selection needs one vision feature layer and the 'default' (CLS-dropping) strategy")
        attn = attentions[layer if layer < 0 else layer - 1]  # hidden_states[j] is the output of layer j-1
        return attn[0, :, 0, 1:].float().mean(0)

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, image_features: torch.Tensor):
        """LM over the whole prompt; returns (greedy next token ``[1]``, KV cache)."""
        embeds = self.model.get_input_embeddings()(input_ids)
        feats = image_features.to(embeds.dtype)
        mask = self.model.model.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=feats[None])
        embeds = embeds.masked_scatter(mask, feats)
        out = self.model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1), getattr(out, CACHE_KW)

    @torch.inference_mode()
    def decode_step(self, token: torch.Tensor, cache) -> torch.Tensor:
        out = self.model(input_ids=token[:, None], use_cache=True, logits_to_keep=1, **{CACHE_KW: cache})
        return out.logits[:, -1].argmax(-1)

    # ------------------------------------------------------------------ one request
    def generate(
        self,
        cfg: KnobConfig,
        pixel_values: torch.Tensor,
        prompt_ids: torch.Tensor,
        new_tokens: int,
        timer: RegionTimer | None = None,
        stop_at_eos: bool = False,
    ) -> Generation:
        """Vision + prefill + ``new_tokens - 1`` decode steps under ``cfg`` (model restored afterwards).

        ``prompt_ids`` must hold exactly ``cfg.vision_tokens`` image placeholders. With ``stop_at_eos``
        each step is synchronized to check for EOS (quality harness); otherwise nothing syncs.
        """
        region = timer.region if timer is not None else (lambda name: contextlib.nullcontext())
        eos = self.config.text_config.eos_token_id
        tokens = []
        with applied(self.model, cfg):
            with region("vision"):
                feats = self.encode_image(pixel_values, cfg.vision_tokens)
            with region("prefill"):
                token, cache = self.prefill(prompt_ids, feats)
            tokens.append(token)
            for _ in range(new_tokens - 1):
                if stop_at_eos and int(token) == eos:
                    break
                with region("decode"):
                    token = self.decode_step(token, cache)
                tokens.append(token)
        ids = torch.cat(tokens).tolist() if stop_at_eos else []
        if stop_at_eos and ids and ids[-1] == eos:
            ids = ids[:-1]
        return Generation(tokens=ids, prompt_len=prompt_ids.shape[1])
