"""Everything the GPU issue asks for, in one script that fits one short device lease.

Steps (each a subprocess with its own time limit, taken from what is left of ``--deadline-s``, so a slow or
broken step never costs the ones after it; every step's command, exit code, wall time and output tail go into
``gpu_run.json``):

1. ``env``: GPU name, driver, clocks (read, never changed), versions.
2. ``bridge``: ``e5jax-bridge refresh`` of the embedded default table on ``llava-olmoe`` (CLIP ViT-L/14-336 +
   OLMoE-1B-7B shape, random weights, bf16, built on the GPU): stage grids, latency model, end-to-end
   validation -> ``<gpu>_llava_olmoe.npz``; then ``e5jax validate`` on it (its JSON goes into gpu_run.json).
3. ``routing_skew``: experiments/gpu_routing_skew.py (how much a skewed, trained router could change it).
4. ``seed_scaling``: experiments/bench_seed_scaling.py at S = 1, 4, 16, 64, 256, 1024 (PPO, GRPO).
5. ``compile_flags``: ``e5jax run`` (overhead analysis off, XLA's compilation cache off) once per XLA_FLAGS
   variant (``COMPILE_VARIANTS``: the fusion autotuner off, command buffers off, both), each with an empty trace
   cache, then the default flags again on the trace cache the first run filled (what a warm trace cache saves);
   per run and method: compile time and its trace / lower / compile breakdown, training time, final normalized
   utility -> ``compile_flags.json``.
6. ``run``: ``e5jax run`` with the default config (overhead analysis off: ``E5JAX_OVERHEAD=off``), its JSON
   outputs packed into ``run.tgz``.
7. ``engine``: the ``bridge`` refresh in the engine regime (``--decode graphs``: static KV cache, every decode step
   replayed as a CUDA graph), ``e5jax validate`` on it, then ``e5jax run --table`` on it (overhead analysis off);
   the table and the run's JSON outputs packed into ``engine.tgz`` (its quality stays the default table's synthetic
   one). On the CPU (``--tiny``) the tiny profile with ``--decode static``.

On the device (the image's python3 has torch, transformers and JAX with CUDA; nothing is installed):

    PYTHONPATH=src:. python3 experiments/gpu_run.py --out $OUT

On a CPU, ``--tiny`` runs the same steps end to end in about a minute with the tiny arch, a 3-request shapes
file and a few seeds/updates (tests/test_gpu_script.py runs the bridge and skew steps of it).
At most 8 files are written to ``--out`` (the device tool brings back 8).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TABLE = ROOT / "src" / "e5jax" / "data" / "default_table.npz"
STEPS = ("env", "bridge", "routing_skew", "seed_scaling", "compile_flags", "run", "engine")
# per-step caps (s) on the GPU; each step also leaves RESERVE s for every later step
CAPS = dict(env=30, bridge=380, routing_skew=50, seed_scaling=130, compile_flags=260, run=200, engine=480)
RESERVE = dict(env=0, bridge=0, routing_skew=30, seed_scaling=60, compile_flags=60, run=50, engine=120)
# compile_flags: (name, XLA_FLAGS added to the environment's, trace cache: "fresh" = empty, "warm" = the first run's)
COMPILE_VARIANTS = [("default", "", "fresh"), ("autotune_off", "--xla_gpu_autotune_level=0", "fresh"),
                    ("command_buffer_off", "--xla_gpu_enable_command_buffer=", "fresh"),
                    ("autotune_and_command_buffer_off", "--xla_gpu_autotune_level=0 --xla_gpu_enable_command_buffer=",
                     "fresh"),
                    ("default, warm trace cache", "", "warm")]
TINY_SHAPES = [
    dict(request_id="r0", task_type="general_vqa", split="train", prompt_tokens=12, output_tokens=3),
    dict(request_id="r1", task_type="captioning", split="train", prompt_tokens=30, output_tokens=5),
    dict(request_id="r2", task_type="general_vqa", split="val", prompt_tokens=20, output_tokens=2),
]


def gpu_slug() -> str:
    """'h100', 'h200', 'a100', ... from nvidia-smi's name; 'cpu' without a GPU."""
    try:
        name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "cpu"
    for token in name.replace("-", " ").split():
        t = token.lower()
        if t[:1] in "abhlv" and t[1:].isdigit():
            return t
    return "gpu"


