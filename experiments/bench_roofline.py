"""The lab against the machine: FLOPs per update, achieved FLOP/s vs the measured matmul peak, where the time
goes, and what drives compile time (issue #6).

1. peak: median time of a large float32 ``jnp.dot`` (n = 1024, 2048) -> GFLOP/s (the best size is the peak);
2. FLOPs per env step of each learned method's update: matmul FLOPs counted from the layer shapes (PPO, GRPO:
   rollout, forward+backward of the 4 x 4 minibatch steps, reference forward, per-update metrics), and XLA's
   ``cost_analysis()`` of the update compiled with its minibatch loop unrolled (XLA's CPU cost analysis counts a
   while-loop body once, so the scanned program under-reports by the trip count; both are recorded);
3. achieved FLOP/s of the update step: ``jit(vmap(scan(update)))`` over S seeds -> efficiency in % of the peak;
4. profile by ablation: the same program with one piece removed or replaced (apply_if_finite, per-update
   metrics, KL/reference forward, sampling, minibatch shuffling, Adam+clip, the whole SGD phase); the time
   saved is that piece's cost; plus an HLO op census of the compiled update;
5. compile time per method and program (init, chunk, evaluate), and of chunk variants (no evaluation, no
   apply_if_finite, one flat SGD scan instead of nested scans, no per-update metrics) and XLA flags, measured
   cold (compilation cache off);
6. ``--full-run``: the default ``e5jax run`` end to end (compilation cache off), against the 120 s target.

    python experiments/bench_roofline.py              # ~10 min on the 2-core CPU
    python experiments/bench_roofline.py --full-run   # + the default e5jax run (~2 min)
    python experiments/bench_roofline.py --quick      # smoke run
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as B  # noqa: E402
from e5jax import engine  # noqa: E402
from e5jax import env as E  # noqa: E402
from e5jax import policy as P  # noqa: E402
from e5jax.io import write_json  # noqa: E402
from e5jax.methods import METHODS  # noqa: E402
from e5jax.methods import common as C  # noqa: E402

LEARNED = ("supervised", "ppo", "dpo", "grpo")


# ----------------------------------------------------------------------------- 1. peak
def matmul_peak(sizes=(1024, 2048), reps: int = 10) -> dict:
    out = {}
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
        f = jax.jit(jnp.dot)
        ts = B.timed(f, a, b, repeats=reps, warmup=1)
        out[str(n)] = {"median_s": B.median(ts), "gflops_median": 2 * n**3 / B.median(ts) / 1e9,
                       "gflops_best": 2 * n**3 / min(ts) / 1e9}
    peak = max(v["gflops_median"] for v in out.values())
    return {"sizes": out, "peak_gflops": peak, "how": "float32 jnp.dot n x n, median of reps; peak = best size"}


def small_matmul_rates(S: int, shapes, iters: int = 400, reps: int = 3) -> dict:
    """GFLOP/s of the lab's own matmul shapes, S seeds batched (as vmap emits them), in a scan of ``iters``."""
    out = {}
    for m, k, n in shapes:
        a = jax.random.normal(jax.random.PRNGKey(0), (S, m, k))
        b = jax.random.normal(jax.random.PRNGKey(1), (S, k, n)) * 0.01

        def prog(a, b):
            def body(carry, _):  # the operand depends on the carry: no loop-invariant hoisting
                c, acc = carry
                return (c * 0.999, acc + jnp.einsum("smk,skn->smn", c, b).sum()), None

            return jax.lax.scan(body, (a, jnp.zeros(())), None, length=iters)[0]

        f = jax.jit(prog)
        ts = B.timed(f, a, b, repeats=reps, warmup=1)
        fl = 2.0 * S * m * k * n * iters
        out[f"{m}x{k}x{n}"] = {"gflops": fl / B.median(ts) / 1e9, "us_per_dot": B.median(ts) / iters * 1e6}
    return out


def mlp_floor(name: str, cfg, env, S: int, U: int, repeats: int) -> dict:
    """The update's networks alone: the same number of minibatch forward+backward passes (16 x 64 rows, actor,
    plus critic for PPO) and an SGD step, nothing else; S seeds vmapped, scanned over U updates."""
    D = env.obs_dim
    nets = [P.MLP(cfg.hidden, tuple(env.knob_sizes))] + ([P.MLP(cfg.hidden, (1,), head_scale=1.0)] if name == "ppo" else [])
    steps = cfg.epochs * cfg.minibatches
    mb = cfg.env_steps_per_update // cfg.minibatches

    def init(k):
        return [n.init(jax.random.fold_in(k, i), jnp.zeros((1, D))) for i, n in enumerate(nets)]

    def loss(ps, x):
        return sum(sum(jnp.sum(z) for z in n.apply(p, x)) for n, p in zip(nets, ps))

    def one(ps, k):
        xs = jax.random.normal(k, (U * steps, mb, D))

        def body(ps, x):
            g = jax.grad(loss)(ps, x)
            return jax.tree_util.tree_map(lambda p, g: p - 1e-6 * g, ps, g), None

        return jax.lax.scan(body, ps, xs)[0]

    keys = engine.seed_keys(0, S)
    ps = jax.block_until_ready(jax.jit(lambda ks: jax.lax.map(init, ks))(keys))
    f = jax.jit(jax.vmap(one)).lower(ps, keys).compile()
    ts = B.timed(f, ps, keys, repeats=repeats, warmup=1)
    macs = [dense_macs(D, cfg.hidden, sum(env.knob_sizes))] + ([dense_macs(D, cfg.hidden, 1)] if name == "ppo" else [])
    fl = steps * sum(fwd_bwd(mb, m) for m in macs)
    sec = B.median(ts) / (S * U)
    return {"ms_per_seed_update": sec * 1e3, "matmul_gflops": fl / sec / 1e9, "matmul_flops_per_update": fl}


