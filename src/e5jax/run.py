"""`e5jax run`: every method, every seed at once, every budget -> artifacts/<run>/.

Every method's chunk program is compiled ahead of time (compile time measured apart), the initial policy
evaluated, then chunks of ``eval_every`` updates run with a progress bar, the bounded metrics of each chunk pulled
to the host (the host loop: ``e5jax.loop``). ``e5_training_curves.json`` is rewritten atomically after every
method, so an interrupted run keeps every finished method (``"complete": false`` until the end). The overhead
analysis (``e5jax.overhead``) runs after all training and is imported only then. ``checkpoints/run.json`` holds the
run's ``meta`` (resolved configs, table path and hash) while it trains, so ``--resume DIR`` needs no other flag.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from e5jax import analysis as A
from e5jax import env as E
from e5jax import policy as P
from e5jax.checkpoint import MethodCheckpointer, ResumeError, fingerprint
from e5jax.config import ConfigError, RunConfig, config_from_dict, load_config, read_toml
from e5jax.dist import barrier, check_rows, multi_process
from e5jax.errors import UsageError
from e5jax.host import host_description
from e5jax.io import atomic_write, is_writer, read_json, to_jsonable, write_json
from e5jax.loop import Prepared, compile_pool, env_steps_axis, init_method, prepare_method, train_chunks
from e5jax.methods import METHODS
from e5jax.table import ProfileTable, default_table_path, load_table
from e5jax.timing import Settings, split_evaluation, time_evaluation, train_time_axis
from e5jax.watch import METRICS_FILE, TENSORBOARD_DIR, MetricsStream, Watchdog, watching

SCHEMA = "e5jax/e5_training_curves/v1"
EVAL_KEYS = ("utility", "quality_mean", "latency_p95_ms", "latency_p95_norm", "latency_mean_norm", "slo_violation_rate", "utility_sampled")


def seed_stats(a) -> dict:
    """[S, ...] per-seed values -> mean, std (ddof=0) and the per-seed lists."""
    a = np.asarray(a, dtype=np.float64)
    return {"mean": a.mean(0), "std": a.std(0), "per_seed": a}


def table_provenance(table: ProfileTable, path: Path) -> dict:
    h = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
    return {
        "path": str(path),
        "sha256_16": h,
        "source": table.meta.get("source"),
        "generator": table.meta.get("generator", {}).get("seed") if isinstance(table.meta.get("generator"), dict) else None,
        "num_requests": table.num_requests,
        "num_configs": table.num_configs,
        "knobs": {k: v.tolist() for k, v in table.knobs.items()},
        "tasks": list(table.task_names),
        "table_meta": {k: v for k, v in table.meta.items() if k != "generator"},
    }


def make_meta(run: RunConfig, cfgs: dict, table: ProfileTable, table_path: Path) -> dict:
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "run": dataclasses.asdict(run),
        "method_configs": {k: dataclasses.asdict(v) for k, v in cfgs.items()},
        "lam": run.lam,
        "budgets": list(run.budgets),
        "seeds": run.seeds,
        "seed_keys": f"fold_in(PRNGKey({run.base_seed}), i) for i in range({run.seeds})",
        "table": table_provenance(table, table_path),
        "host": host_description(),
        "reward": "quality - lam * max(0, latency/baseline - b), baseline = the request's full-config latency",
        "env_step": "one executed (request, config) profiling call",
        "num_failed_updates": "gradient steps skipped by optax.apply_if_finite because the update was non-finite (cumulative)",
    }


def references_block(env: E.EnvParams) -> dict:
    refs = E.evaluate_references(env)
    out = {}
    for name, d in refs.items():
        per_budget = {k: np.asarray(v) for k, v in d.items()}
        out[name] = {"per_budget": per_budget, "mean_over_budgets": {k: float(v.mean()) for k, v in per_budget.items()}}
    fixed = jax.device_get(E.evaluate_fixed_configs(env))
    levels = np.stack(np.unravel_index(np.arange(env.num_configs), env.knob_sizes), -1)
    out["fixed_configs"] = {"level_index": levels, "per_budget": fixed}
    return out


def run_method(name: str, cfg, run: RunConfig, env: E.EnvParams, refs: dict, pbar=None, on_done=None,
               prepared: Prepared | None = None, checkpointer: MethodCheckpointer | None = None) -> dict:
    """Train one method on every seed. ``on_done(name, method, states, result)`` (the overhead analysis) is called
    with the final vmapped states before returning. ``prepared``: from ``prepare_method`` (compiled elsewhere).
    ``checkpointer``: continue from its latest checkpoint if it has one, and save at chunk boundaries."""
    method = METHODS[name]
    p = prepared or prepare_method(name, cfg, run, env)
    tr = train_chunks(p, run, env, pbar, checkpointer, label=name)
    states, evals, trains, wall, chunk_s, updates = tr.states, tr.evals, tr.trains, tr.wall, tr.chunk_s, tr.updates
    # training time without the val evaluations inside the chunks: eval points x the compiled evaluate's time per
    # call, timed now (right after training); null when below resolution (timing.split_evaluation)
    eval_t = time_evaluation(p.evaluate or p.trainer.evaluate, states, env)
    split = split_evaluation(chunk_s, updates, run.num_chunks, eval_t)
    wall = train_time_axis(updates, split["train_chunk_s"], run.eval_every)
    compile_s = p.compile_s

    S = run.seeds
    ev = {k: np.stack([e[k] for e in evals], axis=1) for k in EVAL_KEYS}  # [S, E, B]
    ev_norm = A.normalized_utility(ev["utility"], np.asarray(refs["random"]["per_budget"]["utility"]),
                                   np.asarray(refs["oracle"]["per_budget"]["utility"]))
    curves = {f"val_{k}": seed_stats(v.mean(-1)) for k, v in ev.items()}
    curves["val_utility_norm"] = seed_stats(A.mean_over_budgets(ev_norm))
    per_budget = {f"val_{k}": seed_stats(v) for k, v in ev.items()}
    per_budget["val_utility_norm"] = seed_stats(ev_norm)

    # [S, E, B, Rv] greedy val configs at every eval point (e5_val_actions.npz: the request-level bootstrap's input)
    actions = np.stack([np.asarray(e["actions"]) for e in evals], axis=1).astype(np.int16)
    last = next(t for t in trains if t is not None)
    train_keys = sorted(last)
    steps = env_steps_axis(tr.step_inc)
    for k in train_keys:
        if k == "env_steps":
            continue
        # [S, E]: chunk aggregates at chunk ends; NaN at the initial and the intra-chunk (early) eval points
        v = np.stack([np.asarray(t[k], np.float64) if t is not None else np.full(S, np.nan) for t in trains], axis=1)
        curves[k] = seed_stats(np.concatenate([np.full((S, 1), np.nan), v], 1))
    num_params = None
    if hasattr(states, "params"):
        num_params = P.count_params(states.params, batch_dims=1)  # per seed
    result = {
        "updates": updates,
        "env_steps": steps.mean(0),
        "env_steps_per_seed": steps,
        "env_steps_per_update": method.steps_per_update(cfg, env),
        "wall_time_s": np.asarray(wall),
        "chunk_time_s": np.asarray(chunk_s),
        "compile_time_s": compile_s,
        "compile_breakdown_s": p.compile_parts,
        "train_time_s": split["train_time_s"],
        "train_time_below_resolution": split["train_time_below_resolution"],
        "train_time_resolution_s": split["train_time_resolution_s"],
        "eval_time_s": split["eval_time_s"],
        "eval_time_per_call": eval_t,
        "num_params": num_params,
        "curves": curves,
        "per_budget": per_budget,
        "val_actions": actions,  # not JSON: run_experiment moves it to e5_val_actions.npz
    }
    if on_done is not None:
        on_done(name, method, states, result)
    return result


ACTIONS = "e5_val_actions.npz"


class ActionStore:
    """``e5_val_actions.npz``: every method's greedy val configs at every eval point ([S, E, B, Rv] int16, key
    ``actions/<method>``) with the val rows of the table they index (quality, normalized latency), the budgets, lambda
    and the val request indices: everything ``e5jax.decide`` needs to recompute any per-request metric. Rewritten
    atomically after every method; on resume the finished methods' arrays are kept."""

    def __init__(self, path: Path, env: E.EnvParams, keep=()):
        self.path = path
        val = np.asarray(env.val_idx)
        self.base = {"quality": np.asarray(env.quality)[val], "latency_norm": np.asarray(env.latency_norm)[val],
                     "budgets": np.asarray(env.budgets), "lam": np.asarray(env.lam), "val_index": val}
        self.methods = {}
        if keep and path.is_file():
            with np.load(path) as z:
                self.methods = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("actions/")
                                and k.split("/", 1)[1] in keep}

    def add(self, name: str, actions: np.ndarray) -> None:
        self.methods[name] = np.asarray(actions, np.int16)
        arrays = {**self.base, **{f"actions/{k}": v for k, v in self.methods.items()}}
        atomic_write(self.path, lambda f: np.savez_compressed(f, **arrays), binary=True)


