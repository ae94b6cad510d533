"""How much could a trained (skewed) MoE router change the bridge's latency? Measured, not assumed.

The bridge builds models with random weights; a random router spreads tokens nearly uniformly over the experts.
A trained router is skewed. This script adds a fixed per-expert bias to every router's logits (a forward hook
that re-does softmax + top-k on the biased logits, so the same extra work runs in every case, the uniform
baseline included) and times prefill and one decode step of the full and a reduced top_k config under:

* ``uniform``: bias 0 (what the bridge measures);
* ``zipf1`` / ``zipf2``: bias ``-s * log(rank)`` over a random expert order per layer (Zipf-like popularity);
* ``hot``: every token routed to the same top_k experts (the extreme: fewest experts hit, largest groups).

The measured expert load (share of routed assignments taken by the busiest expert, experts hit per layer in
prefill) is recorded, so each skew level is described by what it did, not by its parameter.

    python experiments/gpu_routing_skew.py --arch llava-olmoe --device cuda --out artifacts/gpu/routing_skew.json
    python experiments/gpu_routing_skew.py --arch tiny --threads 1 --out /tmp/skew.json     # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from profiling_bridge.archs import build_model, describe  # noqa: E402
from profiling_bridge.knobs import KnobConfig, applied, routers  # noqa: E402
from profiling_bridge.runner import MLLMRunner  # noqa: E402
from profiling_bridge.timing import summarize, time_repeats  # noqa: E402

SKEWS = ("uniform", "zipf1", "zipf2", "hot")


def skew_bias(kind: str, num_experts: int, top_k: int, rng: np.random.Generator) -> np.ndarray:
    """Per-expert logit bias for one layer."""
    if kind == "uniform":
        return np.zeros(num_experts)
    order = rng.permutation(num_experts)  # order[r] = expert of popularity rank r
    bias = np.zeros(num_experts)
    if kind == "hot":
        bias[order[:top_k]] = 1e4
        return bias
    s = float(kind.removeprefix("zipf"))
    bias[order] = -s * np.log(np.arange(1, num_experts + 1))
    return bias


class SkewedRouting:
    """Forward hooks on every router: add ``bias[layer]`` to the logits, redo softmax and top-k; count loads."""

    def __init__(self, model, biases: list[np.ndarray]):
        self.gates = routers(model)
        self.biases = [torch.tensor(b, dtype=torch.float32, device=g.weight.device) for g, b in zip(self.gates, biases)]
        self.counts: list[torch.Tensor] | None = None
        self.handles = []

    def __enter__(self):
        for gate, bias in zip(self.gates, self.biases):
            self.handles.append(gate.register_forward_hook(self._hook(bias)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def _hook(self, bias):
        def hook(mod, args, out):
            logits = out[0]
            biased = logits.float() + bias
            probs = torch.softmax(biased, dim=-1)
            top_v, top_i = torch.topk(probs, mod.top_k, dim=-1)
            if getattr(mod, "norm_topk_prob", False):
                top_v = top_v / top_v.sum(dim=-1, keepdim=True)
            if self.counts is not None:
                self.counts.append(torch.bincount(top_i.reshape(-1), minlength=len(bias)))
            return biased.to(logits.dtype), top_v.to(logits.dtype), top_i
        return hook

    def load(self, fn) -> dict:
        """Run ``fn`` once and report the routing load it produced (per layer, then averaged)."""
        self.counts = []
        fn()
        counts = np.stack([c.cpu().numpy() for c in self.counts]).astype(np.float64)  # [layers, E]
        self.counts = None
        share = counts / counts.sum(-1, keepdims=True)
        return dict(busiest_expert_share=float(share.max(-1).mean()),
                    experts_hit_per_layer=float((counts > 0).sum(-1).mean()),
                    uniform_share=1.0 / counts.shape[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="llava-olmoe")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--text-tokens", type=int, default=30, help="text tokens of the prompt (default table median)")
    ap.add_argument("--top-k", default=None, help="comma separated top_k levels (default: smallest non-1 and full)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = build_model(args.arch, device=args.device, dtype=dtype, seed=args.seed)
    runner = MLLMRunner(model, device=args.device, seed=args.seed)
    build_s = time.perf_counter() - t0
    tc = model.config.text_config
    E, layers, full_k = tc.num_experts, len(routers(model)), tc.num_experts_per_tok
    top_ks = [int(x) for x in args.top_k.split(",")] if args.top_k else sorted({min(2, full_k), full_k})
    image = runner.max_image_tokens
    ids = [runner.synthetic_prompt(args.text_tokens, image) for _ in range(4)]
    feats = [torch.randn(image, runner.hidden_size, generator=runner.generator).to(runner.device, runner.dtype)
             for _ in range(4)]
    tokens = [runner.synthetic_prompt(1, 0)[0] for _ in range(4)]
    rows = []
    for k in top_ks:
        cfg = KnobConfig(image, k, layers)
        for kind in SKEWS:
            rng = np.random.default_rng(args.seed)
            biases = [skew_bias(kind, E, k, rng) for _ in range(layers)]
            with applied(model, cfg), SkewedRouting(model, biases) as sk:
                load = sk.load(lambda: runner.prefill(ids[0], feats[0]))
                pre = time_repeats(lambda i: runner.prefill(ids[i % 4], feats[i % 4]), runner.device,
                                   args.warmup, args.repeats)
                _, cache = runner.prefill(ids[0], feats[0])
                dec = time_repeats(lambda i: runner.decode_step(tokens[i % 4], cache), runner.device, args.warmup,
                                   args.repeats, after=lambda i: cache.crop(-1))
                del cache
            rows.append(dict(top_k=k, skew=kind, prefill_tokens=int(ids[0].shape[1]), prefill_ms=summarize(pre),
                             decode_step_ms=summarize(dec), prefill_load=load))
    for r in rows:  # effect relative to the uniform router at the same top_k
        base = next(b for b in rows if b["top_k"] == r["top_k"] and b["skew"] == "uniform")
        r["prefill_vs_uniform"] = r["prefill_ms"]["p50"] / base["prefill_ms"]["p50"]
        r["decode_vs_uniform"] = r["decode_step_ms"]["p50"] / base["decode_step_ms"]["p50"]
    doc = dict(schema="e5jax/routing_skew/v1", arch=args.arch, device=args.device,
               gpu=torch.cuda.get_device_name() if args.device == "cuda" else None,
               model_info=describe(model), command=" ".join(["python", *sys.argv]), build_s=build_s,
               wall_s=time.perf_counter() - t0, settings=dict(warmup=args.warmup, repeats=args.repeats,
                                                             text_tokens=args.text_tokens), rows=rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("." + out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)
    print(f"routing skew ({args.arch}, {args.device}): prefill {rows[0]['prefill_tokens']} tokens, full blocks")
    print(f"{'top_k':>5s} {'skew':8s} {'busiest':>8s} {'hit':>5s} {'prefill ms':>10s} {'x unif':>6s} {'decode ms':>9s} {'x unif':>6s}")
    for r in rows:
        print(f"{r['top_k']:5d} {r['skew']:8s} {r['prefill_load']['busiest_expert_share']:8.3f} "
              f"{r['prefill_load']['experts_hit_per_layer']:5.1f} {r['prefill_ms']['p50']:10.3f} "
              f"{r['prefill_vs_uniform']:6.3f} {r['decode_step_ms']['p50']:9.3f} {r['decode_vs_uniform']:6.3f}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
