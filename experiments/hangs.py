"""The XLA-CPU hangs this lab met, reproduced in a loop: every run a fresh subprocess under a time limit, the hang rate
per setting (docs/hangs.md).

    python experiments/hangs.py [--runs N] [--only CASE[,CASE]] [--out artifacts/hangs/hang_table.json]
    python experiments/hangs.py child CASE [--variant V] [--async-off]     # one run (what the loop starts)
    python experiments/hangs.py check-lax-map    # the fix: the lab's init (lax.map on the CPU) == vmap init, bit for bit

A run is a **hang** when, after its imports, the process made no CPU progress with no runnable
thread for ``--idle-s`` seconds (a deadlock: every thread parked in a futex wait), or when it outlived ``--timeout``;
**ok** when the child printed its ``ok`` line and exited 0; **error** otherwise. Cases (each a few seconds when it
does not hang): ``init80`` (80 supervised rows initialised in one vmapped program, the reason for
``loop.init_in_blocks``), ``ppo64`` (PPO's vmapped init at 64 rows, the reason for the scheduler flag), ``qr80`` (the
same pattern without the lab: a vmapped orthogonal init), ``shared4`` (the reverted shared policy-init program run on
rows sharded over 4 fake CPU devices while a compile thread runs), ``threads`` (one init program executed from three
pool threads at once). A setting is a case, a variant of its program (``vmap`` as the lab writes it, ``lax_map``: the
rows one at a time inside the program) and environment (``NPROC``, XLA flags, async dispatch).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "e5jax_hangs_cache"
BASE_FLAGS = {"xla_cpu_multi_thread_eigen": "false", "xla_cpu_enable_concurrency_optimized_scheduler": "false"}


# ---------------------------------------------------------------- bookkeeping (pure; tests/test_hangs_script.py)

def classify(returncode: int | None, stdout: str, stalled: bool, timed_out: bool) -> str:
    """One run's outcome: 'hang' (stalled after the program started, or past the time limit), 'ok' (exit 0 and an
    ``ok`` line), else 'error'."""
    if stalled or timed_out:
        return "hang"
    if returncode == 0 and re.search(r"^ok\b", stdout, re.M):
        return "ok"
    return "error"


def summarize(outcomes: list[str]) -> dict:
    """Counts and the hang rate over the runs that did not fail for another reason (None without such runs)."""
    n = {k: outcomes.count(k) for k in ("ok", "hang", "error")}
    decided = n["ok"] + n["hang"]
    return {"runs": len(outcomes), **{f"{k}s": v for k, v in n.items()},
            "hang_rate": None if decided == 0 else n["hang"] / decided}


def last_stage(out: str) -> str:
    """The last ``stage ...`` line a child printed (where a hung run stopped); 'compile' before the first."""
    stages = re.findall(r"^stage (.+)$", out, re.M)
    return stages[-1] if stages else "compile"


def xla_flags(overrides: dict) -> str:
    """XLA_FLAGS for a setting: the lab's two package defaults (e5jax/__init__.py), then ``overrides``
    ({flag: value}) on top; every flag named so the package adds nothing."""
    flags = {**BASE_FLAGS, **overrides}
    return " ".join(f"--{k}={v}" for k, v in flags.items())


def setting_env(setting: dict, base: dict) -> dict:
    """The child's environment for a setting: ``base`` with XLA_FLAGS built from ``setting['xla']``, the fake device
    count, and ``setting['env']`` (e.g. NPROC)."""
    env = {k: v for k, v in base.items() if k not in ("XLA_FLAGS", "NPROC", "PJRT_NPROC")}
    overrides = dict(setting.get("xla", {}))
    if setting.get("devices", 1) > 1:
        overrides["xla_force_host_platform_device_count"] = str(setting["devices"])
    env["XLA_FLAGS"] = xla_flags(overrides)
    env["JAX_PLATFORMS"] = "cpu"
    if setting.get("cache", True):  # compiled programs from a cache: a run is imports + execution (the hang's part)
        env.update(JAX_COMPILATION_CACHE_DIR=str(CACHE), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.update(setting.get("env", {}))
    return env


def cpu_and_state(pid: int) -> tuple[int, bool]:
    """(utime + stime ticks of every thread of ``pid``, whether any thread is runnable); (-1, False) once gone."""
    ticks, running = 0, False
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                fields = Path(task.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            running |= fields[0] == "R"
            ticks += int(fields[11]) + int(fields[12])
    except OSError:
        return -1, False
    return ticks, running


def run_once(cmd: list[str], env: dict, timeout: float, idle_s: float, poll: float = 0.25) -> dict:
    """Run ``cmd`` once: outcome, wall seconds, and the child's stdout tail. Stalled = after the child printed
    ``exec`` (its imports done), its CPU time did not move and no thread was runnable for ``idle_s``."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
        last_ticks, last_move, stalled, timed_out, started = -2, t0, False, False, False
        while p.poll() is None:
            time.sleep(poll)
            ticks, running = cpu_and_state(p.pid)
            now = time.monotonic()
            if not started:
                log.seek(0)
                started = "exec" in log.read()
            if ticks != last_ticks or running or not started:
                last_ticks, last_move = ticks, now
            stalled = now - last_move >= idle_s
            timed_out = not stalled and now - t0 >= timeout
            if stalled or timed_out:
                p.kill()
                break
        p.wait()
        log.seek(0)
        out = log.read()
    return {"outcome": classify(p.returncode, out, stalled, timed_out), "wall_s": round(time.monotonic() - t0, 2),
            "returncode": p.returncode, "stalled": stalled, "timed_out": timed_out, "tail": out[-300:]}