NOT_TRAINING = ("thresholds", "checkpoint_every_chunks", "checkpoint_every_s")  # run keys a resume may change


def run_fingerprint(run: RunConfig, cfg, table_meta: dict) -> dict:
    """What a checkpoint must match to be resumed: the run config (less reporting/checkpoint settings), the
    method's config and the table's content hash."""
    r = {k: v for k, v in dataclasses.asdict(run).items() if k not in NOT_TRAINING}
    return fingerprint({"run config": r, "method config": dataclasses.asdict(cfg),
                        "table": table_meta.get("sha256_16")})


RECORD = Path("checkpoints") / "run.json"  # the run's meta while it trains (e5jax run --resume reads it)


def recorded_meta(out: Path) -> dict | None:
    """The ``meta`` block of the run in ``out``: ``checkpoints/run.json`` (written when training starts, removed with
    the checkpoints when the run completes), else ``e5_training_curves.json``'s; None when neither is there."""
    for p in (out / RECORD, out / "e5_training_curves.json"):
        if p.is_file():
            return read_json(p)["meta"]
    return None


def recorded_configs(meta: dict, args):
    """(run, cfgs) for ``--resume``: from ``--config`` when given, else from the recorded ``meta.run`` and
    ``meta.method_configs``; ``--seeds``, ``--methods`` and ``--thresholds`` override either."""
    raw = read_toml(args.config) if args.config else {"run": meta["run"], **meta["method_configs"]}
    return config_from_dict(raw, seeds=args.seeds, methods=args.methods, thresholds=getattr(args, "thresholds", None))