# ----------------------------------------------------------------------------- 2. FLOPs
def dense_macs(d_in: int, hidden, d_out: int) -> list[int]:
    dims = [d_in, *hidden, d_out]
    return [a * b for a, b in zip(dims[:-1], dims[1:])]


def fwd(n, macs) -> float:
    return 2.0 * n * sum(macs)


def fwd_bwd(n, macs) -> float:
    """forward + weight gradients + input gradients of every layer but the first."""
    return 2.0 * n * (2 * sum(macs) + sum(macs[1:]))


def analytic_flops(name: str, cfg, env, eval_every: int) -> dict:
    """Matmul FLOPs per update (one seed), by phase, from the layer shapes."""
    D, H = env.obs_dim, tuple(cfg.hidden)
    actor = dense_macs(D, H, sum(env.knob_sizes))
    critic = dense_macs(D, H, 1)
    N, mb, steps = cfg.env_steps_per_update, cfg.env_steps_per_update // cfg.minibatches, cfg.epochs * cfg.minibatches
    R_eval = env.budgets.shape[0] * env.val_idx.shape[0]
    if name == "ppo":
        ph = {
            "rollout (actor+critic fwd, 256 rows)": fwd(N, actor) + fwd(N, critic),
            "sgd fwd+bwd (16 x 64 rows, actor+critic)": steps * (fwd_bwd(mb, actor) + fwd_bwd(mb, critic)),
            "metrics (actor+ref fwd, 256 rows)": 2 * fwd(N, actor),
        }
    elif name == "grpo":
        n = N // cfg.group_size
        ph = {
            "rollout (actor fwd, 32 rows)": fwd(n, actor),
            "sgd fwd+bwd (16 x 64 rows, actor)": steps * fwd_bwd(mb, actor),
            "ref fwd for KL in the loss (16 x 64 rows; beta = 0)": steps * fwd(mb, actor),
            "metrics (actor+ref fwd, 32 rows)": 2 * fwd(n, actor),
        }
    else:
        return {}
    per_update = sum(ph.values())
    return {
        "phases": ph,
        "per_update": per_update,
        "per_env_step": per_update / METHODS[name].steps_per_update(cfg, env),
        "eval_per_chunk (greedy + probs fwd of the val grid)": 2 * fwd(R_eval, actor),
        "per_update_incl_eval": per_update + 2 * fwd(R_eval, actor) / eval_every,
    }


def sgd_epochs_unrolled(key, state, batch, loss_fn, num_items):
    """``common.sgd_epochs`` with Python loops instead of scans (same math): for XLA's FLOP count only."""
    cfg = state.cfg
    tx = C.make_optimizer(cfg, state.hp["lr"])
    mb = num_items // cfg.minibatches
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    params, opt_state = state.params, state.opt_state
    for k in jax.random.split(key, cfg.epochs):
        perm = jax.random.permutation(k, num_items)[: mb * cfg.minibatches].reshape(cfg.minibatches, mb)
        for i in range(cfg.minibatches):
            minibatch = jax.tree_util.tree_map(lambda x: x[perm[i]], batch)
            (loss, aux), grads = grad_fn(params, minibatch)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
    return state.replace(params=params, opt_state=opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}


