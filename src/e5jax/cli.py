"""Command line: ``e5jax {validate,synth,run,report,decide,sweep,robustness}``.

Bad input -> one line on stderr naming the problem, exit code 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from e5jax.errors import UsageError
from e5jax.table import TableError, default_table_path, load_table


def _fail(msg: str) -> int:
    print(f"e5jax: error: {msg}", file=sys.stderr)
    return 2


def cmd_validate(args) -> int:
    from e5jax.stats import format_summary, table_summary

    if not args.oracle_tol >= 0:  # also refuses nan
        raise UsageError(f"--oracle-tol must be >= 0 (reward units within which configs tie), got {args.oracle_tol}")
    table = load_table(args.path)
    s = table_summary(table, lam=args.lam, oracle_tol=args.oracle_tol)
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(format_summary(s, str(args.path)))
    return 0


def cmd_synth(args) -> int:
    from e5jax.synth import generate

    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".npz"):
        raise UsageError(f"--out {out}: use a .csv or .npz file name")
    if args.requests < 10:
        raise UsageError(f"--requests must be at least 10, got {args.requests}")
    table = generate(seed=args.seed, num_requests=args.requests)
    table.save(out)
    print(f"wrote {out}: {table.num_requests} requests x {table.num_configs} configs")
    return 0


def cmd_run(args) -> int:
    from e5jax.run import run_from_args

    return run_from_args(args)


def cmd_report(args) -> int:
    from e5jax.report import report_from_args

    return report_from_args(args)


def cmd_decide(args) -> int:
    from e5jax.report.decisions import decide_from_args

    return decide_from_args(args)


def cmd_sweep(args) -> int:
    from e5jax.sweep import sweep_from_args

    return sweep_from_args(args)


def cmd_robustness(args) -> int:
    from e5jax.robustness import robustness_from_args

    return robustness_from_args(args)


def distributed_arguments(parser) -> None:
    g = parser.add_argument_group("several processes (jax.distributed; docs/sweep.md)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="process 0's address (default: $JAX_COORDINATOR_ADDRESS); with it every process of the job "
                        "runs this same command")
    g.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="processes in the job (default: $JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="this process, 0..N-1; process 0 writes the outputs (default: $JAX_PROCESS_ID)")
    g.add_argument("--distributed", action="store_true",
                   help="start jax.distributed from what the cluster provides (SLURM, ...), without the flags above")
    g.add_argument("--coordinator-timeout", type=float, default=120.0, metavar="S",
                   help="seconds to wait for every process to join (default 120)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e5jax", description="E5 training-strategy comparison lab (JAX).")
    sub = p.add_subparsers(dest="cmd", required=True)

    v = sub.add_parser("validate", help="check a profile table (.csv/.npz) and print its summary")
    v.add_argument("path", nargs="?", default=str(default_table_path()), help="table file (default: embedded default)")
    v.add_argument("--lam", type=float, default=2.0, help="overshoot penalty λ used for the oracle/reference numbers")
    v.add_argument("--oracle-tol", type=float, default=1e-6,
                   help="configs within this of the best reward count as optimal (as [run] oracle_tol; default 1e-6)")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")
    v.set_defaults(func=cmd_validate)

    s = sub.add_parser("synth", help="generate the calibrated synthetic table")
    s.add_argument("--out", required=True, help="output .csv or .npz")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--requests", type=int, default=1200)
    s.set_defaults(func=cmd_synth)

    r = sub.add_parser("run", help="train and evaluate every method on every seed (the E5 comparison)")
    r.add_argument("--config", default=None, help="TOML config (default: experiments/e5_default.toml settings)")
    r.add_argument("--table", default=None, help="profile table (default: the embedded default)")
    r.add_argument("--out", default=None, help="output directory (default: artifacts/e5)")
    r.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides the config)")
    r.add_argument("--methods", default=None, help="comma-separated subset of methods")
    r.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    r.add_argument("--no-figures", action="store_true",
                   help="write the JSON and summary.md but no figures (`e5jax report DIR` draws them later)")
    r.add_argument("--tensorboard", action="store_true",
                   help="also write the per-chunk metrics (metrics.jsonl) as TensorBoard events under OUT/tensorboard "
                        "(needs the optional tensorboardX package)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the interrupted run in DIR (it takes the config and table recorded there) from its "
                        "finished methods and the running method's latest checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace the run outputs already in --out")
    r.add_argument("--thresholds", default=None, help="sample-efficiency thresholds, e.g. \"slo=0.05,quality=0.9,utility_norm=0.9,gaps=0.5/0.8/0.95,slo_vs_oracle=0.05,quality_vs_oracle=0.95\" (keys change the defaults; docs/outputs.md)")
    distributed_arguments(r)
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="rebuild figures and summary.md of a finished run from its JSON files")
    rep.add_argument("dir", help="run output directory")
    rep.add_argument("--thresholds", default=None, help="as for run (default: the ones the run was made with)")
    rep.set_defaults(func=cmd_report)

    de = sub.add_parser("decide", help="print the decision between two methods of a finished run, per question "
                                       "(from its e5_decisions.json; docs/decisions.md)")
    de.add_argument("dir", help="run output directory (with e5_decisions.json: e5jax run, or e5jax report DIR)")
    de.add_argument("a", help="a method of the run")
    de.add_argument("b", help="another method of the run")
    de.set_defaults(func=cmd_decide)

    sw = sub.add_parser("sweep", help="tune every learned method with the same budget, compare default vs tuned, "
                                      "and check the comparison across lambda (one compile per method and phase)")
    sw.add_argument("--config", dest="spec", default="experiments/e5_sweep.toml",
                    help="sweep spec TOML (default: experiments/e5_sweep.toml; docs/sweep.md)")
    sw.add_argument("--table", default=None, help="profile table (default: the embedded default)")
    sw.add_argument("--out", default="artifacts/sweep", help="output directory (default: artifacts/sweep)")
    sw.add_argument("--overwrite", action="store_true", help="start over in --out instead of continuing its sweep")
    sw.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    sw.add_argument("--tensorboard", action="store_true",
                    help="also write the per-chunk metrics (metrics.jsonl) as TensorBoard events under OUT/tensorboard "
                         "(needs the optional tensorboardX package)")
    distributed_arguments(sw)
    sw.set_defaults(func=cmd_sweep)

    rb = sub.add_parser("robustness", help="run the E5 comparison on several tables and report, per question and "
                                           "pair of methods, whether the answer holds on every table, flips or is "
                                           "unresolved",
                        description="Run the E5 comparison (e5jax run) on each table into OUT/<table>/ and report, "
                                    "per question and pair of methods, the decision on each table and the verdict "
                                    "across tables (holds / flips / unresolved), and each table's winner set "
                                    "(OUT/robustness.json, OUT/summary.md, OUT/figures/robustness.png; "
                                    "docs/robustness.md). A rerun with the same tables and config skips the finished "
                                    "tables.")
    rb.add_argument("--tables", default=None,
                    help="comma-separated [NAME=]SOURCE, SOURCE = a .npz/.csv path, default, synth:SEED[:REQUESTS] "
                         "or a built-in name (default, synth_seed1, h100, easyvqa, shapes: the default list)")
    rb.add_argument("--spec", default=None, help="TOML spec instead of --tables: [tables] NAME = \"SOURCE\" (in "
                                                 "order), optional [robustness] config, seeds, methods")
    rb.add_argument("--config", default=None, help="run config TOML (default: the built-in default protocol)")
    rb.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides the config)")
    rb.add_argument("--methods", default=None, help="comma-separated subset of methods")
    rb.add_argument("--out", default="artifacts/robustness", help="output directory (default: artifacts/robustness)")
    rb.add_argument("--overwrite", action="store_true", help="start over in --out instead of continuing its run")
    rb.add_argument("--no-progress", action="store_true", help="disable the progress bars")
    rb.set_defaults(func=cmd_robustness)
    return p


def enable_compilation_cache() -> None:
    """Persist compiled XLA programs across runs (E5JAX_JAX_CACHE=dir, or 'off'); a rerun skips compilation."""
    import os

    where = os.environ.get("E5JAX_JAX_CACHE", str(Path.home() / ".cache" / "e5jax" / "jax"))
    if where.lower() in ("off", "0", "none", ""):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    # every program, however quick to compile: a warm default run otherwise recompiles the small ones (the overhead
    # analysis' decision programs, the references, ...) each time, ~3 s of it (docs/performance.md)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd in ("run", "validate", "robustness", "sweep"):
        enable_compilation_cache()
    try:
        if args.cmd in ("run", "sweep"):
            from e5jax import dist

            dist.initialize(args)  # before any JAX computation; a no-op unless asked for
        return args.func(args)
    except (TableError, UsageError) as e:
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
