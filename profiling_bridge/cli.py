"""Command line: ``e5jax-bridge {profile,refresh,quality,merge-quality,archs,easy-vqa,shapes-vqa,train-tiny,eval-tiny,knob-effects}``.

Bad input -> one line on stderr naming the problem, exit code 2, nothing written. Inputs are checked
before anything is measured; tables are written atomically by ``ProfileTable.save``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from e5jax.io import atomic_write
from e5jax.table import ProfileTable, TableError, load_table
from profiling_bridge import quality as qh
from profiling_bridge import shapes_vqa, tiny_vqa
from profiling_bridge.archs import ARCHS, BridgeError, build_model, describe, get_arch
from profiling_bridge.knob_effects import format_effects, knob_effects
from profiling_bridge.knobs import KNOB_NAMES, SELECTION_RULES, check_grid_names, check_levels, grid_configs, parse_grid
from profiling_bridge.measure import MeasureSettings
from profiling_bridge.request_shapes import Requests, from_table, load_requests
from profiling_bridge.runner import DECODE_REGIMES, MLLMRunner
from profiling_bridge.sweep import METHODS, sweep_latency

PLACEHOLDER_QUALITY = 1.0
ROUTING_NOTE = ("random router weights route tokens near-uniformly over experts; a trained router can be skewed, "
                "which changes grouped-experts latency somewhat (docs/bridge.md)")
# train-tiny's defaults: the recipe behind the committed checkpoint (docs/measured_table.md)
TINY_TRAIN = dict(steps=1500, batch_size=64, lr=1e-3, vision_steps=300, full_fraction=0.0, balance=True,
                  freeze_vision=False)
DTYPES = dict(float32="float32", bfloat16="bfloat16", float16="float16")


def _fail(msg: str) -> int:
    print(f"e5jax-bridge: error: {msg}", file=sys.stderr)
    return 2


def _warn(msg: str) -> None:
    print(f"e5jax-bridge: warning: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------- shared setup
def _write_json(path: Path, obj) -> None:
    text = json.dumps(obj, indent=1)
    atomic_write(path, lambda f: f.write(text))


def _check_out(path: str, suffixes=(".csv", ".npz")) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise BridgeError(f"--out {out}: use a {' or '.join(suffixes)} file name")
    if out.is_dir():
        raise BridgeError(f"--out {out}: is a directory")
    return out


def _dtype(args):
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise BridgeError(f"--device cuda: CUDA is not available (torch {torch.__version__})")
    name = args.dtype if args.dtype != "auto" else ("bfloat16" if args.device == "cuda" else "float32")
    return getattr(torch, name)


def _runner(args) -> MLLMRunner:
    import torch

    get_arch(args.arch)
    if args.threads is not None:
        if args.threads < 1:
            raise BridgeError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    if args.weights is not None and not Path(args.weights).is_dir():
        raise BridgeError(f"--weights {args.weights}: not a directory")
    model = build_model(args.arch, device=args.device, dtype=_dtype(args), seed=args.seed,
                        attn_implementation=args.attn, experts_implementation=args.experts_impl, weights=args.weights)
    return MLLMRunner(model, device=args.device, selection=args.selection, seed=args.seed, decode=args.decode)


def _settings(args) -> MeasureSettings:
    for name in ("repeats", "e2e_repeats"):
        if getattr(args, name) < 1:
            raise BridgeError(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        raise BridgeError("--warmup must be >= 0")
    if args.rounds < 1:
        raise BridgeError("--rounds must be at least 1")
    return MeasureSettings(warmup=args.warmup, repeats=args.repeats, e2e_repeats=args.e2e_repeats, rounds=args.rounds)


def _check_positions(runner: MLLMRunner, requests: Requests, grid) -> None:
    longest = int((requests.prompt_tokens + requests.output_tokens).max()) + max(grid["vision_tokens"])
    limit = runner.config.text_config.max_position_embeddings
    if longest > limit:
        raise BridgeError(f"longest request needs {longest} positions, arch allows {limit} (max_position_embeddings)")


def _assemble(requests: Requests, grid, latency, quality, latency_std=None, meta=None, exact=None) -> ProfileTable:
    """The lab's table; its constructor validates (raises TableError naming the problem)."""
    return ProfileTable(
        knobs={k: np.asarray(grid[k], dtype=np.int64) for k in KNOB_NAMES},
        request_ids=np.asarray(requests.ids).astype(str),
        task_types=np.asarray(requests.task_types).astype(str),
        split=np.asarray(requests.split).astype(str),
        feature_names=tuple(requests.feature_names),
        features=np.asarray(requests.features, dtype=np.float64),
        latency_ms=latency,
        quality=quality,
        latency_std_ms=latency_std,
        exact_match=exact,
        meta=meta or {},
    )