def commands(args, out: Path, slug: str) -> dict[str, list[str]]:
    py = sys.executable
    table = out / f"{slug}_llava_olmoe.npz" if not args.tiny else out / "cpu_tiny.npz"
    if args.tiny:
        shapes = out / "shapes.json"
        bridge = [py, "-m", "profiling_bridge", "profile", "--arch", "tiny", "--device", "cpu", "--threads", "1",
                  "--requests", str(shapes), "--out", str(table), "--grid", "vision_tokens=4,16", "top_k=1,4",
                  "active_blocks=2,4", "--warmup", "1", "--repeats", "3", "--e2e-repeats", "2", "--prefill-points",
                  "3", "--decode-points", "3", "--validate-samples", "4", "--no-progress"]
        skew = [py, "experiments/gpu_routing_skew.py", "--arch", "tiny", "--device", "cpu", "--threads", "1",
                "--repeats", "3", "--out", str(out / "routing_skew.json")]
        scaling = [py, "experiments/bench_seed_scaling.py", "--methods", "grpo", "--seeds", "1,2", "--updates", "2",
                   "--repeats", "1", "--out", str(out / "seed_scaling.json")]
        run = [py, "-m", "e5jax", "run", "--config", "experiments/e5_quick.toml", "--methods", "lut,grpo",
               "--seeds", "2", "--out", str(out / "run"), "--no-progress"]
        flags_run = [*run[:-2], str(out / "flags_run"), "--no-progress", "--overwrite"]
        engine = [*bridge[:bridge.index("--out") + 1], str(out / "engine" / "cpu_tiny_static.npz"),
                  *bridge[bridge.index("--out") + 2:], "--decode", "static"]
        engine_run = [*run[:-2], str(out / "engine" / "run"), "--no-progress", "--table"]
    else:
        bridge = [py, "-m", "profiling_bridge", "refresh", "--arch", "llava-olmoe", "--device", "cuda",
                  "--table", str(DEFAULT_TABLE.relative_to(ROOT)), "--out", str(table), "--warmup", str(args.warmup),
                  "--repeats", str(args.repeats), "--e2e-repeats", str(args.e2e_repeats),
                  "--validate-samples", str(args.validate_samples)]  # progress bar every 10 s into the log
        skew = [py, "experiments/gpu_routing_skew.py", "--arch", "llava-olmoe", "--device", "cuda",
                "--out", str(out / "routing_skew.json")]
        scaling = [py, "experiments/bench_seed_scaling.py", "--seeds", "1,1024,4,16,64,256", "--updates", "20",
                   "--repeats", "3", "--out", str(out / "seed_scaling.json")]
        run = [py, "-m", "e5jax", "run", "--out", str(out / "run"), "--no-progress"]
        flags_run = [py, "-m", "e5jax", "run", "--out", str(out / "flags_run"), "--no-progress", "--overwrite"]
        engine = [*bridge[:bridge.index("--out") + 1], str(out / "engine" / f"{slug}_llava_olmoe_graphs.npz"),
                  *bridge[bridge.index("--out") + 2:], "--decode", "graphs"]
        engine_run = [py, "-m", "e5jax", "run", "--out", str(out / "engine" / "run"), "--no-progress", "--table"]
    engine_table = engine[engine.index("--out") + 1]
    return dict(bridge=bridge, validate=[py, "-m", "e5jax", "validate", str(table), "--json"], routing_skew=skew,
                seed_scaling=scaling, run=run, flags_run=flags_run, table=[str(table)], engine=engine,
                engine_validate=[py, "-m", "e5jax", "validate", engine_table, "--json"],
                engine_run=[*engine_run, engine_table])


