"""Hold the synthetic default table's cost model against GPU measurements, and fit it to them.

Three latency models of the same 1,200 requests x 100 configs (output length = the table's
``expected_output_tokens`` for all three, so they differ only in their cost model):

* ``synthetic``: ``e5jax.synth`` with the given parameters (default: the current ``SynthParams``);
* ``measured_wall``: the bridge's table (``e5jax-bridge refresh`` on llava-olmoe, transformers eager, batch 1):
  CUDA-event wall time of each stage, stage grids from its ``meta.latency.model``;
* ``kernel_floor``: GPU busy time of the same stages (experiments/gpu_kernel_time.py): what the GPU must do,
  without the host's dispatch overhead. Measured at active_blocks {8, 16} x top_k {1, 8}; other levels
  interpolated linearly in layers and in experts.

For each: mean full-config latency, mean smallest/full ratio, each knob's effect (its smallest level / its
largest, the others at full), and the stage shares (vision, prefill, decode) at the full config. Then the
synthetic cost parameters are fitted (scipy ``least_squares`` on log latency over every (request, config)) to
``--fit-target`` and the fitted model is reported the same way, with its median / p95 absolute % error.

    python experiments/calibrate_cost_model.py \\
        --measured artifacts/tables/h100_llava_olmoe.npz --kernel artifacts/gpu/kernel_time.json \\
        --out artifacts/tables/h100_cost_model_comparison.json --baseline-params "$(cat PARAMS_BEFORE.json)"

``--baseline-params`` with the cost parameters before the recalibration (docs/default_table.md lists them)
reproduces the committed comparison; without it the "synthetic" row is the current default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from e5jax.io import write_json  # noqa: E402
from e5jax.synth import SynthParams, latency_components  # noqa: E402
from e5jax.table import default_table_path, load_table  # noqa: E402
from profiling_bridge.knobs import grid_configs  # noqa: E402
from profiling_bridge.latency_model import LatencyModel, from_dict, stages  # noqa: E402
from profiling_bridge.request_shapes import from_table  # noqa: E402

# fitted cost parameters (the rest of SynthParams is quality / grid and stays as it is)
FIT = ("overhead_ms", "prefill_floor_ms", "prefill_dense_us", "prefill_expert_us", "decode_head_ms",
       "decode_dense_ms", "decode_expert_ms", "decode_kv_us")


def kernel_model(doc: dict, blocks, top_ks) -> LatencyModel:
    """A LatencyModel from gpu_kernel_time.py rows (GPU busy ms), interpolated to every (blocks, top_k) level."""
    rows = doc["rows"]
    vision = {r["vision_tokens"]: r["busy_ms"] for r in rows if r["stage"] == "vision"}
    v_ms = float(np.mean(list(vision.values())))  # the tower sees the full image at every level

    def grid(stage: str, key: str):
        rs = [r for r in rows if r["stage"] == stage]
        xs = sorted({r[key] for r in rs})
        mb, mk = sorted({r["active_blocks"] for r in rs}), sorted({r["top_k"] for r in rs})
        out = np.zeros((len(xs), len(blocks), len(top_ks)))
        for t, x in enumerate(xs):
            m = np.array([[next(r["busy_ms"] for r in rs if r[key] == x and r["active_blocks"] == b and r["top_k"] == k)
                           for k in mk] for b in mb])  # [len(mb), len(mk)]
            over_k = np.stack([np.interp(top_ks, mk, m[i]) for i in range(len(mb))])  # [mb, K]
            out[t] = np.stack([np.interp(blocks, mb, over_k[:, j]) for j in range(len(top_ks))], -1)
        return np.array(xs), out

    pt, pm = grid("prefill", "tokens")
    dk, dm = grid("decode_step", "kv")
    return LatencyModel(vision_ms={int(v): v_ms for v in doc.get("vision_levels", [])} or {}, blocks=np.asarray(blocks),
                        top_ks=np.asarray(top_ks), prefill_tokens=pt, prefill_ms=pm, decode_kv=dk, decode_ms=dm), v_ms


def summarize(parts: dict[str, np.ndarray], knobs: dict[str, np.ndarray]) -> dict:
    """Knob effects, smallest/full, stage shares of a [R, C] latency split into stages."""
    lat = sum(parts.values())
    sizes = [len(v) for v in knobs.values()]
    cube = lat.reshape(len(lat), *sizes)
    full = cube[:, -1, -1, -1]
    effects = {}
    for i, name in enumerate(knobs):
        idx = [slice(None), -1, -1, -1]
        idx[1 + i] = 0
        effects[name] = float(np.mean(cube[tuple(idx)] / full))
    shares = {k: float(v.reshape(len(lat), *sizes)[:, -1, -1, -1].sum() / full.sum()) for k, v in parts.items()}
    return dict(full_config_mean_ms=float(full.mean()), full_config_median_ms=float(np.median(full)),
                smallest_over_full=float(np.mean(cube[:, 0, 0, 0] / full)),
                knob_effect_smallest_over_full=effects, stage_share_at_full=shares)


def synth_parts(params: SynthParams, prompt, out, knobs) -> dict[str, np.ndarray]:
    vv, kk, nn = (m.reshape(-1) for m in np.meshgrid(*(np.asarray(v, float) for v in knobs.values()), indexing="ij"))
    p = latency_components(prompt, out, vv, kk, nn, params)
    return dict(vision=p["overhead"] + p["vision"], prefill=p["prefill"], decode=p["decode"])


def fit(target: np.ndarray, base: SynthParams, prompt, out, knobs, vision_ms: float) -> tuple[SynthParams, dict]:
    """Least squares on log latency over all (request, config); positive parameters (fitted in log space)."""
    x0 = np.log([max(getattr(base, f), 1e-3) for f in FIT])

    def make(x):
        return dataclasses.replace(base, vision_encoder_ms=vision_ms, **{f: float(v) for f, v in zip(FIT, np.exp(x))})

    def resid(x):
        return np.log(sum(synth_parts(make(x), prompt, out, knobs).values())).ravel() - np.log(target).ravel()

    lo, hi = np.log(1e-6), np.log(1e4)  # every parameter in [1e-6, 1e4] (its unit: ms or us)
    sol = least_squares(resid, np.clip(x0, lo, hi), bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=400)
    params = make(sol.x)
    ape = 100 * np.abs(np.exp(resid(sol.x)) - 1)
    return params, dict(success=bool(sol.success), nfev=int(sol.nfev), median_ape_pct=float(np.median(ape)),
                        p95_ape_pct=float(np.percentile(ape, 95)), max_ape_pct=float(ape.max()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measured", required=True, help="bridge table (.npz) measured on the GPU")
    ap.add_argument("--kernel", required=True, help="experiments/gpu_kernel_time.py output (.json)")
    ap.add_argument("--table", default=str(default_table_path()), help="requests (default: the embedded table)")
    ap.add_argument("--baseline-params", default=None,
                    help='JSON of SynthParams overrides for the "synthetic" row and the fit start, e.g. the cost '
                         'parameters before a recalibration (default: the current SynthParams)')
    ap.add_argument("--fit-target", choices=("kernel_floor", "measured_wall"), default="kernel_floor")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    table, measured = load_table(args.table), load_table(args.measured)
    knobs = {k: np.asarray(v) for k, v in table.knobs.items()}
    grid = {k: tuple(int(x) for x in v) for k, v in knobs.items()}
    configs = grid_configs(grid)
    req = from_table(table, args.table)
    prompt, out = req.prompt_tokens.astype(float), req.output_tokens.astype(float)

    wall_model = from_dict(measured.meta["latency"]["model"])
    kdoc = json.loads(Path(args.kernel).read_text())
    kmodel, v_ms = kernel_model(kdoc, grid["active_blocks"], grid["top_k"])
    kmodel.vision_ms = {v: v_ms for v in grid["vision_tokens"]}
    base = dataclasses.replace(SynthParams(), **json.loads(args.baseline_params or "{}"))
    parts = dict(
        synthetic=synth_parts(base, prompt, out, knobs),
        measured_wall=stages(wall_model, req.prompt_tokens, req.output_tokens, configs),
        kernel_floor=stages(kmodel, req.prompt_tokens, req.output_tokens, configs),
    )
    target = sum(parts[args.fit_target].values())
    fitted, fit_err = fit(target, base, prompt, out, knobs,
                          vision_ms=v_ms if args.fit_target == "kernel_floor" else wall_model.vision_ms[max(grid["vision_tokens"])])
    parts["synthetic_fitted"] = synth_parts(fitted, prompt, out, knobs)
    v = measured.meta["latency"].get("validation", {})
    doc = dict(
        schema="e5jax/cost_model_comparison/v1",
        command=" ".join(["python", *sys.argv]),
        inputs=dict(measured=args.measured, kernel=args.kernel, requests=args.table,
                    gpu=measured.meta.get("device", {}).get("name"),
                    measured_validation=dict(n=v.get("n"), median_ape_pct=v.get("median_ape_pct"),
                                             p95_ape_pct=v.get("p95_ape_pct"))),
        output_tokens="the table's expected_output_tokens, for every model",
        models={k: summarize(p, knobs) for k, p in parts.items()},
        fit=dict(target=args.fit_target, parameters={f: round(getattr(fitted, f), 4) for f in ("vision_encoder_ms", *FIT)},
                 before={f: getattr(base, f) for f in ("vision_encoder_ms", *FIT)}, error_vs_target=fit_err),
    )
    write_json(Path(args.out), doc)
    print(f"{'model':18s} {'full ms':>8s} {'small/full':>10s} {'v eff':>6s} {'k eff':>6s} {'b eff':>6s} "
          f"{'vision':>6s} {'prefill':>7s} {'decode':>6s}")
    for name, s in doc["models"].items():
        e, sh = s["knob_effect_smallest_over_full"], s["stage_share_at_full"]
        print(f"{name:18s} {s['full_config_mean_ms']:8.1f} {s['smallest_over_full']:10.3f} {e['vision_tokens']:6.3f} "
              f"{e['top_k']:6.3f} {e['active_blocks']:6.3f} {sh['vision']:6.3f} {sh['prefill']:7.3f} {sh['decode']:6.3f}")
    print(f"fit to {args.fit_target}: {doc['fit']['parameters']}  error {fit_err}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