def sgd_epochs_flat(key, state, batch, loss_fn, num_items):
    """``common.sgd_epochs`` with one scan over epochs x minibatches steps (same keys, same math)."""
    cfg = state.cfg
    tx = C.make_optimizer(cfg, state.hp["lr"])
    mb = num_items // cfg.minibatches
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def one_step(carry, idx):
        params, opt_state = carry
        minibatch = jax.tree_util.tree_map(lambda x: x[idx], batch)
        (loss, aux), grads = grad_fn(params, minibatch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    perms = jax.vmap(lambda k: jax.random.permutation(k, num_items)[: mb * cfg.minibatches].reshape(cfg.minibatches, mb))(
        jax.random.split(key, cfg.epochs)).reshape(cfg.epochs * cfg.minibatches, mb)
    (params, opt_state), metrics = jax.lax.scan(one_step, (state.params, state.opt_state), perms)
    return state.replace(params=params, opt_state=opt_state), jax.tree_util.tree_map(jnp.mean, metrics)


def sgd_epochs_no_shuffle(key, state, batch, loss_fn, num_items):
    """``common.sgd_epochs`` with contiguous minibatches (no permutation, slices instead of gathers)."""
    cfg = state.cfg
    tx = C.make_optimizer(cfg, state.hp["lr"])
    mb = num_items // cfg.minibatches
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    mbs = jax.tree_util.tree_map(lambda x: x[: mb * cfg.minibatches].reshape((cfg.minibatches, mb) + x.shape[1:]), batch)

    def one_step(carry, minibatch):
        params, opt_state = carry
        (loss, aux), grads = grad_fn(params, minibatch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}

    def one_epoch(carry, _):
        return jax.lax.scan(one_step, carry, mbs)

    (params, opt_state), metrics = jax.lax.scan(one_epoch, (state.params, state.opt_state), None, length=cfg.epochs)
    return state.replace(params=params, opt_state=opt_state), jax.tree_util.tree_map(jnp.mean, metrics)


def sgd_none(key, state, batch, loss_fn, num_items):
    return state, {"loss": jnp.zeros(()), "grad_norm": jnp.zeros(())}


def minimal_metrics(state, policy_params, obs, train_utility, env_steps, sgd_metrics):
    return {"train_utility": train_utility, "env_steps": jnp.asarray(env_steps, jnp.float32),
            "num_failed_updates": jnp.zeros(()), **sgd_metrics}


def plain_optimizer(cfg):
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr, eps=cfg.adam_eps))


def flat_optimizer(cfg):
    """The lab's optimizer on one flattened parameter vector (``optax.flatten``): same math, fewer, larger kernels."""
    inner = optax.flatten(optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr, eps=cfg.adam_eps)))
    return optax.apply_if_finite(inner, max_consecutive_errors=2**30)


def sgd_optimizer(cfg):
    return optax.sgd(cfg.lr)


def zero_kl(lp, lq):
    return jnp.zeros(lp[0].shape[:-1])


# name -> the update's replaced pieces (common.Program), traced under common.variant (the lab traces under Program()).
# An optimizer without apply_if_finite counts no failed updates (common.num_failed_updates gives 0).
VARIANTS = {
    "full": C.Program(),
    "no_apply_if_finite": C.Program(optimizer=plain_optimizer),
    "no_per_update_metrics": C.Program(metrics=minimal_metrics),
    "no_kl (loss ref fwd + metric)": C.Program(kl=zero_kl),  # the KL metric; GRPO's loss has no ref fwd at beta = 0
    "no minibatch shuffle/gather": C.Program(sgd=sgd_epochs_no_shuffle),
    "sgd instead of clip+adam+if_finite": C.Program(optimizer=sgd_optimizer),
    "no sgd phase (rollout + metrics)": C.Program(sgd=sgd_none),
    "flat sgd scan": C.Program(sgd=sgd_epochs_flat),
    "optax.flatten(clip+adam) in apply_if_finite": C.Program(optimizer=flat_optimizer),
}
PROFILE_VARIANTS = [v for v in VARIANTS if not v.startswith("optax.flatten")]
EXTRA_VARIANTS = ["full", "optax.flatten(clip+adam) in apply_if_finite", "no_kl (loss ref fwd + metric)"]
COMPILE_VARIANTS = ["full", "no_apply_if_finite", "flat sgd scan", "no_per_update_metrics"]


def with_program(states, program: C.Program):
    """Vmapped ``states`` for ``program``'s pieces: the optimizer state re-initialised when it replaces the optimizer
    (trace the update under ``C.variant(program)``)."""
    if program.optimizer is not None:
        states = states.replace(opt_state=jax.vmap(program.optimizer(states.cfg).init)(states.params))
    return states


def update_program(method, U: int):
    """jit(vmap(scan of U updates)) over the seed axis: the update step alone (no evaluation)."""

    def one(s, k, env):
        return jax.lax.scan(lambda s, k: method.update(s, env, k), s, jax.random.split(k, U))

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None)))


def xla_flops(name: str, cfg, env) -> dict:
    """XLA cost analysis of one update (one seed): as scanned (loop bodies counted once) and unrolled."""
    method = METHODS[name]
    key = jax.random.PRNGKey(0)
    state = jax.jit(lambda k, env: method.init(k, env, cfg))(key, env)
    out = {}
    for tag, program in (("scanned (as in the lab)", C.Program()), ("minibatch loop unrolled", C.Program(sgd=sgd_epochs_unrolled))):
        t = time.perf_counter()
        with C.variant(program):
            comp = jax.jit(lambda s, k, env: method.update(s, env, k)).lower(state, key, env).compile()
        ca = comp.cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        out[tag] = {"flops": float(ca.get("flops", np.nan)), "transcendentals": float(ca.get("transcendentals", np.nan)),
                    "bytes_accessed": float(ca.get("bytes accessed", np.nan)), "compile_s": time.perf_counter() - t}
    out["per_env_step_unrolled"] = out["minibatch loop unrolled"]["flops"] / method.steps_per_update(cfg, env)
    return out