def env_info() -> dict:
    info = dict(python=sys.version.split()[0], platform=platform.platform(), cpus=os.cpu_count(),
                load_average=os.getloadavg())
    fields = ("name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.limit,"
              "persistence_mode,temperature.gpu")
    try:
        line = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20, check=True).stdout.splitlines()[0]
        info["nvidia_smi"] = dict(zip(fields.split(","), (x.strip() for x in line.split(","))))
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        info["nvidia_smi"] = f"unavailable ({type(e).__name__})"
    for mod in ("torch", "transformers", "jax", "jaxlib", "flax", "optax", "numpy", "scipy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - record whatever is missing
            info[mod] = f"unavailable ({type(e).__name__})"
    return info


def run_step(name: str, cmd: list[str], limit: float, log, env=None) -> dict:
    """Run ``cmd`` with a time limit; stream its output into ``log``; return its record."""
    log.write(f"\n===== {name}: {shlex.join(cmd)} (limit {limit:.0f} s)\n")
    log.flush()
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=max(limit, 1), env=env)
        rc, text = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        rc = "timeout"
        text = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    wall = time.perf_counter() - t0
    log.write(text)
    log.write(f"\n===== {name}: rc={rc} wall={wall:.1f} s\n")
    log.flush()
    print(f"[gpu_run] {name}: rc={rc} wall={wall:.1f} s", flush=True)
    return dict(command=shlex.join(cmd), rc=rc, wall_s=round(wall, 2), tail=text[-3000:], text=text)


def run_compile_summary(run_dir: Path) -> dict:
    """Per method of a finished run: compile time and its breakdown, training time, final normalized utility."""
    d = json.loads((run_dir / "e5_training_curves.json").read_text())
    return {"total_wall_time_s": d["meta"].get("total_wall_time_s"), "methods": {
        n: {"compile_time_s": m.get("compile_time_s"), "compile_breakdown_s": m.get("compile_breakdown_s"),
            "train_time_s": m.get("train_time_s"), "final_utility_norm": m["curves"]["val_utility_norm"]["mean"][-1]}
        for n, m in d["methods"].items()}}


def compile_flags_step(cmd: list[str], run_dir: Path, traces: Path, limit: float, log, env: dict) -> dict:
    """``COMPILE_VARIANTS`` one after another within ``limit`` seconds (each gets what is left over the variants
    left); XLA's compilation cache off, so every run compiles."""
    t0, rec = time.perf_counter(), {"command": shlex.join(cmd), "variants": {}}
    for i, (name, flags, trace) in enumerate(COMPILE_VARIANTS):
        left = limit - (time.perf_counter() - t0)
        if left < 5:
            rec["variants"][name] = {"rc": "skipped: no time left"}
            continue
        if trace == "fresh" and i > 0:
            subprocess.run(["rm", "-rf", str(traces / "other")], check=False)
        tdir = traces / ("first" if i == 0 or trace == "warm" else "other")
        v_env = dict(env, E5JAX_OVERHEAD="off", E5JAX_JAX_CACHE="off", E5JAX_TRACE_CACHE=str(tdir),
                     XLA_FLAGS=" ".join(x for x in (env.get("XLA_FLAGS", ""), flags) if x))
        r = run_step(f"compile_flags[{name}]", cmd, left / (len(COMPILE_VARIANTS) - i), log, v_env)
        r.pop("text")
        r.pop("command")
        r["xla_flags"] = v_env["XLA_FLAGS"]
        r["trace_cache"] = trace
        if r["rc"] == 0:
            r.update(run_compile_summary(run_dir))
        rec["variants"][name] = r
    subprocess.run(["rm", "-rf", str(run_dir), str(traces)], check=False)
    ok = [v.get("rc") == 0 for v in rec["variants"].values()]
    rec["rc"] = 0 if all(ok) else ("partial" if any(ok) else 1)
    return rec


def validate_step(name: str, cmd: list[str], log, env: dict) -> dict:
    """``e5jax validate --json`` on a table: its exit code and parsed summary (the record itself when no JSON)."""
    v = run_step(name, cmd, 120, log, env)
    text = v.pop("text")
    try:
        return dict(rc=v["rc"], summary=json.loads(text[text.index("{"):]))
    except ValueError:
        return v


def engine_step(cmds: dict, work: Path, dest: Path, limit: float, log, env: dict) -> dict:
    """The table in the engine regime, validated, then E5 on it; the table and the run's JSON/markdown outputs
    into ``dest`` (one file: the device brings back 8)."""
    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    rec = run_step("engine", cmds["engine"], limit * 0.6, log, env)
    rec.pop("text")
    table = Path(cmds["engine"][cmds["engine"].index("--out") + 1])
    if rec["rc"] == 0:
        rec["validate"] = validate_step("engine_validate", cmds["engine_validate"], log, env)
        left = limit - (time.perf_counter() - t0)
        r = run_step("engine_run", cmds["engine_run"], max(left, 1), log, dict(env, E5JAX_OVERHEAD="off"))
        r.pop("text")
        rec["run"] = r
        if r["rc"] != 0:
            rec["rc"] = "run failed"
    if table.is_file() or (work / "run").is_dir():
        rec["packed"] = pack_run(work, dest, also=(table,))
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return rec


