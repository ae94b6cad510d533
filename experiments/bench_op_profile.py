"""Where a learned method's training chunk spends its time, op by op: one chunk of the default run's program
(S seeds vmapped, ``eval_every`` updates, no intra-chunk evaluation), traced with XLA's per-thunk TraceMe events
(``--xla_cpu_enable_xprof_traceme``, set by this script), reduced to self time per op kind; writes JSON.

    python experiments/bench_op_profile.py                   # grpo and ppo -> artifacts/bench/op_profile.json
    python experiments/bench_op_profile.py --methods grpo --out /tmp/op.json

Self time = an event's duration less its direct children's (a ``while`` thunk is charged only its own loop
overhead). Kinds (``kind``, read from the compiled program's HLO): ``matmul`` (a dot, or a library fusion such as
``ynn_fusion`` whose body holds one), ``library fusion, no matmul``, ``is-finite`` and ``boolean reduce-window``
(in the update: optax.apply_if_finite's all-finite check), ``thunk dispatch`` (``ThunkExecutor::Execute``
itself), and otherwise the XLA op name without its number (``copy``, ``add_select_fusion``, ...). The traced chunk runs slower
than an untraced one (``exec_s`` vs ``traced_s``): read shares, not absolute times. The ten slowest matmuls are
listed with their shapes and GFLOP/s.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT_DIR, bench_meta, lab_init, load_env, setup_jax  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from e5jax import engine  # noqa: E402
from e5jax.methods import METHODS  # noqa: E402

PYTHON_SIDE = ("stop_trace", "block_until_ready", "wait for completion")


def self_times(trace_events: list) -> tuple[collections.Counter, collections.Counter]:
    """{event name: self time (us)}, {event name: calls} over complete ('X') events, nesting per thread."""
    threads = collections.defaultdict(list)
    for e in trace_events:
        if e.get("ph") == "X":
            threads[(e["pid"], e["tid"])].append(dict(e))
    self_us, calls = collections.Counter(), collections.Counter()
    for events in threads.values():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list = []
        for e in events:
            while stack and stack[-1]["ts"] + stack[-1]["dur"] <= e["ts"]:
                stack.pop()
            if stack:
                stack[-1]["child"] = stack[-1].get("child", 0) + e["dur"]
            stack.append(e)
        for e in events:
            self_us[e["name"]] += e["dur"] - e.get("child", 0)
            calls[e["name"]] += 1
    return self_us, calls


def _instruction(hlo: str, name: str):
    """The HLO line defining ``%name`` (groups: result type, opcode, operands, the rest), or None."""
    return re.search(r"\n\s*(?:ROOT )?%" + re.escape(name) + r" = (\S+) ([\w\-]+)\(([^)]*)\)([^\n]*)", hlo)


def dot_flops(hlo: str, name: str) -> tuple[str, float] | None:
    """(shapes, FLOPs) of the dot an op name stands for (a dot, or a fusion whose body holds one), else None."""
    m = _instruction(hlo, name)
    if not m:
        return None
    text = m.group(0)
    calls = re.search(r"calls=%([\w.\-]+)", m.group(4))
    if calls:
        body = re.search(r"\n%" + re.escape(calls.group(1)) + r" \(.*?\n\}", hlo, re.S)
        text = body.group(0) if body else text
    d = re.search(r"= f32\[([\d,]*)\]\S* dot\(%([\w.\-]+), %([\w.\-]+)\), lhs_batch_dims=\{[\d,]*\}, "
                  r"lhs_contracting_dims=\{(\d+)\}", text)
    if not d:
        return None

    def shape(operand: str) -> list[int]:
        o = re.search(r"%" + re.escape(operand) + r" = f32\[([\d,]*)\]", text) or \
            re.search(r"%" + re.escape(operand) + r" = f32\[([\d,]*)\]", hlo)
        return [int(x) for x in o.group(1).split(",") if x] if o else []

    out = [int(x) for x in d.group(1).split(",") if x]
    lhs, rhs = shape(d.group(2)), shape(d.group(3))
    if not lhs:
        return None
    k = lhs[int(d.group(4))]
    fmt = lambda a: "x".join(map(str, a))  # noqa: E731
    return f"{fmt(lhs)} . {fmt(rhs)} -> {fmt(out)}", 2.0 * float(np.prod(out)) * k


def kind(name: str, hlo: str) -> str:
    """An op's kind, from the compiled program's HLO: ``matmul`` (a dot, or a library fusion whose body holds one),
    ``library fusion, no matmul`` (e.g. a bias gradient's reduction), ``is-finite``, ``boolean reduce-window``
    (reductions over predicates; in the update, optax.apply_if_finite's all-finite check), ``thunk
    dispatch``; otherwise the XLA op name without its number."""
    base = re.sub(r"\.\d+$", "", name.replace("end: ", ""))
    if base == "ThunkExecutor::Execute":
        return "thunk dispatch"
    if dot_flops(hlo, name.replace("end: ", "")) is not None:
        return "matmul"
    if base.startswith(("ynn_fusion", "xnn_fusion")):
        return "library fusion, no matmul"
    if "is-finite" in base:
        return "is-finite"
    m = _instruction(hlo, name.replace("end: ", ""))
    if base.startswith("wrapped_reduce-window") and m and m.group(1).startswith("pred["):
        return "boolean reduce-window"
    return base


def profile(name: str, run, cfgs, env) -> dict:
    method, cfg = METHODS[name], cfgs[name]
    trainer = engine.make_train(method, cfg, run.eval_every)
    keys = engine.seed_keys(run.base_seed, run.seeds)
    states = lab_init(method, cfg, keys, env)
    mask = engine.early_eval_mask(run.eval_every, first_chunk=False)
    chunk = trainer.chunk_eval.lower(states, keys, env, mask).compile()
    jax.block_until_ready(chunk(states, keys, env, mask))
    exec_s = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(chunk(states, keys, env, mask))
        exec_s.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory(prefix="op_profile_") as d:
        t0 = time.perf_counter()
        jax.profiler.start_trace(d)
        jax.block_until_ready(chunk(states, keys, env, mask))
        traced_s = time.perf_counter() - t0
        jax.profiler.stop_trace()
        trace = json.load(gzip.open(sorted(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True))[-1]))
    self_us, calls = self_times(trace["traceEvents"])
    device = {n: t for n, t in self_us.items() if not any(p in n for p in PYTHON_SIDE)}
    total = float(sum(device.values()))
    hlo = chunk.as_text()
    kinds = {n: kind(n, hlo) for n in device}
    by_kind = collections.Counter()
    for n, t in device.items():
        by_kind[kinds[n]] += t
    dots = []
    for n, t in sorted(device.items(), key=lambda x: -x[1]):
        if kinds[n] != "matmul" or n.startswith("end: "):
            continue
        got = dot_flops(hlo, n)
        per_call_s = t / calls[n] / 1e6
        dots.append({"op": n, "shapes": got[0] if got else None, "calls": calls[n], "self_ms": t / 1e3,
                     "us_per_call": per_call_s * 1e6, "gflops": got[1] / per_call_s / 1e9 if got else None})
        if len(dots) == 10:
            break
    return {"seeds": run.seeds, "updates": run.eval_every, "exec_s": exec_s, "exec_s_median": float(np.median(exec_s)),
            "traced_s": traced_s, "device_self_ms": total / 1e3,
            "by_kind": [{"kind": k, "self_ms": t / 1e3, "share": t / total} for k, t in by_kind.most_common()],
            "slowest_matmuls": dots}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="grpo,ppo")
    ap.add_argument("--out", default=str(OUT_DIR / "op_profile.json"))
    args = ap.parse_args()
    if "xla_cpu_enable_xprof_traceme" not in os.environ.get("XLA_FLAGS", ""):  # read when the backend starts: below
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    setup_jax()
    run, cfgs, env, _ = load_env()
    doc = {"schema": "e5jax/bench_op_profile/v1", "meta": bench_meta(), "methods": {}}
    for name in args.methods.split(","):
        r = doc["methods"][name] = profile(name, run, cfgs, env)
        print(f"{name}: chunk {r['exec_s_median'] * 1e3:.0f} ms untraced, {r['traced_s'] * 1e3:.0f} ms traced "
              f"({r['device_self_ms']:.0f} ms of op self time)")
        for row in r["by_kind"][:8]:
            print(f"  {row['share']:6.1%}  {row['self_ms']:8.1f} ms  {row['kind']}")
        for d in r["slowest_matmuls"][:4]:
            g = "" if d["gflops"] is None else f"{d['gflops']:6.1f} GFLOP/s"
            print(f"    {d['op']:16s} {d['shapes'] or '?':40s} {d['us_per_call']:6.1f} us/call {g}")
    doc["meta"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from e5jax.io import write_json

    write_json(Path(args.out), doc)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