# ---------------------------------------------------------------- the reproductions (child side)

def _lab(name: str, rows: int, variant: str):
    """A method's row initialisation over ``rows`` seeds as the lab wrote it before the fix (jit(vmap) of the
    method's init) or, variant ``lax_map``, the same per-row function under ``lax.map`` (one row at a time, as
    ``engine.make_train(...).init`` now does on the CPU)."""
    import jax

    from e5jax import engine
    from e5jax import env as E
    from e5jax.config import load_config
    from e5jax.methods import METHODS
    from e5jax.table import load_default_table

    run, cfgs = load_config(ROOT / "experiments" / "e5_quick.toml")
    env = E.env_from_run(run, load_default_table())
    keys = engine.seed_keys(0, rows)
    method, cfg = METHODS[name], cfgs[name]
    if variant == "lax_map":
        prog = jax.jit(lambda k, e: jax.lax.map(lambda kk: method.init(kk, e, cfg), k))
    else:
        prog = jax.jit(lambda k, e: jax.vmap(lambda kk: method.init(kk, e, cfg))(k))
    return prog.lower(keys, env).compile(), (keys, env)


def _policy_program(variant: str):
    """The reverted shared policy-init program (23ea1d5 common.policy_params_for_rows): every row's initial policy
    (flax MLP, orthogonal init) for the learned methods' network, and its env."""
    import jax
    import jax.numpy as jnp

    from e5jax import env as E
    from e5jax import policy as P
    from e5jax.config import load_config
    from e5jax.table import load_default_table

    run, cfgs = load_config(ROOT / "experiments" / "e5_quick.toml")
    env = E.env_from_run(run, load_default_table())
    cfg = cfgs["ppo"]
    net = P.MLP(tuple(cfg.hidden), tuple(P.head_sizes(env, cfg.head_kind)), ar=tuple(P.ar_sizes(env, cfg.head_kind)))

    def one(key):
        return net.init(jax.random.split(key)[0], jnp.zeros((1, int(env.obs_dim))))

    rows = (lambda k: jax.lax.map(one, k)) if variant == "lax_map" else jax.vmap(one)
    return jax.jit(rows), run, cfgs, env


def _comm(task: str) -> str:
    try:
        return Path(task, "comm").read_text().strip()
    except OSError:  # the thread ended meanwhile
        return ""