def merge_quality(source: ProfileTable, request_ids, grid, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """[R, C] quality and exact match (None where ``source`` has no such column) of ``source`` reordered to
    ``request_ids``; its knob grid must equal ``grid``."""
    src_grid = {k: tuple(int(x) for x in v) for k, v in source.knobs.items()}
    if src_grid != {k: tuple(grid[k]) for k in grid}:
        raise BridgeError(f"{where}: knob grid {src_grid} differs from the profiled grid {dict(grid)}")
    index = {r: i for i, r in enumerate(source.request_ids.tolist())}
    missing = [r for r in request_ids if r not in index]
    if missing:
        raise BridgeError(f"{where}: has no request {missing[0]!r}")
    rows = [index[r] for r in request_ids]
    return source.quality[rows], None if source.exact_match is None else source.exact_match[rows]


def device_info(device: str) -> dict:
    import torch

    info = dict(type=device, platform=platform.platform(), machine=platform.machine(),
                processor=platform.processor() or None, torch_threads=torch.get_num_threads())
    if device == "cuda":
        info.update(name=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()))
        info["nvidia_smi"] = _nvidia_smi()
    return info


def _nvidia_smi() -> dict | str:
    """GPU clocks and limits as read (never changed) from nvidia-smi."""
    fields = "name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.limit,persistence_mode"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        return f"unavailable ({type(e).__name__})"
    return dict(zip(fields.split(","), (x.strip() for x in out.split(","))))


def versions() -> dict:
    import scipy
    import torch
    import transformers

    return dict(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
                numpy=np.__version__, scipy=scipy.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)


def provenance(args, runner: MLLMRunner, argv) -> dict:
    spec = get_arch(args.arch)
    return dict(
        source="profiling_bridge",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command="e5jax-bridge " + " ".join(argv),
        arch=spec.name,
        model=spec.description,
        weights=args.weights or f"random (seed {args.seed})",
        **({"weights_sha256": weights_digest(args.weights)} if args.weights else {}),
        model_info=describe(runner.model),
        vision_token_selection=runner.selection,
        decode_regime=runner.decode,
        device=device_info(args.device),
        versions=versions(),
        routing_note=ROUTING_NOTE,
        units=dict(latency_ms="ms, p50 (vision + prefill + decode)", quality="score in [0, 1]"),
    )


def weights_digest(directory) -> str:
    """sha256 over a checkpoint directory's weight files (``*.safetensors`` / ``*.bin``, sorted by name: name and
    bytes), so a table names the exact checkpoint it was profiled with (``meta.weights_sha256``)."""
    files = sorted(f for f in Path(directory).iterdir() if f.suffix in (".safetensors", ".bin") and f.is_file())
    if not files:
        raise BridgeError(f"--weights {directory}: no .safetensors or .bin weight file in it")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _check_load(args) -> None:
    """``--max-load L``: refuse to measure when the 1-minute load average is above L (latency measured beside other
    work is contention, not the model's)."""
    if args.max_load is None:
        return
    load = load_average()
    if load is not None and load[0] > args.max_load:
        raise BridgeError(f"--max-load {args.max_load:g}: the machine's 1-minute load average is {load[0]:g}; "
                          "measure latency on a quieter machine (or raise --max-load)")


