"""Profiling bridge, model side: each knob changes exactly what it should, restore is bit-identical."""

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from profiling_bridge.archs import BridgeError, build_model, describe, num_params  # noqa: E402
from profiling_bridge.knobs import (  # noqa: E402
    KnobConfig,
    applied,
    check_levels,
    grid_configs,
    language_model,
    parse_grid,
    routers,
    select_image_features,
)
from profiling_bridge.latency_model import LatencyModel, ape_summary  # noqa: E402
from profiling_bridge.runner import MLLMRunner, StaticDecoder  # noqa: E402
from profiling_bridge.timing import RegionTimer, time_repeats  # noqa: E402

FULL = KnobConfig(vision_tokens=16, top_k=4, active_blocks=4)


@pytest.fixture(scope="module")
def runner():
    torch.set_num_threads(1)
    return MLLMRunner(build_model("tiny", seed=0))


def _inputs(runner, text=10, k=16):
    return runner.random_pixels(), runner.synthetic_prompt(text, k)


# --------------------------------------------------------------------------- archs
def test_tiny_arch_is_a_few_hundred_thousand_parameters(runner):
    info = describe(runner.model)
    assert 1e5 < info["num_params"] < 1e6
    assert info["image_tokens"] == 16 and info["num_hidden_layers"] == 4 and info["num_experts"] == 8
    assert info["language_model_class"] == "OlmoeModel" and info["experts_implementation"] == "grouped_mm"


def test_real_shape_arch_counts_about_7b_parameters_on_meta_device():
    model = build_model("llava-olmoe", device="meta")
    assert 6.9e9 < num_params(model) < 7.5e9  # OLMoE-1B-7B (6.9B) + CLIP ViT-L/14-336 (0.3B)
    info = describe(model)
    assert info["image_tokens"] == 576 and info["num_hidden_layers"] == 16
    assert info["num_experts"] == 64 and info["num_experts_per_tok"] == 8
    assert all(g.top_k == 8 for g in routers(model))


def test_unknown_arch_and_impossible_levels_are_errors(runner):
    with pytest.raises(BridgeError, match="unknown arch 'nope'"):
        build_model("nope")
    with pytest.raises(BridgeError, match="vision_tokens level 32 exceeds"):
        check_levels(runner.model, parse_grid(["vision_tokens=4,32"], dict(vision_tokens=(4,), top_k=(1,), active_blocks=(1,))))
    with pytest.raises(BridgeError, match="top_k level 9 exceeds"):
        check_levels(runner.model, dict(vision_tokens=(4,), top_k=(1, 9), active_blocks=(1,)))
    with pytest.raises(BridgeError, match="KNOB=L1"):
        parse_grid(["depth=1,2"], {})


def test_grid_configs_are_row_major_with_full_config_last():
    grid = parse_grid(["vision_tokens=8,4", "top_k=1,2", "active_blocks=2,3,4"], {})
    cfgs = grid_configs(grid)
    assert grid["vision_tokens"] == (4, 8) and len(cfgs) == 12
    assert cfgs[0] == KnobConfig(4, 1, 2) and cfgs[1] == KnobConfig(4, 1, 3) and cfgs[-1] == KnobConfig(8, 2, 4)


# --------------------------------------------------------------------------- vision_tokens
@pytest.mark.parametrize("k", [1, 4, 8, 16])
def test_vision_tokens_enter_the_lm_as_kept_features_plus_text(runner, k):
    pixels, prompt = _inputs(runner, text=10, k=k)
    seen = []
    hook = language_model(runner.model).register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["inputs_embeds"]), with_kwargs=True)
    try:
        kept = runner.encode_image(pixels, k)
        runner.generate(KnobConfig(k, 4, 4), pixels, prompt, new_tokens=3)
    finally:
        hook.remove()
    assert kept.shape == (k, runner.hidden_size)
    assert [e.shape[1] for e in seen] == [10 + k, 1, 1]  # prefill: k image + 10 text tokens; then one per decode step
    # the placeholders (positions 1..k) carry exactly the kept features, the text keeps its embeddings
    assert torch.equal(seen[0][0, 1:1 + k], kept)
    text_ids = torch.cat([prompt[0, :1], prompt[0, 1 + k:]])
    text_rows = torch.cat([seen[0][0, :1], seen[0][0, 1 + k:]])
    assert torch.equal(text_rows, runner.model.get_input_embeddings()(text_ids))


