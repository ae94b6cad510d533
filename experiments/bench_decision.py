"""Eager per-request decision latency of every method, as a ratio to the LUT's, measured in one process.

Either loads the exported controllers of a finished run (``--run artifacts/e5`` reads ``<run>/controllers/``) or
trains every method briefly (``--updates`` vmapped updates, ``--seeds`` seeds) and exports them. Then times
``decide(features, task_type, budget)`` one request at a time over the val requests x evaluation budgets, all
methods interleaved in blocks (so machine noise hits them alike), and writes
``artifacts/bench/decision_latency.json`` (schema ``e5jax/bench_decision/v1``, host description included).

    .venv/bin/python experiments/bench_decision.py --run artifacts/e5
    .venv/bin/python experiments/bench_decision.py --updates 40          # no run directory: train briefly
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from e5jax import engine  # noqa: E402
from e5jax import env as E  # noqa: E402
from e5jax import export as X  # noqa: E402
from e5jax import timing as T  # noqa: E402
from e5jax.cli import enable_compilation_cache  # noqa: E402
from e5jax.config import load_config  # noqa: E402
from e5jax.io import read_json, write_json  # noqa: E402
from e5jax.methods import METHODS  # noqa: E402
from e5jax.table import default_table_path, load_table  # noqa: E402

SCHEMA = "e5jax/bench_decision/v1"


def train_briefly(name: str, cfg, env, updates: int, seeds: int):
    m = METHODS[name]
    keys = engine.seed_keys(0, seeds)
    states = jax.jit(jax.vmap(lambda k, e: m.init(k, e, cfg), in_axes=(0, None)))(keys, env)
    upd = jax.jit(jax.vmap(lambda s, k, e: m.update(s, e, k)[0], in_axes=(0, 0, None)))
    for i in range(updates):
        states = upd(states, engine.chunk_keys(keys, i), env)
    return m, jax.block_until_ready(states)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="run directory with controllers/ (default: train briefly)")
    p.add_argument("--table", default=None, help="profile table (default: the run's table, else the embedded default)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (lut is always included)")
    p.add_argument("--updates", type=int, default=40, help="updates per method when training briefly")
    p.add_argument("--seeds", type=int, default=1, help="seeds when training briefly")
    p.add_argument("--decisions", type=int, default=3000, help="timed decisions per method (after warm-up)")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--block", type=int, default=50, help="decisions per method before switching to the next")
    p.add_argument("--jax", action="store_true", help="also time the jitted batch-1 JAX decision of every method")
    p.add_argument("--out", default="artifacts/bench/decision_latency.json")
    a = p.parse_args(argv)
    enable_compilation_cache()

    names = [n.strip() for n in a.methods.split(",") if n.strip()]
    if "lut" not in names:
        names.insert(0, "lut")
    table_path = Path(a.table) if a.table else None
    if table_path is None and a.run and (Path(a.run) / "e5_training_curves.json").is_file():
        tp = read_json(Path(a.run) / "e5_training_curves.json")["meta"]["table"].get("path")
        table_path = Path(tp) if tp and Path(tp).is_file() else None
    table_path = table_path or default_table_path()
    table = load_table(table_path)
    run_cfg, cfgs = load_config(None, methods=",".join(names))
    env = E.env_from_run(run_cfg, table)

    t0 = time.perf_counter()
    if a.run:
        loaded = X.load_controllers(Path(a.run) / "controllers")
        missing = [n for n in names if n not in loaded]
        if missing:
            print(f"bench_decision: {a.run}/controllers has no {', '.join(missing)}", file=sys.stderr)
            return 2
        ctrls = {n: loaded[n] for n in names}
        source = {"run": str(a.run), "files": f"{a.run}/controllers/<method>_seed<i>.npz"}
    else:
        ctrls = {}
        for n in names:
            m, states = train_briefly(n, cfgs[n], env, a.updates, a.seeds)
            ctrls[n] = X.export_controllers(n, m, states, table, env)
        source = {"trained": {"updates": a.updates, "seeds": a.seeds, "env_steps_per_update": run_cfg.env_steps_per_update}}
    prep_s = time.perf_counter() - t0

    reqs = X.val_requests(table, env)
    res = T.time_decisions_interleaved({n: [c.decide for c in cs] for n, cs in ctrls.items()}, reqs,
                                       a.decisions, a.warmup, a.block)
    if a.jax:
        jres = T.time_decisions_interleaved({n: [c.jax_batch1() for c in cs] for n, cs in ctrls.items()}, reqs,
                                            max(200, a.decisions // 5), max(20, a.warmup // 5), a.block)
    base = res["lut"]
    methods = {}
    for n in names:
        r = dict(res[n])
        r["ratio_p50_to_lut"] = r["p50"] / base["p50"]
        r["ratio_p95_to_lut"] = r["p95"] / base["p95"]
        r["ratio_p99_to_lut"] = r["p99"] / base["p99"]
        r["controller"] = ctrls[n][0].kind
        r["seeds"] = [c.seed for c in ctrls[n]]
        if a.jax:
            r["jax_batch1"] = jres[n]
            r["jax_batch1"]["ratio_p50_to_eager"] = jres[n]["p50"] / r["p50"]
        methods[n] = r
    doc = {
        "schema": SCHEMA,
        "meta": {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "command": " ".join([Path(sys.executable).name, *sys.argv]),
                 "host": T.host_meta(), "source": source, "table": str(table_path),
                 "requests": f"{len(reqs)} (val requests x evaluation budgets), prime stride, round-robin over seeds",
                 "interleaving": f"blocks of {a.block} decisions per method, methods in turn",
                 "decisions": a.decisions, "warmup": a.warmup, "prepare_s": prep_s},
        "baseline": "lut",
        "methods": methods,
    }
    write_json(a.out, doc)

    print(f"eager decide() latency, {a.decisions} decisions per method after {a.warmup} warm-up, interleaved; "
          f"{doc['meta']['host']['cpu']} x {doc['meta']['host']['cpu_count']}")
    hdr = f"{'method':11s} {'p50 ms':>9s} {'p95 ms':>9s} {'p99 ms':>9s} {'p50/lut':>9s} {'p95/lut':>9s}"
    if a.jax:
        hdr += f" {'jax b1 p50':>11s}"
    print(hdr)
    for n, r in methods.items():
        line = (f"{n:11s} {r['p50']:9.5f} {r['p95']:9.5f} {r['p99']:9.5f} {r['ratio_p50_to_lut']:9.1f} "
                f"{r['ratio_p95_to_lut']:9.1f}")
        if a.jax:
            line += f" {r['jax_batch1']['p50']:11.4f}"
        print(line)
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