def pack_run(run_dir: Path, dest: Path, also=()) -> list[str]:
    """The run's JSON and markdown outputs (no figures) and the files ``also`` under it into one archive."""
    names = sorted(p for p in run_dir.rglob("*") if p.is_file() and (p.suffix in (".json", ".md", ".toml")
                                                                    or p in also))
    with tarfile.open(dest, "w:gz") as tar:
        for p in names:
            tar.add(p, arcname=str(p.relative_to(run_dir)))
    return [str(p.relative_to(run_dir)) for p in names]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (at most 8 files are written)")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny arch, few seeds and updates")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma separated subset of {','.join(STEPS)}")
    ap.add_argument("--deadline-s", type=float, default=575.0, help="the whole script ends within this")
    ap.add_argument("--warmup", type=int, default=3, help="bridge: untimed passes per grid point")
    ap.add_argument("--repeats", type=int, default=10, help="bridge: timed passes per grid point")
    ap.add_argument("--e2e-repeats", type=int, default=3, help="bridge: timed passes per validation sample")
    ap.add_argument("--validate-samples", type=int, default=20, help="bridge: end-to-end validation samples")
    args = ap.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"gpu_run: error: unknown step {unknown[0]!r} (known: {', '.join(STEPS)})", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    slug = "cpu" if args.tiny else gpu_slug()
    cmds = commands(args, out, slug)
    if args.tiny:
        (out / "shapes.json").write_text(json.dumps(TINY_SHAPES))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1", MPLBACKEND="Agg", TQDM_MININTERVAL="10")
    doc = dict(schema="e5jax/gpu_run/v1", command=shlex.join([Path(sys.executable).name, *sys.argv]), tiny=args.tiny,
               gpu=slug, started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), steps={})
    summary_path = out / "gpu_run.json"

    def save():
        doc["wall_s"] = round(time.perf_counter() - t_start, 2)
        summary_path.write_text(json.dumps(doc, indent=1))

    def limit(name: str) -> float:
        left = args.deadline_s - (time.perf_counter() - t_start)
        later = sum(RESERVE[s] for s in steps[steps.index(name) + 1:])
        return min(CAPS[name] * (10 if args.tiny else 1), left - later)

    with open(out / "log.txt", "w") as log:
        for name in steps:
            if name == "env":
                doc["env"] = env_info()
                print(f"[gpu_run] env: {json.dumps(doc['env'].get('nvidia_smi'))}", flush=True)
            elif limit(name) < 5:
                doc["steps"][name] = dict(rc="skipped: no time left")
            elif name == "compile_flags":
                doc["steps"][name] = rec = compile_flags_step(cmds["flags_run"], out / "flags_run", out / "flags_traces",
                                                              limit(name), log, env)
                (out / "compile_flags.json").write_text(json.dumps(rec, indent=1))
                rec = doc["steps"][name] = {"rc": rec["rc"], "file": "compile_flags.json",
                                            "variants": {k: v.get("rc") for k, v in rec["variants"].items()}}
            elif name == "engine":
                doc["steps"]["engine"] = engine_step(cmds, out / "engine", out / "engine.tgz", limit("engine"), log, env)
            elif name == "run":
                run_env = dict(env, E5JAX_OVERHEAD="off")
                doc["steps"]["run"] = rec = run_step("run", cmds["run"], limit("run"), log, run_env)
                rec.pop("text")
                run_dir = out / "run"
                if run_dir.is_dir():
                    rec["packed"] = pack_run(run_dir, out / "run.tgz")
                    subprocess.run(["rm", "-rf", str(run_dir)], check=False)
            else:
                doc["steps"][name] = rec = run_step(name, cmds[name], limit(name), log, env)
                rec.pop("text")
                if name == "bridge" and rec["rc"] == 0:
                    rec["validate"] = validate_step("validate", cmds["validate"], log, env)
            save()
    if args.tiny:
        (out / "shapes.json").unlink(missing_ok=True)
    save()
    failed = [n for n, r in doc["steps"].items() if r.get("rc") != 0]
    print(f"[gpu_run] done in {doc['wall_s']:.0f} s; failed or skipped: {failed or 'none'} -> {out}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
