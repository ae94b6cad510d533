"""GPU kernel time per stage: the bridge's latency without the host's dispatch overhead.

At batch 1, transformers' eager forward of a 16-layer MoE LM issues thousands of small kernels; the host
launches them more slowly than the GPU runs them, so the wall time the bridge measures (CUDA events around the
stage) is dispatch-bound and hides what the knobs change on the GPU. This script profiles (torch.profiler, CUDA
activity) the same stages as the bridge (vision, prefill over prompt tokens, one decode step over KV lengths;
active_blocks x top_k) and reports per stage: the GPU busy time (union of kernel intervals), the sum of kernel
durations, the number of kernels and the wall time of the same call (synchronized). GPU busy time is the floor a
serving engine that removes dispatch overhead (CUDA graphs, fused kernels) could approach.

    python experiments/gpu_kernel_time.py --arch llava-olmoe --device cuda --out artifacts/gpu/kernel_time.json
    python experiments/gpu_kernel_time.py --arch tiny --device cpu --out /tmp/kt.json   # CPU smoke (no kernels)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from profiling_bridge.archs import build_model, describe  # noqa: E402
from profiling_bridge.knobs import KnobConfig, applied, routers  # noqa: E402
from profiling_bridge.runner import MLLMRunner  # noqa: E402
from profiling_bridge.timing import synchronize  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def union_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals (us)."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + ((cur_e - cur_s) if cur_e is not None else 0.0)


def profiled(fn, device: torch.device, reps: int, warmup: int) -> dict:
    """Kernel busy time, kernel sum, kernel count and synchronized wall time of ``fn(i)``, per call (ms)."""
    for i in range(warmup):
        fn(i)
    synchronize(device)
    cuda = device.type == "cuda"
    walls = []
    with profile(activities=[ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as prof:
        for i in range(reps):
            t0 = time.perf_counter()
            fn(i)
            synchronize(device)
            walls.append((time.perf_counter() - t0) * 1e3)
    kernels = [e for e in prof.events() if cuda and e.device_type == torch.autograd.DeviceType.CUDA]
    spans = [(e.time_range.start, e.time_range.end) for e in kernels]
    # cross-check from the aggregated table (device self time of every entry)
    agg = sum(getattr(a, "self_device_time_total", 0.0) for a in prof.key_averages()) if cuda else 0.0
    return dict(busy_ms=union_us(spans) / 1e3 / reps, kernel_sum_ms=sum(e - s for s, e in spans) / 1e3 / reps,
                key_averages_device_ms=agg / 1e3 / reps, kernels=len(spans) / reps, wall_ms=float(np.median(walls)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="llava-olmoe")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vision-tokens", default=None, help="vision_tokens levels (default: smallest and largest of the grid)")
    ap.add_argument("--tokens", default="44,250,796", help="prefill: total prompt tokens (text + image)")
    ap.add_argument("--kv", default="44,568,1334", help="decode: KV lengths")
    ap.add_argument("--blocks", default=None, help="active_blocks levels (default: smallest and largest of the grid)")
    ap.add_argument("--top-k", default=None, help="top_k levels (default: smallest and largest of the grid)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from profiling_bridge.archs import get_arch

    grid = get_arch(args.arch).grid
    pick = lambda text, levels: _ints(text) if text else [min(levels), max(levels)]  # noqa: E731
    v_levels, blocks, top_ks = pick(args.vision_tokens, grid["vision_tokens"]), pick(args.blocks, grid["active_blocks"]), \
        pick(args.top_k, grid["top_k"])
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = build_model(args.arch, device=args.device, dtype=dtype, seed=args.seed)
    runner = MLLMRunner(model, device=args.device, seed=args.seed)
    dev, n_layers = runner.device, len(routers(model))
    pixels = [runner.random_pixels() for _ in range(2)]
    rows = []
    full = KnobConfig(max(v_levels), max(top_ks), n_layers)
    with applied(model, full):
        for v in v_levels:
            rows.append(dict(stage="vision", vision_tokens=v, **profiled(
                lambda i: runner.encode_image(pixels[i % 2], v), dev, args.reps, args.warmup)))
    cap = runner.max_image_tokens
    for total in _ints(args.tokens):
        image = min(cap, total - 1)
        ids = runner.synthetic_prompt(total - image, image)
        feats = torch.randn(image, runner.hidden_size, generator=runner.generator).to(dev, runner.dtype)
        for b in blocks:
            for k in top_ks:
                with applied(model, KnobConfig(image, k, b)):
                    rows.append(dict(stage="prefill", tokens=total, active_blocks=b, top_k=k, **profiled(
                        lambda i: runner.prefill(ids, feats), dev, args.reps, args.warmup)))
    for length in _ints(args.kv):
        image = min(cap, length - 1)
        ids = runner.synthetic_prompt(length - image, image)
        feats = torch.randn(image, runner.hidden_size, generator=runner.generator).to(dev, runner.dtype)
        token = runner.synthetic_prompt(1, 0)[0]
        for b in blocks:
            for k in top_ks:
                with applied(model, KnobConfig(image, k, b)):
                    _, cache = runner.prefill(ids, feats)

                    def step(i, cache=cache):
                        runner.decode_step(token, cache)
                        cache.crop(-1)

                    rows.append(dict(stage="decode_step", kv=length, active_blocks=b, top_k=k,
                                     **profiled(step, dev, args.reps, args.warmup)))
                    del cache
    doc = dict(schema="e5jax/kernel_time/v1", arch=args.arch, device=args.device,
               gpu=torch.cuda.get_device_name() if args.device == "cuda" else None, model_info=describe(model),
               command=" ".join(["python", *sys.argv]), wall_s=time.perf_counter() - t0,
               settings=dict(reps=args.reps, warmup=args.warmup, torch=torch.__version__,
                             note="decode_step includes the cache crop back to the KV length (a few tiny kernels)"),
               rows=rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("." + out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)
    print(f"kernel time ({args.arch}, {args.device}); ms per call")
    print(f"{'stage':12s} {'x':>5s} {'b':>3s} {'k':>3s} {'busy':>8s} {'ksum':>8s} {'kernels':>8s} {'wall':>8s}")
    for r in rows:
        x = r.get("vision_tokens", r.get("tokens", r.get("kv")))
        print(f"{r['stage']:12s} {x:5d} {r.get('active_blocks', 0):3d} {r.get('top_k', 0):3d} {r['busy_ms']:8.3f} "
              f"{r['kernel_sum_ms']:8.3f} {r['kernels']:8.0f} {r['wall_ms']:8.3f}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