def _latency(args, runner, requests, grid, configs):
    before = load_average()
    if args.max_load is not None and before is not None and before[0] > args.max_load:
        _warn(f"the 1-minute load average rose to {before[0]:g} (above --max-load {args.max_load:g}) before the latency "
              "measurement; measured anyway and recorded in meta.latency.load_average")
    res = sweep_latency(runner, requests, configs, grid, _settings(args), method=args.method,
                        validate_samples=args.validate_samples, prefill_points=args.prefill_points,
                        decode_points=args.decode_points, seed=args.seed, progress=not args.no_progress)
    spread = res.meta.get("stage_relative_round_spread")
    if spread:
        print("stage timings, spread of a point's per-round medians relative to its p50 (median / max over points): "
              + ", ".join(f"{k} {v['median']:.1%} / {v['max']:.1%}" for k, v in spread.items()))
    v = res.meta.get("validation")
    if v and v.get("n"):
        print(f"latency model vs end-to-end on {v['n']} random (request, config) samples: "
              f"median APE {v['median_ape_pct']:.1f}%, p95 APE {v['p95_ape_pct']:.1f}%")
    res.meta["load_average"] = dict(before=before, after=load_average(), max_load=args.max_load,
                                     note="1/5/15-minute load averages before and after the latency measurement")
    return res


def _save(table: ProfileTable, out: Path) -> None:
    table.save(out)
    lat = table.latency_ms
    print(f"wrote {out}: {table.num_requests} requests x {table.num_configs} configs, "
          f"latency {lat.min():.2f}..{lat.max():.2f} ms (full config median {np.median(lat[:, -1]):.2f} ms), "
          f"quality: {table.meta.get('quality_source')}")


# --------------------------------------------------------------------------- commands
def cmd_profile(args, argv) -> int:
    out = _check_out(args.out)
    _settings(args)  # bad measurement settings are refused before anything is loaded or built
    _check_load(args)
    grid = parse_grid(args.grid, get_arch(args.arch).grid)
    is_dataset = Path(args.requests).suffix.lower() == ".jsonl"
    if args.quality_harness and not is_dataset:
        raise BridgeError("--quality-harness needs --requests to be a quality dataset (.jsonl)")
    quality_table = load_table(args.quality_from) if args.quality_from else None
    items = qh.load_dataset(args.requests) if is_dataset else None
    requests = None if is_dataset else load_requests(args.requests)
    runner = _runner(args)
    check_levels(runner.model, grid)
    configs = grid_configs(grid)
    tokenizer = qh.load_tokenizer(runner.model, args.weights) if is_dataset else None
    if is_dataset:
        requests = qh.requests_from_dataset(items, tokenizer, runner.model, args.requests)
    _check_positions(runner, requests, grid)

    R, C = len(requests), len(configs)
    exact = None
    if quality_table is not None:
        quality, exact = merge_quality(quality_table, requests.ids.tolist(), grid, args.quality_from)
        quality_meta = _merged_quality_meta(args.quality_from, quality_table)
    else:
        quality = np.full((R, C), PLACEHOLDER_QUALITY)
        quality_meta = dict(quality_source=f"placeholder: constant {PLACEHOLDER_QUALITY}, NOT measured; merge real "
                                           "quality with `e5jax-bridge merge-quality` or profile with "
                                           "--quality-from/--quality-harness", quality_is_placeholder=True)
    _assemble(requests, grid, np.ones((R, C)), quality)  # validates the table's shape before measuring

    if args.quality_harness:
        res = qh.evaluate(runner, items, configs, tokenizer, qh.image_processor(runner.model, args.weights),
                          max_new_tokens=args.max_new_tokens, progress=not args.no_progress, batch_size=args.batch_size)
        quality, exact = res["graded"], res["exact_match"]
        random_weights = args.weights is None
        quality_meta = dict(
            quality_source=f"quality harness on {args.requests}: quality = graded (the expected metric, VQA accuracy / "
                           "exact match, under the model's teacher-forced distribution over the dataset's "
                           f"{len(res['answer_candidates'])} answers), column exact_match = exact match of the greedy "
                           f"answer (max_new_tokens={args.max_new_tokens})"
                           + ("; RANDOM weights: values meaningless" if random_weights else ""),
            quality_is_placeholder=random_weights, answer_candidates=res["answer_candidates"])
    elif quality_table is None:
        _warn("quality is a placeholder (constant 1.0), not measured; see meta['quality_source']")

    res = _latency(args, runner, requests, grid, configs)
    meta = dict(provenance(args, runner, argv), requests_source=requests.source, latency=res.meta, **quality_meta)
    _save(_assemble(requests, grid, res.latency_ms, quality, res.latency_std_ms, meta, exact), out)
    return 0


