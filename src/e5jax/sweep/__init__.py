"""`e5jax sweep`: every learned method tuned with the same budget, and the comparison across lambda.

One compile per method and phase: a method's trials x seeds are rows of one vmapped program (its traced
hyperparameters, the ``common.traced`` fields of its config, are per-row values in the state; ``engine.with_hp``),
and lambda is a per-row override of the environment (``env_rows``, ``engine.row_env``), never in the method's
state. The rows are sharded over ``jax.devices()`` (padded to a multiple
of the device count), so several accelerators, or several hosts after ``jax.distributed.initialize()``, share
them through JAX's own partitioning.

Three phases, each method's result written to ``sweep.json`` as soon as it is done (a rerun with the same spec,
table and base config skips what is there):

1. **tune**: per method, ``trials`` settings (trial 0 = the base config's defaults; the others drawn at random
   from the method's search space, or a full grid) x ``seeds`` tuning seeds (the same seeds for every trial), at
   the base config's env-step budget, trained on the train requests left after carving a tuning split from
   train (``ProfileTable.tuning_split``) and scored on that tuning split, never on val: final normalized utility
   and sample-efficiency AUC; the setting chosen by each (a chosen value near a range edge widens that range and
   re-tunes, ``widen_rounds``);
2. **compare**: every method of the base config on the real split with ``final_seeds`` fresh seeds
   (``base_seed + 1``): the default settings and, for tuned methods, the chosen settings, in one program;
3. **lambda**: every method at each lambda in ``lams`` (the tuned settings at the base lambda, or re-tuned per
   lambda with ``retune``; ``seeds`` seeds) with each lambda's own oracle and random references.

The spec and the search spaces: ``sweep.spec``; the phases: ``sweep.phases``; the conclusions, ``summary.md`` and
figures: ``sweep.report``; this module: the command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import jax
from tqdm.auto import tqdm

from e5jax.config import ConfigError, RunConfig, load_config
from e5jax.errors import UsageError
from e5jax.io import is_writer, read_json, write_json
from e5jax.run import table_provenance
from e5jax.sweep.phases import phase_compare, phase_lambda, phase_tune
from e5jax.sweep.report import compare_answers, have_per_request, lambda_conclusions, write_report
from e5jax.sweep.spec import SweepSpec, check_spec, load_spec
from e5jax.table import default_table_path, load_table
from e5jax.watch import METRICS_FILE, TENSORBOARD_DIR, MetricsStream, Watchdog, watching

SCHEMA = "e5jax/sweep/v1"
FILE = "sweep.json"


def _fingerprint(spec: SweepSpec, run: RunConfig, cfgs: dict, table_sha: str) -> str:
    blob = json.dumps({"spec": dataclasses.asdict(spec), "run": dataclasses.asdict(run),
                       "cfgs": {k: dataclasses.asdict(v) for k, v in cfgs.items()}, "table": table_sha},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- command
def sweep_from_args(args) -> int:
    spec = load_spec(args.spec)
    try:
        run, cfgs = load_config(spec.config or None, methods=None)
    except ConfigError as e:
        raise UsageError(f"sweep spec config {spec.config!r}: {e}") from None
    check_spec(spec, cfgs)
    table_path = Path(args.table) if args.table else default_table_path()
    table = load_table(table_path)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    fp = _fingerprint(spec, run, cfgs, table_provenance(table, table_path)["sha256_16"])
    path = out / FILE
    doc = None
    if path.is_file() and not args.overwrite:
        old = read_json(path)
        if old.get("meta", {}).get("fingerprint") != fp:
            raise UsageError(f"--out {out}: holds a sweep with another spec, config or table; use another --out or "
                             "--overwrite")
        doc = old
        print(f"e5jax sweep: continuing {path} (finished parts are skipped)")
    if doc is None:
        doc = {"schema": SCHEMA, "complete": False, "spec": dataclasses.asdict(spec),
               "meta": {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
                        "fingerprint": fp, "base_config": spec.config, "table": str(table_path), "lam": run.lam,
                        "total_env_steps": run.total_env_steps, "devices": [str(d) for d in jax.devices()],
                        "heads": sorted({c.head_kind for c in cfgs.values() if hasattr(c, "head_kind")}),
                        "seed_keys": {"tune, lambda": f"fold_in(PRNGKey({run.base_seed}), i)",
                                      "compare": f"fold_in(PRNGKey({run.base_seed + 1}), i) (fresh)"}}}
    try:
        watchdog = Watchdog.from_env(resume_hint=f"the same e5jax sweep command (it continues {path})")
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.overwrite and is_writer():  # a new sweep: its own metrics stream
        (out / METRICS_FILE).unlink(missing_ok=True)
        shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)
    try:
        stream = MetricsStream(out, tensorboard=getattr(args, "tensorboard", False)) if is_writer() else None
    except ValueError as e:
        raise UsageError(str(e)) from None

    def save():
        write_json(path, doc)

    n_tune = len(spec.methods) if "tune" in spec.phases else 0
    n_rest = len(run.methods) * (("compare" in spec.phases) + ("lambda" in spec.phases))
    t0 = time.perf_counter()
    with tqdm(total=(n_tune + n_rest) * run.num_chunks, desc="e5 sweep", unit="chunk", file=sys.stderr,
              disable=args.no_progress) as pbar, watching(watchdog, stream):
        try:
            if "tune" in spec.phases:
                phase_tune(spec, run, cfgs, table, doc, save, pbar)
            rng = (float(run.env_steps_per_update), float(run.total_env_steps))  # the AUC's env-step range
            if "compare" in spec.phases:
                phase_compare(spec, run, cfgs, table, doc, save, pbar, out)
                if have_per_request(out, doc["compare"].values()) or "answers" not in doc:
                    doc["answers"] = compare_answers(doc, out, run.lam, rng)
                save()
            if "lambda" in spec.phases and spec.lams:
                phase_lambda(spec, run, cfgs, table, doc, save, pbar, out)
                if have_per_request(out, doc["lambda"]["methods"].values()) or "lambda_conclusions" not in doc:
                    doc["lambda_conclusions"] = lambda_conclusions(doc, out, rng)
                save()
        except KeyboardInterrupt:
            save()
            print(f"\ninterrupted: finished parts are in {path}; rerun the same command to continue", file=sys.stderr)
            return 130
    doc["meta"]["wall_s_this_process"] = time.perf_counter() - t0
    doc["complete"] = True
    save()
    if is_writer():  # process 0 writes the report (under jax.distributed the others only train)
        print(write_report(doc, out))
    return 0