def resume_differences(meta: dict, run: RunConfig, cfgs: dict, table_sha: str | None) -> list[str]:
    """What differs from the recorded run in what a resume must match (``run_fingerprint``'s parts), each as
    ``part (key: recorded value there, given value given)``; a method-config key that mirrors a differing run-config
    key (``env_steps_per_update``) is named once, in the run config. Empty when the run may continue."""
    def keys(there, given, skip=()):
        there, given = to_jsonable(there), to_jsonable(given)
        return {k: f"{k}: {json.dumps(there.get(k))} there, {json.dumps(given.get(k))} given"
                for k in sorted(set(there) | set(given)) if there.get(k) != given.get(k) and k not in skip}

    run_d = keys({k: v for k, v in meta["run"].items() if k not in NOT_TRAINING},
                 {k: v for k, v in dataclasses.asdict(run).items() if k not in NOT_TRAINING})
    parts = {"run config": run_d}
    for name, cfg in cfgs.items():
        if name in meta["method_configs"]:
            parts[f"{name} config"] = keys(meta["method_configs"][name], dataclasses.asdict(cfg), skip=run_d)
    out = [f"{part} ({'; '.join(d.values())})" for part, d in parts.items() if d]
    if meta["table"]["sha256_16"] != table_sha:
        out.append(f"table (sha256_16: {meta['table']['sha256_16']} there, {table_sha} given)")
    return out