def _merged_quality_meta(path: str, source: ProfileTable) -> dict:
    return dict(quality_source=f"merged from {path} ({source.meta.get('quality_source', source.meta.get('source', 'unknown source'))})",
                quality_is_placeholder=bool(source.meta.get("quality_is_placeholder", False)))


def cmd_refresh(args, argv) -> int:
    out = _check_out(args.out)
    _settings(args)
    table = load_table(args.table)
    check_grid_names(table.knobs)
    grid = {k: tuple(int(x) for x in v) for k, v in table.knobs.items()}
    requests = from_table(table, args.table, args.output_tokens)
    recorded = table.meta.get("weights_sha256")
    digest = weights_digest(args.weights) if args.weights is not None and recorded is not None else recorded
    if digest != recorded:
        raise BridgeError(f"--weights {args.weights}: checkpoint sha256 {digest[:12]}... is not "
                          f"the one {args.table} was profiled with ({recorded[:12]}..., meta.weights "
                          f"{table.meta.get('weights')})")
    _check_load(args)
    runner = _runner(args)
    check_levels(runner.model, grid)
    _check_positions(runner, requests, grid)
    res = _latency(args, runner, requests, grid, grid_configs(grid))
    old = table.meta
    meta = provenance(args, runner, argv)
    meta.update(
        requests_source=args.table,
        latency=res.meta,
        quality_source=f"kept from {args.table}: {old.get('quality_source', old.get('source', 'unknown'))}",
        quality_is_placeholder=bool(old.get("quality_is_placeholder", False)),
        refreshed_from=dict(path=args.table, meta=old),
    )
    if args.output_tokens is not None:
        meta["output_tokens"] = (f"{args.output_tokens} for every request, from --output-tokens (the input table has "
                                 "no expected_output_tokens column)")
    _save(table.replace(latency_ms=res.latency_ms, latency_std_ms=res.latency_std_ms, meta=meta), out)
    return 0


def cmd_merge_quality(args, argv) -> int:
    out = _check_out(args.out)
    table, source = load_table(args.table), load_table(args.quality_from)
    grid = {k: tuple(int(x) for x in v) for k, v in table.knobs.items()}
    quality, exact = merge_quality(source, table.request_ids.tolist(), grid, args.quality_from)
    meta = dict(table.meta, **_merged_quality_meta(args.quality_from, source),
                quality_merge_command="e5jax-bridge " + " ".join(argv))
    _save(table.replace(quality=quality, exact_match=exact, meta=meta), out)
    return 0


def cmd_quality(args, argv) -> int:
    out = _check_out(args.out, (".json",))
    items = qh.load_dataset(args.dataset)
    grid = parse_grid(args.grid, get_arch(args.arch).grid)
    runner = _runner(args)
    check_levels(runner.model, grid)
    configs = grid_configs(grid)
    res = qh.evaluate(runner, items, configs, qh.load_tokenizer(runner.model, args.weights),
                     qh.image_processor(runner.model, args.weights), max_new_tokens=args.max_new_tokens,
                     progress=not args.no_progress, batch_size=args.batch_size)
    report = dict(
        dataset=args.dataset, grid={k: list(v) for k, v in grid.items()}, configs=[c.label() for c in configs],
        items=[it.id for it in items], metrics=[it.metric for it in items],
        scores=res["scores"].tolist(), graded=res["graded"].tolist(), exact_match=res["exact_match"].tolist(),
        answer_candidates=res["answer_candidates"], predictions=res["predictions"],
        mean_by_config=res["scores"].mean(0).tolist(),
        random_weights=args.weights is None, provenance=provenance(args, runner, argv),
    )
    _write_json(out, report)
    best = int(np.argmax(report["mean_by_config"]))
    print(f"wrote {out}: {len(items)} items x {len(configs)} configs; best mean score "
          f"{report['mean_by_config'][best]:.3f} at {configs[best].label()}")
    return 0


