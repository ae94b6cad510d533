"""One request through the model under one knob config, in three timed stages.

* vision: ``LlavaModel.get_image_features`` (tower + projector), then keep ``vision_tokens`` features;
* prefill: embed the prompt (k image placeholders + text), scatter the kept features into
  ``inputs_embeds`` (``get_placeholder_mask`` checks the counts match), run the LM, greedy first token;
* decode: one LM step per further output token on the KV cache (greedy).

The same code serves latency measurement (fixed output length) and the quality harness (stop at EOS).

Decode regimes (``decode``): ``dynamic`` — transformers' growing ``DynamicCache``, every kernel launched from Python
(eager, host-bound on a GPU); ``static`` — a preallocated ``StaticCache`` (one per top_k, active_blocks and cache
length) written at explicit positions; ``graphs`` — ``static`` with each decode step captured once as a CUDA graph
and replayed (the regime of a serving engine; CUDA only). Prefill and vision run eagerly in every regime; a
prefill without ``max_len`` (the batched quality harness) always uses a dynamic cache.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
from transformers import LlavaForConditionalGeneration

from profiling_bridge.archs import BridgeError, num_image_tokens
from profiling_bridge.knobs import SELECTION_RULES, KnobConfig, applied, language_model, routers, select_image_features
from profiling_bridge.timing import RegionTimer

# transformers 5.2x renamed ``past_key_values`` to ``cache`` (the old name is deprecated until 5.40).
CACHE_KW = "cache" if "cache" in inspect.signature(LlavaForConditionalGeneration.forward).parameters else "past_key_values"


DECODE_REGIMES = ("dynamic", "static", "graphs")


@dataclass
class Generation:
    tokens: list[int]  # generated ids (host), or [] when not fetched
    prompt_len: int  # tokens entering the LM at prefill


class StaticDecoder:
    """A preallocated KV cache of ``max_len`` positions for one (top_k, active_blocks), the number of positions
    filled (``length``, kept on the host: nothing syncs) and, in the ``graphs`` regime, the decode step's CUDA graph
    with its static input and output tensors (captured at the first step, replayed after)."""

    def __init__(self, model, max_len: int, device: torch.device):
        from transformers import StaticCache

        self.cache = StaticCache(config=model.config.text_config, max_cache_len=max_len)
        self.max_len, self.length, self.device = max_len, 0, device
        self.graph = self.token = self.position = self.out = None

    @torch.inference_mode()  # the cache's tensors are inference tensors
    def start(self, prompt_len: int) -> None:
        """Begin a request: forget the previous one (``reset``) and hold ``prompt_len`` positions after the prefill."""
        self.cache.reset()
        self.length = int(prompt_len)

    @torch.inference_mode()
    def crop(self, n: int) -> None:
        """Forget positions as ``DynamicCache.crop`` does (``n < 0``: drop the last ``-n``); their slots are rewritten.
        Transformers >= 5.2x static layers count their filled positions on the device (``cumulative_length``, where
        the next write goes): it moves back with ours; earlier versions write at ``cache_position`` alone."""
        drop = -n if n < 0 else max(self.length - n, 0)
        self.length -= drop
        self._rewind(drop)

    def _rewind(self, n: int) -> None:
        """Move the cache layers' own device-side position counters back by ``n`` (where they have one)."""
        for layer in getattr(self.cache, "layers", ()):
            counter = getattr(layer, "cumulative_length", None)
            if isinstance(counter, torch.Tensor):
                counter.sub_(n)

    def _step(self, model, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=token.view(1, 1), use_cache=True, logits_to_keep=1, cache_position=position,
                    **{CACHE_KW: self.cache})
        return out.logits[:, -1].argmax(-1)

    def step(self, model, token: torch.Tensor, graphs: bool) -> torch.Tensor:
        if self.length >= self.max_len:
            raise BridgeError(f"static KV cache of {self.max_len} positions is full")
        if self.position is None:  # on the device once; then filled in place (no host-to-device copy per step)
            self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        self.position.fill_(self.length)
        if not graphs:
            out = self._step(model, token, self.position)
        else:
            if self.graph is None:
                self._capture(model, token)
            self.token.copy_(token.view(1))
            self.graph.replay()
            out = self.out.clone()
        self.length += 1
        return out

    def _capture(self, model, token: torch.Tensor) -> None:
        """Warm up on a side stream (as CUDA graph capture requires), then capture one step at the current position
        (each warm-up step writes the slot the first replay rewrites with the same values, and the cache's own
        position counter, where it has one, is moved back after each)."""
        self.token = token.detach().clone().view(1)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step(model, self.token, self.position)
                self._rewind(1)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._step(model, self.token, self.position)