def run_experiment(run: RunConfig, cfgs: dict, table: ProfileTable, table_path: Path, out: Path, progress: bool = True,
                   resume: bool = False, watchdog: Watchdog | None = None, tensorboard: bool = False) -> dict:
    """Train every method of ``run`` on ``table`` into ``out``: its programs under ``watchdog``, each chunk's
    metrics appended to ``out/metrics.jsonl`` (and TensorBoard events with ``tensorboard``: ``e5jax.watch``)."""
    env = E.env_from_run(run, table)
    refs = references_block(env)
    doc = {
        "schema": SCHEMA,
        "complete": False,
        "meta": make_meta(run, cfgs, table, table_path),
        "references": refs,
        "methods": {},
    }
    path = out / "e5_training_curves.json"
    fps = {name: run_fingerprint(run, cfgs[name], doc["meta"]["table"]) for name in run.methods}
    doc["meta"]["fingerprints"] = fps
    if resume and path.is_file():  # methods finished before the interruption, if made with this config and table
        old = read_json(path)
        for name, m in old.get("methods", {}).items():
            if name not in fps:
                continue
            prev = old.get("meta", {}).get("fingerprints", {}).get(name, {})
            differs = sorted(k for k in fps[name] if prev.get(k) != fps[name][k])
            if differs:
                raise ResumeError(f"{path}: {name} was trained with another {', '.join(differs)} than this run's; "
                                  "rerun with the same config and table, or use --overwrite")
            doc["methods"][name] = m
        doc["meta"]["resumed"] = {"finished_before": list(doc["methods"])}
    write_json(out / RECORD, {"schema": "e5jax/run_record/v1", "meta": doc["meta"]})
    todo = [n for n in run.methods if n not in doc["methods"]]
    total = len(todo) * run.num_chunks
    # eager decision timing + training-cost breakdown after all training (E5JAX_OVERHEAD=off skips it; so do several
    # processes: it times programs and eager decisions on one machine)
    settings, overhead = (None if multi_process() else Settings.from_env()), None
    if settings is not None:
        from e5jax.overhead import Recorder  # the analysis is imported only when it runs

        overhead = Recorder(out, table, env, run, settings)
    ckpts = {n: MethodCheckpointer(out / "checkpoints" / n, fps[n], run.checkpoint_every_chunks, run.checkpoint_every_s)
             for n in todo}

    trained = {}

    actions = ActionStore(out / ACTIONS, env, keep=list(doc["methods"]) if resume else [])

    def finished(name, method, states, result):  # curves first, so an interrupted analysis loses nothing
        actions.add(name, result.pop("val_actions"))
        doc["methods"][name] = result
        write_json(path, doc)
        ckpts[name].remove()
        trained[name] = (method, states, result)

    t_start = time.perf_counter()
    # compile every method's programs ahead of time in threads (XLA compiles outside the GIL; nothing executes
    # there), each as soon as the method is initialised, the overhead analysis' timing programs after them; training
    # starts when every compile is done, so every method trains (and is timed) on a CPU with no compiler running,
    # and runs in this thread, method by method; the overhead analysis runs after all training.
    timing = None if overhead is None else (lambda name, p: overhead.compile(name, METHODS[name], p.states))
    with watching(watchdog, MetricsStream(out, tensorboard) if is_writer() else None), \
            compile_pool(todo, lambda name: init_method(name, cfgs[name], run, env), env, also=timing) as compiled:
        compiled.wait(progress)
        t_compiled = time.perf_counter()
        with tqdm(total=total, desc="e5 train", unit="chunk", disable=not progress, file=sys.stderr) as pbar:
            for name in todo:
                run_method(name, cfgs[name], run, env, refs, pbar, on_done=finished, prepared=compiled[name],
                           checkpointer=ckpts[name])
    t_trained = time.perf_counter()
    if overhead is not None:
        for name, (method, states, result) in trained.items():
            overhead(name, method, states, result, evaluate=compiled[name].evaluate)
        overhead.finish()
        doc["meta"]["overhead_analysis_s"] = overhead.doc["meta"]["analysis_wall_s"]
    doc["complete"] = True
    t_end = time.perf_counter()
    doc["meta"]["total_wall_time_s"] = t_end - t_start
    # where the run's wall time went: initialising every method and compiling every program (methods' and timing
    # programs', in threads) until the last compile is done; training (chunks, checkpoints, per-method bookkeeping);
    # the overhead analysis; the report comes after (its own file, e5jax.report)
    doc["meta"]["phases_s"] = {"init_and_compile_s": t_compiled - t_start, "training_s": t_trained - t_compiled,
                               "overhead_analysis_s": t_end - t_trained}
    doc["meta"]["checkpoints"] = {"every_chunks": run.checkpoint_every_chunks, "every_s": run.checkpoint_every_s,
                                  "saves": sum(c.saves for c in ckpts.values()),
                                  "save_s": sum(c.save_s for c in ckpts.values())}
    doc["methods"] = {n: doc["methods"][n] for n in run.methods if n in doc["methods"]}  # config order
    if is_writer():
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    write_json(path, doc)
    return doc


def print_final(doc: dict, out: Path, report_s: float | None = None) -> None:
    print(f"\nfinal greedy val utility, normalized ((U - U_random) / (U_oracle - U_random), mean over budgets), "
          f"mean ± std over {doc['meta']['run']['seeds']} seeds:")
    for name, m in doc["methods"].items():
        c = m["curves"]
        print(f"  {name:11s} {c['val_utility_norm']['mean'][-1]:6.3f} ± {c['val_utility_norm']['std'][-1]:.3f}   "
              f"SLO viol {c['val_slo_violation_rate']['mean'][-1]:6.1%}   quality {c['val_quality_mean']['mean'][-1]:.3f}   "
              f"env steps {m['env_steps'][-1]:>9.0f}   compile {m['compile_time_s']:5.1f}s   "
              + (f"train {m['train_time_s']:6.1f}s" if m.get("train_time_s") is not None
                 else f"train < {m.get('train_time_resolution_s', float('nan')):.2g}s (below resolution)")
              + (f" + eval {m['eval_time_s']:.1f}s" if m.get("eval_time_s") is not None else ""))
    ph = doc["meta"].get("phases_s")
    parts = "" if ph is None else (f" (init + compile {ph['init_and_compile_s']:.1f}s, training {ph['training_s']:.1f}s, "
                                   f"overhead analysis {ph['overhead_analysis_s']:.1f}s"
                                   + ("" if report_s is None else f"; then the report {report_s:.1f}s") + ")")
    print(f"total wall time {doc['meta']['total_wall_time_s']:.1f}s{parts} -> {out}")