def child(case: str, variant: str) -> None:
    import jax

    t0 = time.perf_counter()
    print("exec", flush=True)  # from here a stall (no CPU time, nothing runnable) is a hang: compiles are busy
    if case in ("init80", "ppo64"):
        prog, args = _lab("supervised" if case == "init80" else "ppo", 80 if case == "init80" else 64, variant)
        print("stage execute", flush=True)
        jax.block_until_ready(prog(*args))
    elif case == "qr80":
        import flax.linen as nn
        import jax.numpy as jnp

        def one(key):  # a 3-layer MLP's orthogonal kernels, as flax draws them
            ks = jax.random.split(key, 3)
            return [nn.initializers.orthogonal(jnp.sqrt(2.0))(k, s) for k, s in zip(ks, [(40, 128), (128, 64),
                                                                                        (64, 100)])]

        f = jax.vmap(one) if variant != "lax_map" else (lambda k: jax.lax.map(one, k))
        keys = jax.random.split(jax.random.PRNGKey(0), 80)
        prog = jax.jit(f).lower(keys).compile()
        print("stage execute", flush=True)
        jax.block_until_ready(prog(keys))
    elif case == "shared4":
        import concurrent.futures

        from e5jax import engine
        from e5jax.methods import METHODS

        shared, run, cfgs, env = _policy_program(variant)
        init, args = _lab("supervised", 8, variant)  # 8 rows sharded over the 4 devices
        print("stage init", flush=True)
        states = jax.block_until_ready(init(*args))
        tr = engine.make_train(METHODS["supervised"], cfgs["supervised"], run.eval_every)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the compile pool: an evaluation program compiling
            fut = pool.submit(lambda: tr.evaluate.lower(states, env).compile())
            for i in range(8):  # the shared program executed in the main thread while the compile runs
                print(f"stage shared {i}", flush=True)
                jax.block_until_ready(shared(engine.shard_seeds(jax.random.split(jax.random.PRNGKey(i), 8))))
            fut.result()
    elif case == "threads":
        import concurrent.futures

        prog, args = _lab("supervised", 24, variant)
        print("stage execute", flush=True)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # one program executed from 3 pool threads at once
            list(pool.map(lambda i: jax.block_until_ready(prog(*args)), range(3)))
    else:
        raise SystemExit(f"unknown case {case!r}")
    eigen = sum(1 for t in os.scandir("/proc/self/task") if _comm(t.path) == "tf_XLAEigen")
    print(f"ok {time.perf_counter() - t0:.2f}s intra_op_threads={eigen} devices={len(jax.devices())} "
          f"jax={jax.__version__}", flush=True)


