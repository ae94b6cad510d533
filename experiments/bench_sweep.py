"""Sweep benchmark: T trials x S seeds x the learned methods in one compile per method, vs the same trials as
separate `e5jax run` processes (one process per trial, the way a sweep without traced hyperparameters runs).

Writes JSON (after every step): the sweep's tune phase (wall, compile, train, env steps) and, for the first
``--separate`` trials of every method, a separate `e5jax run --methods M` process with that trial's settings in a
TOML (wall of the process, its compile and train time). Ratios are measured in this one run; the load average is
recorded before and after every step.

    python experiments/bench_sweep.py --out artifacts/bench/sweep.json            # 16 trials x 5 seeds, 4 methods
    python experiments/bench_sweep.py --trials 3 --seeds 2 --steps 10240 --out /tmp/bs.json   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("supervised", "ppo", "dpo", "grpo")


def load() -> list[float]:
    return list(os.getloadavg())


def toml_value(v) -> str:
    return json.dumps(v) if not isinstance(v, (list, tuple)) else "[" + ", ".join(toml_value(x) for x in v) + "]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=204800, help="env-step budget per row (default: the E5 protocol's)")
    ap.add_argument("--separate", type=int, default=2, help="trials per method also run as separate processes")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="artifacts/bench/sweep.json")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    base = tmp / "base.toml"
    base.write_text(f"[run]\nseeds = {args.seeds}\nmethods = {toml_value(methods)}\ntotal_env_steps = {args.steps}\n")
    spec_src = (ROOT / "experiments/e5_sweep.toml").read_text()
    spec = tmp / "spec.toml"
    spec.write_text(spec_src.replace('config = ""', f'config = "{base}"', 1)
                    .replace("trials = 16", f"trials = {args.trials}", 1)
                    .replace("seeds = 5 ", f"seeds = {args.seeds} ", 1)
                    .replace('methods = ["supervised", "ppo", "dpo", "grpo"]', f"methods = {toml_value(methods)}", 1)
                    .replace("[sweep]", '[sweep]\nphases = ["tune"]', 1))
    doc = {"schema": "e5jax/bench_sweep/v1", "command": " ".join([sys.executable, *sys.argv]), "trials": args.trials,
           "seeds": args.seeds, "env_steps_per_row": args.steps, "methods": methods, "cpu_count": os.cpu_count()}

    def save():
        out.write_text(json.dumps(doc, indent=1) + "\n")

    env = dict(os.environ, E5JAX_OVERHEAD="off", E5JAX_JAX_CACHE="off")
    l0 = load()
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "e5jax", "sweep", "--config", str(spec), "--out", str(tmp / "sweep"),
                        "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        print(p.stderr[-3000:], file=sys.stderr)
        return 1
    sw = json.loads((tmp / "sweep" / "sweep.json").read_text())
    doc["sweep"] = {"wall_s": wall, "load_before": l0, "load_after": load(),
                    "methods": {m: {k: sw["tune"][m][k] for k in ("rows", "compile_s", "train_s", "env_steps_per_row",
                                                                     "env_steps_per_s")} for m in methods}}
    save()
    sep = {}
    for m in methods:
        for i, t in enumerate(sw["tune"][m]["trials"][: args.separate]):
            cfg = tmp / f"{m}_{i}.toml"
            cfg.write_text(base.read_text() + f"[{m}]\n" + "".join(f"{k} = {v!r}\n" for k, v in t["settings"].items()
                                                                  if k != "lr")
                           + (f"[learner]\nlr = {t['settings']['lr']!r}\n" if "lr" in t["settings"] else ""))
            l0 = load()
            t0 = time.perf_counter()
            q = subprocess.run([sys.executable, "-m", "e5jax", "run", "--config", str(cfg), "--methods", m, "--out",
                                str(tmp / f"run_{m}_{i}"), "--no-progress"], cwd=ROOT, env=env, capture_output=True,
                               text=True)
            w = time.perf_counter() - t0
            if q.returncode:
                print(q.stderr[-3000:], file=sys.stderr)
                return 1
            r = json.loads((tmp / f"run_{m}_{i}" / "e5_training_curves.json").read_text())["methods"][m]
            sep.setdefault(m, []).append({"settings": t["settings"], "process_wall_s": w, "compile_s": r["compile_time_s"],
                                          "train_s": r["train_time_s"], "load_before": l0, "load_after": load(),
                                          "final_norm_utility_mean": r["curves"]["val_utility_norm"]["mean"][-1]})
            doc["separate"] = sep
            save()
    # per trial: env steps of one trial (seeds x budget) / seconds per trial
    T, steps_trial = args.trials, args.seeds * args.steps
    ratios = {}
    for m in methods:
        s = doc["sweep"]["methods"][m]
        proc = sum(x["process_wall_s"] for x in sep[m]) / len(sep[m])
        train = sum(x["train_s"] for x in sep[m]) / len(sep[m])
        ratios[m] = {"sweep_s_per_trial_incl_compile": (s["train_s"] + s["compile_s"]) / T,
                     "separate_process_s_per_trial": proc,
                     "speedup_vs_separate_processes": proc / ((s["train_s"] + s["compile_s"]) / T),
                     "sweep_train_env_steps_per_s_per_trial": steps_trial / (s["train_s"] / T),
                     "default_run_train_env_steps_per_s": steps_trial / train,
                     "per_trial_throughput_ratio": (steps_trial / (s["train_s"] / T)) / (steps_trial / train)}
    doc["ratios"] = ratios
    doc["sweep_total_wall_s_incl_process"] = doc["sweep"]["wall_s"]
    save()
    print(json.dumps(ratios, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