def hlo_census(compiled) -> dict:
    txt = compiled.as_text()
    # "%x = f32[2,3]{1,0} op(" or "%w = (s32[], f32[..]) while(": skip the (possibly tuple) shape
    ops = collections.Counter(re.findall(r"=\s+(?:\([^()]*\)|\S+)\s+([a-z][\w-]*)\(", txt))
    keep = ("fusion", "dot", "while", "conditional", "gather", "scatter", "sort", "custom-call", "rng-bit-generator",
            "dynamic-slice", "dynamic-update-slice", "copy", "call", "reduce", "transpose")
    return {"instructions": int(sum(ops.values())), "by_op": {k: int(ops.get(k, 0)) for k in keep},
            "custom_call_targets": sorted(set(re.findall(r'custom_call_target="([^"]+)"', txt)))}


def variant_states(name, cfg, env, S, program: C.Program, init_cache):
    """The initial states of S seeds (cached per method and S) running ``program``, and their keys."""
    keys = engine.seed_keys(0, S)
    if (name, S) not in init_cache:
        init_cache[(name, S)] = B.lab_init(METHODS[name], cfg, keys, env)
    return with_program(init_cache[(name, S)], program), keys


def compile_update_variant(name, cfg, env, S, U, program: C.Program, init_cache):
    """(compiled program, its initial states, keys, compile seconds) of the update step running ``program``."""
    states, keys = variant_states(name, cfg, env, S, program, init_cache)
    t = time.perf_counter()
    with C.variant(program):
        comp = update_program(METHODS[name], U).lower(states, keys, env).compile()
    return comp, states, keys, time.perf_counter() - t


def round_robin(programs: dict, rounds: int) -> dict:
    """Execute every compiled program once per round, ``rounds`` times: seconds per program (drift-fair)."""
    ts = {k: [] for k in programs}
    for _ in range(rounds):
        for k, (comp, states, keys) in programs.items():
            t = time.perf_counter()
            jax.block_until_ready(comp(states, keys, _ENV[0]))
            ts[k].append(time.perf_counter() - t)
    return ts


_ENV = [None]


def time_update_variant(name, cfg, env, S, U, repeats, program: C.Program, init_cache) -> dict:
    comp, states, keys, compile_s = compile_update_variant(name, cfg, env, S, U, program, init_cache)
    ts = B.timed(comp, states, keys, env, repeats=repeats)
    return {"compile_s": compile_s, "exec_s": ts, "exec_s_median": B.median(ts),
            "ms_per_seed_update": B.median(ts) / (S * U) * 1e3, "compiled": comp}


# ----------------------------------------------------------------------------- 5. compile time
def compile_times(name, cfg, env, S, eval_every) -> dict:
    """Cold lower and compile time of each program ``e5jax run`` builds for a method (S seeds)."""
    method = METHODS[name]
    trainer = engine.make_train(method, cfg, eval_every)
    keys = engine.seed_keys(0, S)
    out = {}
    shared = trainer.shared(keys, env)  # the policy-init program shared between methods, not timed here
    t = time.perf_counter()
    low = trainer.init_program.lower(keys, env, None, shared)
    out["init_lower_s"] = time.perf_counter() - t
    t = time.perf_counter()
    init_c = low.compile()
    out["init_compile_s"] = time.perf_counter() - t
    states = init_c(keys, env, None, shared)
    t = time.perf_counter()
    low = trainer.chunk.lower(states, keys, env)
    out["chunk_lower_s"] = time.perf_counter() - t
    t = time.perf_counter()
    low.compile()
    out["chunk_compile_s"] = time.perf_counter() - t
    t = time.perf_counter()
    trainer.evaluate.lower(states, env).compile()
    out["evaluate_lower_compile_s"] = time.perf_counter() - t
    t = time.perf_counter()
    update_program(method, eval_every).lower(states, keys, env).compile()
    out["chunk_without_eval_lower_compile_s"] = time.perf_counter() - t
    # the init alternatives: one seed, not vmapped (stack S calls), and lax.map over seeds
    t = time.perf_counter()
    jax.jit(lambda k, env: method.init(k, env, cfg)).lower(keys[0], env).compile()
    out["init_single_seed_lower_compile_s"] = time.perf_counter() - t
    t = time.perf_counter()
    jax.jit(lambda ks, env: jax.lax.map(lambda k: method.init(k, env, cfg), ks)).lower(keys, env).compile()
    out["init_lax_map_lower_compile_s"] = time.perf_counter() - t
    return out