def cmd_easy_vqa(args, argv) -> int:
    if not 0 < args.val_fraction < 1:
        raise BridgeError("--val-fraction must be in (0, 1)")
    path = tiny_vqa.write_requests(args.out, requests=args.requests, seed=args.seed, val_fraction=args.val_fraction)
    print(f"wrote {path}: {args.requests} easy-vqa test questions (seed {args.seed})")
    return 0


def cmd_shapes_vqa(args, argv) -> int:
    types = shapes_vqa.check_types([t.strip() for t in args.types.split(",")])
    path = shapes_vqa.write_requests(args.out, requests=args.requests, seed=args.seed, val_fraction=args.val_fraction,
                                     types=types)
    print(f"wrote {path}: {args.requests} shapes-vqa requests (seed {args.seed}; question types {', '.join(types)})")
    return 0


def cmd_train_tiny(args, argv) -> int:
    import torch

    if args.steps < 1 or args.batch_size < 1:
        raise BridgeError("--steps and --batch-size must be at least 1")
    if args.vision_steps < 0:
        raise BridgeError("--vision-steps must be at least 0")
    if not 0 <= args.full_fraction <= 1:
        raise BridgeError("--full-fraction must be in [0, 1]")
    if args.train_size < 1:
        raise BridgeError("--train-size must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BridgeError(f"--out {out}: exists and is not a directory")
    torch.set_num_threads(args.threads)
    meta = tiny_vqa.train(out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          limit=args.limit, progress=not args.no_progress, vision_steps=args.vision_steps,
                          full_fraction=args.full_fraction, balance=args.balance, task_set=args.task_set,
                          train_size=args.train_size, freeze_vision=args.freeze_vision)
    return _tiny_summary(args, argv, meta)


def cmd_eval_tiny(args, argv) -> int:
    import torch

    if not Path(args.weights).is_dir():
        raise BridgeError(f"--weights {args.weights}: not a directory")
    torch.set_num_threads(args.threads)
    return _tiny_summary(args, argv, json.loads((Path(args.weights) / "train_meta.json").read_text()))


def _tiny_summary(args, argv, meta: dict) -> int:
    """Test accuracy of a trained tiny-llava-olmoe checkpoint (full config, per knob level, majority baselines)."""
    weights = str(getattr(args, "weights", None) or args.out)
    runner = MLLMRunner(build_model(tiny_vqa.ARCH, weights=weights))
    acc = tiny_vqa.test_accuracy(runner, weights, progress=not args.no_progress, limit=args.test_limit,
                                 task_set=meta.get("task_set", "easy-vqa"))
    summary = dict(command="e5jax-bridge " + " ".join(argv), checkpoint=weights, train=meta, test=acc,
                   model_info=describe(runner.model), versions=versions(), device=device_info("cpu"))
    if args.summary:
        _write_json(Path(args.summary), summary)
    print(f"test accuracy of the full config {acc['full_config']} on {acc['test_questions']} {acc['task_set']} test questions: "
          f"{acc['full_accuracy']:.4f} (majority answer {acc['majority_answer']!r}: {acc['majority_accuracy']:.4f}, "
          f"per-question majority: {acc['question_majority_accuracy']:.4f})")
    return 0


def cmd_knob_effects(args, argv) -> int:
    report = {}
    for path in args.table:
        report[path] = knob_effects(load_table(path))
        print(format_effects(path, report[path]))
    if args.out:
        _write_json(Path(args.out), report)
    return 0


def cmd_archs(args, argv) -> int:
    for name, spec in ARCHS.items():
        print(f"{name}: {spec.description}\n  default grid: {dict(spec.grid)}")
    return 0


# --------------------------------------------------------------------------- parser
def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, help=f"architecture: {', '.join(ARCHS)}")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("auto", *DTYPES), default="auto", help="auto: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--attn", default="sdpa", help="LM/vision attention implementation (sdpa, eager, ...)")
    p.add_argument("--experts-impl", default=None, help="experts implementation (default: transformers' default, grouped_mm)")
    p.add_argument("--selection", choices=SELECTION_RULES, default="uniform",
                   help="which vision tokens to keep: uniform stride, or ranked by [CLS] attention")
    p.add_argument("--decode", choices=DECODE_REGIMES, default="dynamic",
                   help="decode regime: dynamic KV cache, eager launches (transformers' default); static: preallocated "
                        "KV cache; graphs: static + each decode step replayed as a CUDA graph (an engine's regime; cuda)")
    p.add_argument("--weights", default=None, help="local checkpoint directory instead of random weights (no hub)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's); 1 gives the steadiest timings for tiny models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")