def check_lax_map(rows: int = 12) -> bool:
    """The fix: ``Trainer.init`` (rows one at a time on the CPU, ``engine.map_rows``) gives every learned method
    the vmapped init's states bit for bit, without and with traced hyperparameters. Prints a line per check."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from e5jax import engine
    from e5jax import env as E
    from e5jax.config import load_config
    from e5jax.methods import METHODS
    from e5jax.table import load_default_table

    run, cfgs = load_config(ROOT / "experiments" / "e5_quick.toml")
    env = E.env_from_run(run, load_default_table())
    keys = engine.seed_keys(0, rows)
    same_all = True
    for name in ("supervised", "ppo", "dpo", "grpo"):
        m, cfg = METHODS[name], cfgs[name]
        tr = engine.make_train(m, cfg, run.eval_every)
        vmapped = jax.jit(lambda k, e, h=None: jax.vmap(lambda kk, hh: engine.with_hp(m.init(kk, e, cfg), hh))(k, h))
        traced = sorted(getattr(m.init(keys[0], env, cfg), "hp", None) or {})[:2]
        for hp in (None, {k: jnp.linspace(0.01, 0.1, rows) for k in traced} or None):
            a, b = (jax.tree_util.tree_leaves(x) for x in (tr.init(keys, env, hp), vmapped(keys, env, hp)))
            same = len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
            same_all &= same
            print(f"{name} hp={None if hp is None else sorted(hp)} leaves={len(a)} bit-identical={same}", flush=True)
    return same_all


# ---------------------------------------------------------------- the settings and the loop

def S(case, variant="vmap", devices=1, xla=None, env=None, async_off=False, label="", cache=None):
    """A setting; ``cache``: load compiled programs from a persistent cache (default: every case but shared4, whose
    compile thread must really compile while the main thread executes)."""
    return {"case": case, "variant": variant, "devices": devices, "xla": xla or {}, "env": env or {},
            "async_off": async_off, "label": label, "cache": case != "shared4" if cache is None else cache}


SETTINGS = [
    S("init80", label="lab default (package flags)"),
    S("init80", env={"NPROC": "1"}, label="NPROC=1"),
    S("init80", env={"NPROC": "8"}, label="NPROC=8"),
    S("init80", xla={"xla_cpu_multi_thread_eigen": "true"}, label="Eigen multithreading on"),
    S("init80", async_off=True, label="async dispatch off"),
    S("init80", xla={"xla_cpu_experimental_ynn_fusion_type": ""}, label="ynn fusion off"),
    S("init80", variant="lax_map", label="rows under lax.map"),
    S("ppo64", label="lab default (scheduler off)"),
    S("ppo64", xla={"xla_cpu_enable_concurrency_optimized_scheduler": "true"}, label="concurrency scheduler on"),
    S("ppo64", xla={"xla_cpu_enable_concurrency_optimized_scheduler": "true"}, env={"NPROC": "1"},
      label="scheduler on, NPROC=1"),
    S("ppo64", xla={"xla_cpu_enable_concurrency_optimized_scheduler": "true"}, variant="lax_map",
      label="scheduler on, lax.map"),
    S("qr80", label="plain jax vmap(orthogonal init)"),
    S("qr80", env={"NPROC": "1"}, label="NPROC=1"),
    S("qr80", variant="lax_map", label="lax.map"),
    S("shared4", devices=4, label="4 fake devices"),
    S("shared4", devices=4, env={"NPROC": "8"}, label="4 fake devices, NPROC=8"),
    S("shared4", devices=4, variant="lax_map", label="4 fake devices, lax.map"),
    S("threads", label="an init from 3 pool threads"),
    S("threads", env={"NPROC": "1"}, label="pool threads, NPROC=1"),
    S("threads", variant="lax_map", label="pool threads, lax.map"),
]


def setting_name(s: dict) -> str:
    parts = [s["case"], s["variant"], f"dev{s['devices']}"] + [f"{k}={v}" for k, v in sorted(s["env"].items())]
    parts += [f"{k.replace('xla_cpu_', '')}={v or 'none'}" for k, v in sorted(s["xla"].items())]
    return " ".join(parts + (["async_off"] if s["async_off"] else []) + ([] if s["cache"] else ["no_cache"]))


def child_cmd(s: dict) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "child", s["case"], "--variant", s["variant"]] + \
        (["--async-off"] if s["async_off"] else [])


def host_meta() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    import jax
    import jaxlib
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "python": platform.python_version()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--only", default="", help="comma-separated setting indices or case names")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per run (normal runs: 8-20 s)")
    ap.add_argument("--idle-s", type=float, default=6.0)
    ap.add_argument("--stop-after-hangs", type=int, default=0, help="stop a setting after this many hangs (0: never)")
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "hangs" / "hang_table.json"))
    args = ap.parse_args(argv)
    if args.runs < 1 or args.timeout <= 0 or args.idle_s <= 0:
        print("hangs.py: --runs, --timeout and --idle-s must be positive", file=sys.stderr)
        return 2
    picks = [p.strip() for p in args.only.split(",") if p.strip()]
    chosen = [(i, s) for i, s in enumerate(SETTINGS) if not picks or str(i) in picks or s["case"] in picks]
    if not chosen:
        print(f"hangs.py: --only {args.only!r} names no setting (0-{len(SETTINGS) - 1} or a case)", file=sys.stderr)
        return 2
    out = Path(args.out)
    table = {"rows": {}}
    table["meta"] = {**host_meta(), "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "timeout_s": args.timeout, "idle_s": args.idle_s,
                     "command": "nice -n 19 " + " ".join([Path(sys.executable).name, "experiments/hangs.py",
                                                          *(argv if argv is not None else sys.argv[1:])])}
    for i, s in chosen:
        name = setting_name(s)
        env = setting_env(s, dict(os.environ))
        runs, load0 = [], os.getloadavg()
        for r in range(args.runs):
            res = run_once(child_cmd(s), env, args.timeout, args.idle_s)
            runs.append(res)
            print(f"[{i}] {name} run {r + 1}/{args.runs}: {res['outcome']} {res['wall_s']}s", file=sys.stderr,
                  flush=True)
            table = write_row(out, table["meta"], name, row_of(i, s, env, runs, load0, table["meta"]["jax"]))
            if args.stop_after_hangs and sum(x["outcome"] == "hang" for x in runs) >= args.stop_after_hangs:
                break
    print_table(table)
    return 0


def row_of(i: int, s: dict, env: dict, runs: list, load0, jax_version: str) -> dict:
    """A setting's table row from its runs so far (written after every run: a loop stopped early keeps them)."""
    return {"index": i, "label": s["label"], "setting": s, "xla_flags": env["XLA_FLAGS"], "env": s["env"],
            "child": " ".join(child_cmd(s)[1:]).replace(str(ROOT) + "/", ""),
            **summarize([x["outcome"] for x in runs]), "stalls": sum(x["stalled"] for x in runs),
            "timeouts": sum(x["timed_out"] for x in runs),
            "ok_wall_s": sorted(x["wall_s"] for x in runs if x["outcome"] == "ok"),
            "ok_tail": next((x["tail"].strip().splitlines()[-1] for x in runs if x["outcome"] == "ok"), None),
            "error_tails": [x["tail"] for x in runs if x["outcome"] == "error"][:2],
            "hang_stages": sorted(last_stage(x["tail"]) for x in runs if x["outcome"] == "hang"),
            "loadavg_before": load0, "loadavg_after": os.getloadavg(), "jax": jax_version}