def test_uniform_selection_keeps_evenly_spaced_rows_in_order():
    feats = torch.arange(16.0)[:, None].repeat(1, 3)
    assert select_image_features(feats, 4, "uniform")[:, 0].tolist() == [0, 5, 10, 15]
    assert torch.equal(select_image_features(feats, 16, "uniform"), feats)
    with pytest.raises(BridgeError):
        select_image_features(feats, 17, "uniform")


def test_attention_selection_keeps_top_cls_attention_patches():
    r = MLLMRunner(build_model("tiny", seed=0), selection="attention")
    pixels = r.random_pixels()
    with torch.inference_mode():
        out = r.model.model.get_image_features(pixel_values=pixels, output_attentions=True)
    everything = out.pooler_output[0]
    scores = out.attentions[-2][0, :, 0, 1:].float().mean(0)  # CLS row of the feature layer (-2)
    kept = r.encode_image(pixels, 5)
    expected = scores.topk(5).indices.sort().values
    assert torch.equal(kept, everything[expected])


def test_placeholder_count_must_match_kept_features(runner):
    pixels, prompt = _inputs(runner, text=5, k=8)
    with pytest.raises(Exception, match="Image features and image tokens do not match"):
        runner.generate(KnobConfig(4, 4, 4), pixels, prompt, new_tokens=1)


# --------------------------------------------------------------------------- active_blocks
@pytest.mark.parametrize("blocks", [1, 2, 4])
def test_active_blocks_is_the_number_of_decoder_layers_executed(runner, blocks):
    pixels, prompt = _inputs(runner, k=8)
    calls = [0] * 4
    layers = language_model(runner.model).layers
    hooks = [layer.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1)) for i, layer in enumerate(layers)]
    try:
        runner.generate(KnobConfig(8, 2, blocks), pixels, prompt, new_tokens=3)
    finally:
        for h in hooks:
            h.remove()
    assert calls == [3] * blocks + [0] * (4 - blocks)  # prefill + 2 decode steps, first `blocks` layers only


# --------------------------------------------------------------------------- top_k
@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_top_k_is_the_number_of_experts_selected_per_token(runner, k):
    pixels, prompt = _inputs(runner, text=6, k=4)
    selected, dispatched = [], []
    hooks = []
    for layer in language_model(runner.model).layers:
        hooks.append(layer.mlp.gate.register_forward_hook(lambda m, a, out: selected.append(out[2])))
        hooks.append(layer.mlp.experts.register_forward_pre_hook(lambda m, args: dispatched.append(args[1])))
    try:
        runner.generate(KnobConfig(4, k, 4), pixels, prompt, new_tokens=2)
    finally:
        for h in hooks:
            h.remove()
    assert len(selected) == len(dispatched) == 2 * 4  # (prefill + 1 decode) x 4 layers
    assert [s.shape for s in selected[:4]] == [(10, k)] * 4 and [s.shape for s in selected[4:]] == [(1, k)] * 4
    assert all(torch.equal(s, d) for s, d in zip(selected, dispatched))
    assert all(len(set(row.tolist())) == k for s in selected for row in s)  # k distinct experts per token


def test_config_num_experts_per_tok_alone_has_no_effect(runner):
    """REFERENCES.md: after construction only gate.top_k counts; the bridge sets gate.top_k."""
    cfg = runner.model.config.text_config
    before = cfg.num_experts_per_tok
    cfg.num_experts_per_tok = 1
    try:
        assert all(g.top_k == 4 for g in routers(runner.model))
    finally:
        cfg.num_experts_per_tok = before


# --------------------------------------------------------------------------- restore
def _full_logits(runner, pixels, prompt):
    with torch.inference_mode():
        return runner.model(input_ids=prompt, pixel_values=pixels).logits