def _measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=METHODS, default="model",
                   help="model: stage grids + latency model, validated end to end (default); e2e: measure every pair")
    p.add_argument("--warmup", type=int, default=5, help="untimed passes per grid point")
    p.add_argument("--repeats", type=int, default=30, help="timed passes per grid point (p50/p95)")
    p.add_argument("--rounds", type=int, default=5,
                   help="spread each grid point's timed passes over this many sweeps of the stage grid (at most "
                        "--repeats); the spread of a point's per-round medians is recorded")
    p.add_argument("--e2e-repeats", type=int, default=5, help="timed passes per end-to-end (request, config)")
    p.add_argument("--validate-samples", type=int, default=20, help="random (request, config) pairs measured end to end")
    p.add_argument("--prefill-points", type=int, default=6, help="total-token points of the prefill grid")
    p.add_argument("--decode-points", type=int, default=5, help="KV-length points of the decode grid")
    p.add_argument("--max-load", type=float, default=None, metavar="L",
                   help="refuse to measure when the 1-minute load average is above L (the load before and after the "
                        "measurement is recorded in meta.latency.load_average either way)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e5jax-bridge", description="Measure real MLLM latency per knob config into e5jax tables.")
    sub = p.add_subparsers(dest="cmd", required=True)

    pr = sub.add_parser("profile", help="measure latency for request shapes and write a new table")
    _model_args(pr)
    _measure_args(pr)
    pr.add_argument("--requests", required=True, help="table (.npz/.csv), shapes (.json/.csv) or quality dataset (.jsonl)")
    pr.add_argument("--out", required=True, help="output table (.csv or .npz)")
    pr.add_argument("--grid", nargs="*", default=[], metavar="KNOB=L1,L2",
                    help="override knob levels, e.g. vision_tokens=4,8,16 top_k=1,2 active_blocks=2,4")
    qg = pr.add_mutually_exclusive_group()
    qg.add_argument("--quality-from", default=None, help="take quality from this table (same requests and grid)")
    qg.add_argument("--quality-harness", action="store_true", help="score quality with the harness (--requests .jsonl)")
    pr.add_argument("--max-new-tokens", type=int, default=16, help="quality harness generation length")
    pr.set_defaults(func=cmd_profile)

    rf = sub.add_parser("refresh", help="re-measure the latency of an existing table, keeping its quality")
    _model_args(rf)
    _measure_args(rf)
    rf.add_argument("--table", required=True, help="input table (.csv or .npz)")
    rf.add_argument("--out", required=True, help="output table (.csv or .npz)")
    rf.add_argument("--output-tokens", type=int, default=None, metavar="N",
                    help="every request's output length, for a table without an expected_output_tokens column")
    rf.set_defaults(func=cmd_refresh)

    qu = sub.add_parser("quality", help="run the quality harness on a JSONL dataset for every config")
    _model_args(qu)
    qu.add_argument("--dataset", required=True, help="JSONL dataset (see docs/bridge.md)")
    qu.add_argument("--out", required=True, help="output .json with per-item x per-config scores")
    qu.add_argument("--grid", nargs="*", default=[], metavar="KNOB=L1,L2")
    qu.add_argument("--max-new-tokens", type=int, default=16)
    qu.set_defaults(func=cmd_quality)
    for sp in (pr, qu):
        sp.add_argument("--batch-size", type=int, default=1,
                        help="harness items per forward pass (>1: batched harness, uniform selection only)")

    ev = sub.add_parser("easy-vqa", help="write a seeded sample of easy-vqa test questions as a quality dataset (.jsonl)")
    ev.add_argument("--out", required=True, help="output directory (gets requests.jsonl)")
    ev.add_argument("--requests", type=int, default=1500)
    ev.add_argument("--val-fraction", type=float, default=0.25, help="fraction of the test images in the val split")
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=cmd_easy_vqa)

    sv = sub.add_parser("shapes-vqa", help="write seeded shapes-vqa requests (generated scenes) as a quality dataset (.jsonl)")
    sv.add_argument("--out", required=True, help="output directory (gets requests.jsonl and images/)")
    sv.add_argument("--requests", type=int, default=1500)
    sv.add_argument("--val-fraction", type=float, default=0.25, help="fraction of the requests in the val split")
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("--types", default=",".join(shapes_vqa.QUESTION_TYPES),
                    help=f"comma-separated question types, asked in turn (default: all of {', '.join(shapes_vqa.QUESTION_TYPES)})")
    sv.set_defaults(func=cmd_shapes_vqa)

    def tiny_args(sp):
        sp.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        sp.add_argument("--summary", default=None, help="write the test-accuracy summary (.json) here")
        sp.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test questions only")
        sp.add_argument("--no-progress", action="store_true")

    tt = sub.add_parser("train-tiny", help="train tiny-llava-olmoe on easy-vqa or shapes-vqa (knob-aware) and report its test accuracy")
    tt.add_argument("--out", required=True, help="checkpoint directory (written atomically)")
    tt.add_argument("--steps", type=int, default=TINY_TRAIN["steps"], help="VQA steps (after --vision-steps)")
    tt.add_argument("--batch-size", type=int, default=TINY_TRAIN["batch_size"])
    tt.add_argument("--lr", type=float, default=TINY_TRAIN["lr"])
    tt.add_argument("--seed", type=int, default=0)
    tt.add_argument("--vision-steps", type=int, default=TINY_TRAIN["vision_steps"],
                    help="stage 1: steps training the vision tower alone on each image's shape and colour")
    tt.add_argument("--freeze-vision", action=argparse.BooleanOptionalAction, default=TINY_TRAIN["freeze_vision"],
                    help="keep the vision tower's stage-1 weights during the VQA steps (LLaVA's recipe: the projector "
                         "and the language model learn)")
    tt.add_argument("--full-fraction", type=float, default=TINY_TRAIN["full_fraction"],
                    help="fraction of the VQA steps at the full config before the knob-aware recipe")
    tt.add_argument("--balance", action=argparse.BooleanOptionalAction, default=TINY_TRAIN["balance"],
                    help="sample the question types (colour, shape, yes/no) equally often")
    tt.add_argument("--limit", type=int, default=None, help="train on the first N questions only (tests)")
    tt.add_argument("--task-set", choices=tiny_vqa.TASK_SETS, default="easy-vqa",
                    help="easy-vqa's train split, or generated shapes-vqa questions (eval-tiny then uses its test set)")
    tt.add_argument("--train-size", type=int, default=tiny_vqa.SHAPES_TRAIN_SIZE,
                    help="shapes-vqa: generated train questions (seed [seed, 1])")
    tiny_args(tt)
    tt.set_defaults(func=cmd_train_tiny)

    et = sub.add_parser("eval-tiny", help="test accuracy of a trained tiny-llava-olmoe checkpoint")
    et.add_argument("--weights", required=True, help="checkpoint directory from train-tiny")
    tiny_args(et)
    et.set_defaults(func=cmd_eval_tiny)

    mq = sub.add_parser("merge-quality", help="replace a table's quality by another table's (same requests and grid)")
    mq.add_argument("--table", required=True)
    mq.add_argument("--quality-from", required=True)
    mq.add_argument("--out", required=True)
    mq.set_defaults(func=cmd_merge_quality)

    ke = sub.add_parser("knob-effects", help="quality and relative latency per knob level (other knobs full) of tables")
    ke.add_argument("--table", action="append", required=True, help="a table (.npz/.csv); repeat to compare")
    ke.add_argument("--out", default=None, help="also write the numbers as JSON")
    ke.set_defaults(func=cmd_knob_effects)

    ar = sub.add_parser("archs", help="list the architectures and their default knob grids")
    ar.set_defaults(func=cmd_archs)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, argv)
    except (BridgeError, TableError) as e:
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