def write_row(out: Path, meta: dict, name: str, row: dict) -> dict:
    """Add one setting's row to the table at ``out`` (read, update, write under a lock: loops may run side by side
    on different settings); returns the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        table = json.loads(out.read_text()) if out.exists() else {"rows": {}}
        commands = table.get("meta", {}).get("commands", [])
        table["meta"] = {**meta, "commands": commands + [meta["command"]] * (meta["command"] not in commands)}
        table["rows"][name] = {**row, "command": meta["command"]}
        out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return table


def print_table(table: dict) -> None:
    print(f"{'#':>2} {'setting':<70} {'runs':>4} {'hangs':>5} {'err':>3} {'rate':>5}  label")
    for name, r in sorted(table["rows"].items(), key=lambda kv: kv[1]["index"]):
        rate = "-" if r["hang_rate"] is None else f"{r['hang_rate']:.2f}"
        print(f"{r['index']:>2} {name:<70} {r['runs']:>4} {r['hangs']:>5} {r['errors']:>3} {rate:>5}  {r['label']}")


if __name__ == "__main__":
    if sys.argv[1:] == ["check-lax-map"]:
        sys.exit(0 if check_lax_map() else 1)
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        cp = argparse.ArgumentParser()
        cp.add_argument("case")
        cp.add_argument("--variant", default="vmap", choices=("vmap", "lax_map"))
        cp.add_argument("--async-off", action="store_true")
        a = cp.parse_args(sys.argv[2:])
        if a.async_off:
            import jax
            jax.config.update("jax_cpu_enable_async_dispatch", False)
        child(a.case, a.variant)
    else:
        sys.exit(main())