def test_restore_after_every_config_is_bit_identical(runner):
    pixels, prompt = _inputs(runner, text=7, k=16)
    baseline = _full_logits(runner, pixels, prompt)
    outputs = {}
    for cfg in grid_configs(dict(vision_tokens=(4, 16), top_k=(1, 2, 8), active_blocks=(1, 3, 4))):
        p = runner.synthetic_prompt(7, cfg.vision_tokens)
        runner.generate(cfg, pixels, p, new_tokens=2)
        with applied(runner.model, cfg):
            outputs[(cfg.top_k, cfg.active_blocks)] = _full_logits(runner, pixels, prompt)
        assert torch.equal(_full_logits(runner, pixels, prompt), baseline), cfg.label()
    assert [g.top_k for g in routers(runner.model)] == [4] * 4
    assert language_model(runner.model).config.num_hidden_layers == 4
    # and the knobs did change the computation while applied
    assert not torch.equal(outputs[(2, 4)], baseline) and not torch.equal(outputs[(8, 3)], baseline)


def test_restore_after_an_exception(runner):
    pixels, prompt = _inputs(runner, text=4, k=16)
    baseline = _full_logits(runner, pixels, prompt)
    with pytest.raises(RuntimeError):
        with applied(runner.model, KnobConfig(16, 1, 1)):
            raise RuntimeError("boom")
    assert torch.equal(_full_logits(runner, pixels, prompt), baseline)


# --------------------------------------------------------------------------- timing and latency model
def test_cpu_timer_measures_wall_time():
    ms = time_repeats(lambda i: time.sleep(0.005), "cpu", warmup=1, repeats=3)
    assert ms.shape == (3,) and np.all(ms >= 4.5) and np.all(ms < 500)
    t = RegionTimer("cpu")
    for _ in range(2):
        with t.region("a"):
            time.sleep(0.002)
    assert len(t.results()["a"]) == 2


def test_latency_model_sums_stages_and_interpolates():
    blocks, top_ks = np.array([2, 4]), np.array([1, 2])
    prefill_tokens, decode_kv = np.array([10, 20, 40]), np.array([10, 50])
    # prefill = 0.1 * tokens * blocks * top_k ; decode = 0.01 * kv + blocks
    pre = 0.1 * prefill_tokens[:, None, None] * blocks[None, :, None] * top_ks[None, None, :]
    dec = 0.01 * decode_kv[:, None, None] + blocks[None, :, None] + 0 * top_ks[None, None, :]
    m = LatencyModel({4: 1.0, 8: 2.0}, blocks, top_ks, prefill_tokens, pre, decode_kv, dec)
    cfgs = [KnobConfig(4, 1, 2), KnobConfig(8, 2, 4)]
    got = m.predict(np.array([11, 26]), np.array([1, 5]), cfgs)
    for r, (p, o) in enumerate([(11, 1), (26, 5)]):
        for c, cfg in enumerate(cfgs):
            n = p + cfg.vision_tokens
            want = {4: 1.0, 8: 2.0}[cfg.vision_tokens] + 0.1 * n * cfg.active_blocks * cfg.top_k
            want += sum(0.01 * kv + cfg.active_blocks for kv in range(n, n + o - 1))
            assert got[r, c] == pytest.approx(want)
    # below the grid: clamped at the smallest measurement, above: linear extrapolation
    assert m.prefill(np.array([1, 80]), 2, 1).tolist() == pytest.approx([2.0, 16.0])
    s = ape_summary(np.array([110.0, 90.0, 100.0]), np.array([100.0, 100.0, 100.0]))
    assert s["median_ape_pct"] == pytest.approx(10.0) and s["n"] == 3


def test_decode_steps_extend_the_kv_cache_of_the_active_layers(runner):
    pixels, prompt = _inputs(runner, text=5, k=4)
    with applied(runner.model, KnobConfig(4, 2, 3)):
        token, cache = runner.prefill(prompt, runner.encode_image(pixels, 4))
        assert cache.get_seq_length() == 9 and len(cache.layers) == 3
        runner.decode_step(token, cache)
        runner.decode_step(token, cache)
    assert cache.get_seq_length() == 11