def chunk_variant_compile(name, cfg, env, S, eval_every, program: C.Program) -> dict:
    method = METHODS[name]
    keys = engine.seed_keys(0, S)
    trainer = engine.make_train(method, cfg, eval_every)
    states = jax.eval_shape(lambda k: with_program(jax.vmap(lambda kk: method.init(kk, env, cfg))(k), program), keys)
    t = time.perf_counter()
    with C.variant(program):
        low = trainer.chunk.lower(states, keys, env)
    lower_s = time.perf_counter() - t
    t = time.perf_counter()
    low.compile()
    return {"lower_s": lower_s, "compile_s": time.perf_counter() - t}


FLAG_WORKER = r"""
import sys, time, json, jax
sys.path.insert(0, {here!r})
import benchlib as B
from e5jax import engine
from e5jax.methods import METHODS
B.setup_jax()
run, cfgs, env, refs = B.load_env()
name, S, U = {name!r}, {S}, {U}
m = METHODS[name]; tr = engine.make_train(m, cfgs[name], U); keys = engine.seed_keys(0, S)
st = B.lab_init(m, cfgs[name], keys, env)
t = time.perf_counter(); c = tr.chunk.lower(st, keys, env).compile(); cs = time.perf_counter() - t
ts = []
for _ in range({repeats}):
    t = time.perf_counter(); jax.block_until_ready(c(st, engine.chunk_keys(keys, 0), env)); ts.append(time.perf_counter() - t)
print("RESULT" + json.dumps({{"compile_s": cs, "exec_s": ts}}))
"""