def run_outputs(out: Path) -> list[Path]:
    """Every path a run writes into its output directory."""
    from e5jax import report as R

    names = [R.CURVES, ACTIONS, R.SAMPLE_EFFICIENCY, R.FRONTIERS, R.STABILITY, R.DECISIONS, R.OVERHEAD, R.SUMMARY,
             R.FIG_DIR, "controllers", "checkpoints", METRICS_FILE, TENSORBOARD_DIR]
    return [out / n for n in names]


def run_from_args(args) -> int:
    resume = getattr(args, "resume", None)
    if resume and args.out and Path(args.out) != Path(resume):
        raise UsageError(f"--resume {resume} and --out {args.out}: give one directory (--resume DIR continues DIR)")
    out = Path(resume or args.out or "artifacts/e5")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    if resume and not out.is_dir():
        raise UsageError(f"--resume {out}: no such run directory")
    meta = recorded_meta(out) if resume else None  # None: a directory with no run recorded trains from the flags
    try:
        run, cfgs = (recorded_configs(meta, args) if meta is not None else
                     load_config(args.config, seeds=args.seeds, methods=args.methods,
                                 thresholds=getattr(args, "thresholds", None)))
    except ConfigError as e:
        raise UsageError(f"--resume {out}: {e}" if meta is not None and not args.config else str(e)) from None
    table_path = Path(args.table) if args.table else Path(meta["table"]["path"]) if meta else default_table_path()
    if meta is not None and not args.table and not table_path.is_file():
        raise UsageError(f"--resume {out}: its table {table_path} is not there; pass --table with the same file")
    table = load_table(table_path)
    if meta is not None:
        differs = resume_differences(meta, run, cfgs, table_provenance(table, table_path)["sha256_16"])
        if differs:
            raise UsageError(f"--resume {out}: that run was made with another {'; another '.join(differs)}; resume "
                             "without --config/--table/--seeds/--methods (it takes the recorded ones), or start a new "
                             "run (another --out, or --overwrite)")
    try:
        watchdog = Watchdog.from_env(resume_hint=f"e5jax run --resume {out}")
    except ValueError as e:
        raise UsageError(str(e)) from None
    tensorboard = getattr(args, "tensorboard", False)
    if tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise UsageError("--tensorboard needs the optional tensorboardX package (pip install tensorboardX)")
    check_rows(run.seeds, "seeds")
    present = [p.name for p in run_outputs(out) if p.exists()]
    if present and not resume and not getattr(args, "overwrite", False):
        raise UsageError(f"--out {out}: already holds a run ({present[0]}, ...); pass --resume {out} to continue it "
                         "or --overwrite to replace it")
    barrier("outputs checked")  # several processes: every one has looked before process 0 writes or deletes
    if present and not resume:
        for p in run_outputs(out) if is_writer() else ():  # only what a run writes: never anything else there
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    print(f"e5jax run: {len(run.methods)} methods x {run.seeds} seeds x {len(run.budgets)} budgets, "
          f"{run.num_updates} updates of {run.env_steps_per_update} env steps, table {table_path} "
          f"({table.num_requests} requests x {table.num_configs} configs), backend {jax.default_backend()}")
    try:
        doc = run_experiment(run, cfgs, table, table_path, out, progress=not args.no_progress, resume=bool(resume),
                             watchdog=watchdog, tensorboard=tensorboard)
    except ResumeError as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished methods are kept in {out / 'e5_training_curves.json'}, the running one in its "
              f"latest checkpoint; continue with: e5jax run --resume {out}", file=sys.stderr)
        return 130
    if not is_writer():  # process 0 writes the report and prints the results
        return 0
    from e5jax.report import write_outputs

    t0 = time.perf_counter()
    write_outputs(out, thresholds=run.thresholds, figures=not getattr(args, "no_figures", False))
    print_final(doc, out, report_s=time.perf_counter() - t0)
    return 0