def test_static_kv_cache_decodes_the_same_tokens_as_the_dynamic_one(runner):
    """--decode static (preallocated KV cache written at explicit positions) generates the dynamic cache's tokens
    under several configs, also when one cache serves two requests in turn (set_static_len: one cache per top_k and
    active_blocks) and after crop(-1) rewinds a step; a request beyond the cache and graphs on a CPU are errors."""
    static = MLLMRunner(runner.model, decode="static", seed=3)
    static.set_static_len(40)
    gen = torch.Generator().manual_seed(7)
    for cfg in (KnobConfig(16, 4, 4), KnobConfig(4, 1, 2), KnobConfig(16, 4, 4)):
        for text in (5, 9):
            prompt = torch.cat([torch.tensor([[5]]), torch.full((1, cfg.vision_tokens), runner.image_token_id),
                                torch.randint(3, 40, (1, text - 1), generator=gen)], 1)
            pixels = torch.randn(1, 3, 32, 32, generator=gen) if runner.config.vision_config.image_size == 32 else runner.random_pixels()
            want = runner.generate(cfg, pixels, prompt, 8, stop_at_eos=True).tokens
            got = static.generate(cfg, pixels, prompt, 8, stop_at_eos=True).tokens
            assert got == want and len(want) >= 1, (cfg, text)
    assert sorted(static._static) == [(1, 2, 48), (4, 4, 48)]  # 40 rounded up to 16; one per (top_k, blocks)
    pixels, prompt = _inputs(runner, text=5, k=4)
    with applied(runner.model, KnobConfig(4, 2, 3)):
        feats = runner.encode_image(pixels, 4)
        token, cache = static.prefill(prompt, feats, static.cache_len(9, 3))
        assert isinstance(cache, StaticDecoder) and cache.length == 9 and cache.max_len == 48
        first = static.decode_step(token, cache)
        cache.crop(-1)
        assert cache.length == 9 and int(cache.cache.get_seq_length()) == 9  # the cache's own counter moved back too
        assert torch.equal(static.decode_step(token, cache), first) and int(cache.cache.get_seq_length()) == 10
        dyn_token, dyn = runner.prefill(prompt, feats)
        assert torch.equal(dyn_token, token) and torch.equal(runner.decode_step(dyn_token, dyn), first)
    with pytest.raises(BridgeError, match="does not fit the static cache of 48"):
        static.cache_len(45, 8)
    with pytest.raises(BridgeError, match="needs --device cuda"):
        MLLMRunner(runner.model, decode="graphs")
    with pytest.raises(BridgeError, match="unknown decode regime"):
        MLLMRunner(runner.model, decode="paged")


def test_interleaved_rounds_spread_passes_over_sweeps_of_the_grid():
    """Stage grids are timed in rounds: every point is visited once per round (full warm-up first, one untimed pass
    after), its timed passes split over the rounds, pooled for p50/p95, and the spread of its per-round medians kept."""
    from profiling_bridge.measure import MeasureSettings, interleaved

    visits = []

    def point(j):
        def visit(warmup, repeats):
            visits.append((j, warmup, repeats))
            r = sum(1 for v in visits if v[0] == j) - 1  # this point's round
            return np.full(repeats, 10.0 * (j + 1) + r)  # slower every round: a drifting machine
        return visit

    ticks = []

    class Bar:
        def update(self, n):
            ticks.append(n)

    s = MeasureSettings(warmup=5, repeats=7, rounds=3)
    out = interleaved([point(0), point(1)], s, Bar())
    assert [v[0] for v in visits] == [0, 1, 0, 1, 0, 1]  # whole grid per round, not a point's passes in a block
    assert [(w, n) for j, w, n in visits if j == 0] == [(5, 3), (1, 2), (1, 2)]  # 7 passes over 3 rounds
    assert len(ticks) == 2
    assert out[0]["round_p50"] == [10.0, 11.0, 12.0] and out[0]["round_spread"] == 2.0
    assert out[1]["p50"] == 21.0 and out[1]["round_spread"] == 2.0
    # more rounds than passes: one pass per round; one round: no spread
    assert MeasureSettings(repeats=3, rounds=5).effective_rounds == 3
    visits.clear()
    one = interleaved([point(0)], MeasureSettings(warmup=2, repeats=4, rounds=1))
    assert visits == [(0, 2, 4)] and one[0]["round_spread"] == 0.0