def flag_sweep(name, S, U, repeats, flags) -> dict:
    out = {}
    for fl in flags:
        env_vars = dict(os.environ, XLA_FLAGS=fl, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        code = FLAG_WORKER.format(here=str(Path(__file__).resolve().parent), name=name, S=S, U=U, repeats=repeats)
        p = subprocess.run([sys.executable, "-c", code], env=env_vars, capture_output=True, text=True, timeout=600)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")), None)
        if line is None:
            out[fl or "(default)"] = {"error": p.stderr[-500:]}
            continue
        r = json.loads(line[6:])
        r["exec_s_median"] = B.median(r["exec_s"])
        out[fl or "(default)"] = r
    return out


def parallel_compile(cfgs, env, S: int, eval_every: int, methods=LEARNED, workers: int = 2) -> dict:
    """Compile the chunk programs of ``methods`` one after the other, then (freshly lowered) in a thread pool:
    XLA compilation releases the GIL, so independent programs compile concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    def lowered():
        out = []
        for name in methods:
            m = METHODS[name]
            keys = engine.seed_keys(0, S)
            states = jax.eval_shape(lambda k, m=m, cfg=cfgs[name]: jax.vmap(lambda kk: m.init(kk, env, cfg))(k), keys)
            out.append(engine.make_train(m, cfgs[name], eval_every).chunk.lower(states, keys, env))
        return out

    res = {}
    for rnd in range(2):  # sequential, parallel, sequential, parallel
        low = lowered()
        t = time.perf_counter()
        for lo in low:
            lo.compile()
        res.setdefault("sequential_s", []).append(time.perf_counter() - t)
        low = lowered()
        t = time.perf_counter()
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(lambda lo: lo.compile(), low))
        res.setdefault("parallel_s", []).append(time.perf_counter() - t)
    res.update({"methods": list(methods), "workers": workers, "seeds": S, "eval_every": eval_every,
                "sequential_s_median": B.median(res["sequential_s"]), "parallel_s_median": B.median(res["parallel_s"])})
    return res


def full_run(timeout: int = 900, extra_env: dict | None = None) -> dict:
    """The default ``e5jax run`` end to end, compilation cache off."""
    exe = Path(sys.executable).with_name("e5jax")
    with tempfile.TemporaryDirectory() as d:
        env_vars = dict(os.environ, E5JAX_JAX_CACHE="off", **(extra_env or {}))
        t = time.perf_counter()
        p = subprocess.run([str(exe), "run", "--out", d, "--no-progress"], env=env_vars, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t
        extra = " ".join(f"{k}={v}" for k, v in (extra_env or {}).items())
        out = {"command": f"E5JAX_JAX_CACHE=off {extra} e5jax run --out TMP --no-progress".replace("  ", " "),
               "returncode": p.returncode, "load_average_before": os.getloadavg(),
               "process_wall_s": wall, "stdout_tail": p.stdout[-2500:]}
        f = Path(d) / "e5_training_curves.json"
        if f.is_file():
            doc = json.loads(f.read_text())
            out["total_wall_time_s (training loop, from the run's meta)"] = doc["meta"].get("total_wall_time_s")
            out["overhead_analysis_s (from the run's meta)"] = doc["meta"].get("overhead_analysis_s")
            out["per_method"] = {m: {"compile_time_s (init+chunk)": v["compile_time_s"], "train_time_s": v["train_time_s"]}
                                 for m, v in doc["methods"].items()}
    out["target_s"] = 120.0
    out["target_met"] = wall <= 120.0
    return out


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="ppo,grpo", help="methods for throughput, FLOP efficiency and the profile")
    ap.add_argument("--seeds", default="5,64", help="S for the achieved-FLOP/s measurement (first = profile S)")
    ap.add_argument("--updates", type=int, default=20, help="updates per timed program")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile-rounds", type=int, default=7, help="round-robin rounds over the ablation variants (median)")
    ap.add_argument("--flags", default="--xla_backend_optimization_level=0;--xla_cpu_enable_concurrency_optimized_scheduler=false",
                    help="';'-separated XLA_FLAGS values to time (compile + run of the PPO chunk) in subprocesses; '' = skip")
    ap.add_argument("--full-run", action="store_true", help="also time the default e5jax run end to end (cache off)")
    ap.add_argument("--only", default="", help="comma list of parts to (re)run into the existing --out JSON: "
                    "full_run (the default e5jax run, with and without E5JAX_OVERHEAD=off), parallel_compile, extra_variants "
                    "(candidate fixes: optax.flatten optimizer, no KL)")
    ap.add_argument("--quick", action="store_true", help="smoke run: S = 2, 3 updates, fewer variants, no flag sweep")
    ap.add_argument("--out", default=str(B.OUT_DIR / "roofline.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.updates, args.repeats, args.flags, args.profile_rounds = "2", 3, 2, "", 2
    if args.only:
        parts = [x.strip() for x in args.only.split(",") if x.strip()]
        out = Path(args.out)
        doc = json.loads(out.read_text()) if out.is_file() else {"schema": "e5jax/bench_roofline/v1"}
        doc.setdefault("meta", {}).setdefault("partial_reruns", []).append(
            {"command": " ".join([Path(sys.executable).name, *sys.argv]), "parts": parts,
             "created": B.bench_meta()["created"], "load_average_at_start": os.getloadavg()})
        if "parallel_compile" in parts:
            B.setup_jax()
            run, cfgs, env, refs = B.load_env()
            doc["parallel_compile"] = parallel_compile(cfgs, env, run.seeds, run.eval_every)
            pc = doc["parallel_compile"]
            print(f"chunk compile of {pc['methods']}: sequential {pc['sequential_s_median']:.1f} s, "
                  f"{pc['workers']} threads {pc['parallel_s_median']:.1f} s")
        if "extra_variants" in parts:
            B.setup_jax()
            run, cfgs, env, refs = B.load_env()
            S0, U = B.parse_ints(args.seeds)[0], args.updates
            extra, init_cache = {}, {}
            _ENV[0] = env
            for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
                progs, ctimes = {}, {}
                for v in EXTRA_VARIANTS:
                    comp, states, keys, cs = compile_update_variant(name, cfgs[name], env, S0, U, VARIANTS[v], init_cache)
                    progs[v], ctimes[v] = (comp, states, keys), cs
                ts = round_robin(progs, args.profile_rounds)
                extra[name] = {v: {"compile_s": ctimes[v], "exec_s": ts[v], "exec_s_median": B.median(ts[v]),
                                   "ms_per_seed_update": B.median(ts[v]) / (S0 * U) * 1e3} for v in EXTRA_VARIANTS}
                base = extra[name]["full"]["ms_per_seed_update"]
                for v, r in extra[name].items():
                    r["saved_pct"] = 100 * (base - r["ms_per_seed_update"]) / base
                    print(f"  {name:5s} {v:45s} {r['ms_per_seed_update']:6.2f} ms/seed-update  saved {r['saved_pct']:5.1f}%")
            doc["profile_extra"] = {"seeds": S0, "updates": U, "rounds": args.profile_rounds, "variants": extra,
                                    "how": "as profile: candidate fixes, timed round robin against the unchanged program"}
        if "full_run" in parts:
            doc["full_run"] = full_run()
            doc["full_run_without_overhead_analysis"] = full_run(extra_env={"E5JAX_OVERHEAD": "off"})
            for k in ("full_run", "full_run_without_overhead_analysis"):
                print(f"{k}: {doc[k]['process_wall_s']:.1f} s ({doc[k]['command']})")
        write_json(out, doc)
        return 0
    B.setup_jax()
    run, cfgs, env, refs = B.load_env()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = B.parse_ints(args.seeds)
    S0, U = seeds[0], args.updates
    variants = ["full", "no_apply_if_finite"] if args.quick else PROFILE_VARIANTS
    cvariants = ["full"] if args.quick else COMPILE_VARIANTS
    compile_methods = ["ppo"] if args.quick else ["lut", "heuristic", *LEARNED]
    flags = [f for f in args.flags.split(";") if f.strip()] if args.flags else []
    t_start = time.perf_counter()
    doc = {"schema": "e5jax/bench_roofline/v1"}
    n_steps = 2 + 2 * len(methods) + len(methods) + len(methods) * (len(seeds) + len(variants)) + len(compile_methods) \
        + len(cvariants) * len(methods) + (len(flags) + 1 if flags else 0) + int(args.full_run)
    with tqdm(total=n_steps, desc="roofline", unit="step", file=sys.stderr) as pbar:
        def step(msg):
            pbar.set_postfix_str(msg)
            pbar.update(1)

        peak = matmul_peak(reps=4 if args.quick else 10)
        doc["peak"] = peak
        step("peak")
        P_GF = peak["peak_gflops"]
        D, H, A = env.obs_dim, tuple(cfgs["ppo"].hidden), sum(env.knob_sizes)
        shapes = [(64, D, H[0]), (64, H[0], H[1]), (64, H[1], A), (64, H[1], max(env.knob_sizes)), (256, H[0], H[1])]
        doc["small_matmuls"] = {str(S): small_matmul_rates(S, shapes, iters=100 if args.quick else 400) for S in seeds}
        step("small matmuls")

        flops = {}
        for name in methods:
            flops[name] = {"analytic_matmul": analytic_flops(name, cfgs[name], env, run.eval_every)}
            step(f"{name} analytic")
            flops[name]["xla_cost_analysis"] = xla_flops(name, cfgs[name], env)
            step(f"{name} cost_analysis")
        doc["flops"] = flops

        achieved, profile, census, init_cache = {}, {}, {}, {}
        for name in methods:
            fl = flops[name]["analytic_matmul"]["per_update"]
            fx = flops[name]["xla_cost_analysis"]["minibatch loop unrolled"]["flops"]
            achieved[name] = []
            for S in seeds:
                r = time_update_variant(name, cfgs[name], env, S, U, args.repeats, VARIANTS["full"], init_cache)
                if S == S0:
                    census[name] = hlo_census(r["compiled"])
                r.pop("compiled")
                sec_per_update = r["exec_s_median"] / (S * U)
                r.update({
                    "seeds": S, "updates": U,
                    "env_steps_per_s": cfgs[name].env_steps_per_update / sec_per_update,
                    "matmul_gflops": fl / sec_per_update / 1e9,
                    "matmul_efficiency_pct": 100 * fl / sec_per_update / 1e9 / P_GF,
                    "xla_total_gflops": fx / sec_per_update / 1e9,
                    "xla_total_efficiency_pct": 100 * fx / sec_per_update / 1e9 / P_GF,
                })
                achieved[name].append(r)
                step(f"{name} S={S}")
            profile[name] = {}
            fl_floor = mlp_floor(name, cfgs[name], env, S0, U, args.repeats)
            fl_floor["matmul_efficiency_pct"] = 100 * fl_floor["matmul_gflops"] / P_GF
            doc.setdefault("mlp_floor", {})[name] = fl_floor
            step(f"{name} mlp floor")
            # compile every variant first, then time them round robin (the machine is shared: drift hits all alike)
            progs, ctimes = {}, {}
            for v in variants:
                # (PPO never calls kl in its loss: there "no_kl" only drops the kl_ref metric)
                comp, states, keys, cs = compile_update_variant(name, cfgs[name], env, S0, U, VARIANTS[v], init_cache)
                progs[v], ctimes[v] = (comp, states, keys), cs
                step(f"{name} {v}")
            _ENV[0] = env
            ts = round_robin(progs, args.profile_rounds)
            for v in variants:
                profile[name][v] = {"compile_s": ctimes[v], "exec_s": ts[v], "exec_s_median": B.median(ts[v]),
                                    "ms_per_seed_update": B.median(ts[v]) / (S0 * U) * 1e3}
            del progs
            base = profile[name]["full"]["ms_per_seed_update"]
            for v, r in profile[name].items():
                r["saved_ms_per_seed_update"] = base - r["ms_per_seed_update"]
                r["saved_pct"] = 100 * (base - r["ms_per_seed_update"]) / base
        doc["achieved"] = achieved
        doc["profile"] = {"seeds": S0, "updates": U, "variants": profile,
                          "how": "each variant replaces one piece of the update program (set explicitly on the states "
                                 "as a common.Program; nothing in src/ is replaced); saved = time(full) - time(variant), per seed and update; variants "
                                 "timed round robin, median of profile_rounds"}
        doc["hlo_census"] = census

        comp = {}
        for name in compile_methods:
            comp[name] = compile_times(name, cfgs[name], env, run.seeds, run.eval_every)
            step(f"compile {name}")
        cvar = {}
        for name in methods:
            cvar[name] = {}
            for v in cvariants:
                cvar[name][v] = chunk_variant_compile(name, cfgs[name], env, run.seeds, run.eval_every, VARIANTS[v])
                step(f"compile {name} {v}")
        doc["compile"] = {"seeds": run.seeds, "eval_every": run.eval_every, "programs": comp, "chunk_variants": cvar}
        if flags:
            doc["xla_flags"] = {"method": "ppo", "seeds": run.seeds, "updates": run.eval_every,
                                "results": flag_sweep("ppo", run.seeds, run.eval_every, args.repeats, [""] + flags)}
            pbar.update(len(flags) + 1)
        if args.full_run:
            doc["full_run"] = full_run()
            doc["full_run_without_overhead_analysis"] = full_run(extra_env={"E5JAX_OVERHEAD": "off"})
            step("full run")
    doc["meta"] = B.bench_meta({"methods": methods, "seeds": seeds, "updates": U, "repeats": args.repeats,
                                 "quick": args.quick, "wall_s": time.perf_counter() - t_start})
    write_json(Path(args.out), doc)
    print_report(doc)
    print(f"-> {args.out}")
    return 0


def print_report(doc: dict) -> None:
    pk = doc["peak"]["peak_gflops"]
    print(f"\nmatmul peak (float32 jnp.dot): {pk:.1f} GFLOP/s  "
          + ", ".join(f"n={n}: {v['gflops_median']:.1f}" for n, v in doc["peak"]["sizes"].items()))
    print("\nFLOPs per update (one seed):")
    for name, f in doc["flops"].items():
        a, x = f["analytic_matmul"], f["xla_cost_analysis"]
        print(f"  {name}: matmul (layer shapes) {a['per_update'] / 1e6:.1f} MFLOP = {a['per_env_step'] / 1e3:.0f} kFLOP/env step; "
              f"XLA cost_analysis unrolled {x['minibatch loop unrolled']['flops'] / 1e6:.1f} MFLOP, "
              f"scanned {x['scanned (as in the lab)']['flops'] / 1e6:.1f} MFLOP (loop bodies counted once)")
    print("\nachieved (update step, jit(vmap(scan))):")
    print(f"  {'method':6s} {'S':>4s} {'ms/seed-upd':>11s} {'steps/s':>9s} {'matmul GF/s':>11s} {'eff %':>6s} {'xla GF/s':>8s}")
    for name, rows in doc["achieved"].items():
        for r in rows:
            print(f"  {name:6s} {r['seeds']:4d} {r['ms_per_seed_update']:11.2f} {r['env_steps_per_s']:9,.0f} "
                  f"{r['matmul_gflops']:11.2f} {r['matmul_efficiency_pct']:6.1f} {r['xla_total_gflops']:8.2f}")
    print("\nthe lab's matmul shapes alone (batched over S seeds), GFLOP/s:")
    for S, d in doc["small_matmuls"].items():
        print(f"  S={S}: " + ", ".join(f"{k} {v['gflops']:.1f}" for k, v in d.items()))
    print("networks alone (same minibatch fwd+bwd count, plain SGD step), S = profile S:")
    for name, r in doc.get("mlp_floor", {}).items():
        print(f"  {name}: {r['ms_per_seed_update']:.2f} ms per seed-update, {r['matmul_gflops']:.1f} GFLOP/s "
              f"({r['matmul_efficiency_pct']:.1f}% of peak)")
    print(f"\nprofile by ablation (S = {doc['profile']['seeds']}): ms per seed-update, and the time the removed piece cost")
    for name, vs in doc["profile"]["variants"].items():
        for v, r in vs.items():
            print(f"  {name:5s} {v:38s} {r['ms_per_seed_update']:7.2f} ms   saved {r['saved_pct']:6.1f}%")
    print(f"\ncompile (S = {doc['compile']['seeds']}, eval_every = {doc['compile']['eval_every']}), seconds:")
    for name, c in doc["compile"]["programs"].items():
        print(f"  {name:10s} init {c['init_lower_s'] + c['init_compile_s']:5.1f} (single seed {c['init_single_seed_lower_compile_s']:4.1f}, "
              f"lax.map {c['init_lax_map_lower_compile_s']:4.1f})  chunk lower {c['chunk_lower_s']:4.1f} + compile {c['chunk_compile_s']:5.1f}  "
              f"evaluate {c['evaluate_lower_compile_s']:4.1f}  chunk w/o eval {c['chunk_without_eval_lower_compile_s']:5.1f}")
    for name, vs in doc["compile"]["chunk_variants"].items():
        print("  " + name + ": " + ", ".join(f"{v} {r['lower_s'] + r['compile_s']:.1f}" for v, r in vs.items()))
    if "xla_flags" in doc:
        for fl, r in doc["xla_flags"]["results"].items():
            if "error" in r:
                print(f"  XLA_FLAGS={fl}: error")
            else:
                print(f"  XLA_FLAGS={fl}: ppo chunk compile {r['compile_s']:.1f} s, exec {r['exec_s_median']:.2f} s")
    if "full_run" in doc:
        for k in ("full_run", "full_run_without_overhead_analysis"):
            if k in doc:
                fr = doc[k]
                print(f"\n{fr['command']}: {fr['process_wall_s']:.1f} s (target 120 s: {'met' if fr['target_met'] else 'MISSED'})")


if __name__ == "__main__":
    sys.exit(main())