class MLLMRunner:
    def __init__(self, model, device: str = "cpu", selection: str = "uniform", seed: int = 0, decode: str = "dynamic"):
        if selection not in SELECTION_RULES:
            raise BridgeError(f"unknown selection rule {selection!r} (known: {', '.join(SELECTION_RULES)})")
        if decode not in DECODE_REGIMES:
            raise BridgeError(f"unknown decode regime {decode!r} (known: {', '.join(DECODE_REGIMES)})")
        if decode == "graphs" and torch.device(device).type != "cuda":
            raise BridgeError("--decode graphs needs --device cuda (CUDA graphs); on this device use --decode static")
        self.decode = decode
        self.static_len: int | None = None  # every static cache's length when set (set_static_len)
        self._static: dict[tuple[int, int, int], StaticDecoder] = {}
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

    def static_decoder(self, max_len: int) -> StaticDecoder:
        """The static cache (and graph) for the knobs applied now and ``max_len`` positions, made once."""
        key = (routers(self.model)[0].top_k, language_model(self.model).config.num_hidden_layers, int(max_len))
        if key not in self._static:
            self._static[key] = StaticDecoder(self.model, int(max_len), self.device)
        return self._static[key]

    def release_static(self) -> None:
        """Free every static cache and CUDA graph (between measurement phases)."""
        self._static.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, image_features: torch.Tensor, max_len: int | None = None):
        """LM over the whole prompt; returns (greedy next token ``[1]``, KV cache). With ``max_len`` and a static
        regime the cache is the ``StaticDecoder`` of ``max_len`` positions (room for ``max_len - L`` decode steps)."""
        embeds = self.model.get_input_embeddings()(input_ids)
        feats = image_features.to(embeds.dtype)
        mask = self.model.model.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=feats[None])
        embeds = embeds.masked_scatter(mask, feats)
        if max_len is None or self.decode == "dynamic":
            out = self.model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1].argmax(-1), getattr(out, CACHE_KW)
        if input_ids.shape[1] >= max_len:
            raise BridgeError(f"prompt of {input_ids.shape[1]} tokens leaves no room in a static cache of {max_len}")
        dec = self.static_decoder(max_len)
        dec.start(input_ids.shape[1])
        out = self.model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1,
                         cache_position=torch.arange(input_ids.shape[1], device=self.device), **{CACHE_KW: dec.cache})
        return out.logits[:, -1].argmax(-1), dec

    @torch.inference_mode()
    def decode_step(self, token: torch.Tensor, cache) -> torch.Tensor:
        if isinstance(cache, StaticDecoder):
            return cache.step(self.model, token, self.decode == "graphs")
        out = self.model(input_ids=token[:, None], use_cache=True, logits_to_keep=1, **{CACHE_KW: cache})
        return out.logits[:, -1].argmax(-1)

    def set_static_len(self, positions: int) -> None:
        """Give every static cache ``positions`` slots (rounded up to 16), as an engine sized for its longest request
        does: one cache and one graph per (top_k, active_blocks), the same for every request."""
        self.static_len = -(-int(positions) // 16) * 16
        self.release_static()

    def cache_len(self, prompt_len: int, new_tokens: int) -> int | None:
        """Static cache length for a request of ``prompt_len`` LM tokens and ``new_tokens`` output tokens:
        ``static_len`` when set, else prompt + output rounded up to 16; None in the dynamic regime."""
        if self.decode == "dynamic":
            return None
        need = int(prompt_len) + max(int(new_tokens), 1)
        if self.static_len is None:
            return -(-need // 16) * 16
        if need > self.static_len:
            raise BridgeError(f"a request of {need} positions does not fit the static cache of {self.static_len}")
        return self.static_len

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
                token, cache = self.prefill(prompt_ids, feats, self.cache_len(prompt_ids.shape[1], new_tokens))
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
