"""Overhead accounting (issue #4): eager per-request decision time and the training-cost breakdown.

After the run's training (the timing programs compiled ahead of time with the training programs:
``timing.compile_components``), for each method ``analyze_method``:

1. exports every seed's controller (``e5jax.export``) to ``<out>/controllers/<method>_seed<i>.npz`` (+ ``.json``);
2. checks that the eager ``decide`` equals the vmapped greedy evaluator on every val request x evaluation budget;
3. times ``decide`` one request at a time (warm-up, then >= ``decisions`` calls over varied val requests and
   budgets, round-robin over the seeds' controllers): p50/p95/p99 ms, plus a jitted batch-1 JAX call for
   comparison (dispatch cost); at the end of the run all methods are re-timed interleaved (``Recorder.finish``);
4. times the method's named phases (``collect``, ``learn``; ``timing.phase_components``) on the run's batch sizes (all
   seeds vmapped, as in training): each runs ``n`` times inside one compiled ``fori_loop`` (``n`` calibrated so
   one call lasts about ``target_call_s``), every program once per round for ``repeats`` rounds,
   ``block_until_ready``; the evaluation is the run's own timing of its compiled ``evaluate``; the whole is the
   run's chunk time (or, without a run, the ``update`` compiled and timed as a piece); the learning step is the
   remainder, reported "below resolution" (null) when it lies within the noise of the timings it is derived from,
   never as a negative number (``timing.remainder``);
5. counts parameters (PPO's critic included).

``e5_overhead_analysis.json`` (schema ``e5jax/e5_overhead_analysis/v2``) is rewritten atomically after every
method. The timers, the component programs and the knobs (``timing.Settings``: environment variables, see
docs/overhead.md) are the timing harness, ``e5jax.timing``; this module is the analysis.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from e5jax import env as E
from e5jax import export as X
from e5jax import policy as P
from e5jax.io import write_json
from e5jax.methods import METHODS
from e5jax.timing import (SUM_RULE, Settings, compile_components, host_meta, time_decisions, time_decisions_interleaved,
                          time_training_components, timing_signature)

SCHEMA = "e5jax/e5_overhead_analysis/v2"
FILE = "e5_overhead_analysis.json"


# ----------------------------------------------------------------------------- eager == vmapped
def check_agreement(controllers: Sequence, method, states, table, env: E.EnvParams) -> dict:
    """Eager decisions vs the vmapped greedy evaluator on every val request x evaluation budget, every seed."""
    ref = X.vmapped_greedy(method, states, env)  # [S, B, Rv]
    reqs = X.val_requests(table, env)
    per_seed, mism = [], 0
    for c in controllers:
        eager = X.eager_decisions(c, reqs)
        same = eager == ref[c.seed].reshape(-1)
        per_seed.append(float(same.mean()))
        mism += int((~same).sum())
    n = len(reqs) * len(controllers)
    return {"fraction": float(1.0 - mism / n), "decisions_compared": int(n), "mismatches": int(mism),
            "per_seed": per_seed, "grid": "every val request x every evaluation budget"}


# ----------------------------------------------------------------------------- parameters
def param_counts(method, states, policies=None) -> dict:
    """The policy's own report (``sizes_report``, of row 0); for a parametric policy also the state's other
    trainable parameters (PPO's critic). ``policies``: :func:`export.host_policies` of these states, when known."""
    pols = X.host_policies(method, states) if policies is None else policies
    rep = X.unstack(pols, 0).sizes_report()
    if "total" in rep:
        return rep
    n_pol = rep["policy"]
    n_all = P.count_params(states.params, batch_dims=1) if hasattr(states, "params") else n_pol
    return {"policy": n_pol, "critic": n_all - n_pol, "total": n_all}


# ----------------------------------------------------------------------------- one method
def analyze_method(name: str, method, states, table, env: E.EnvParams, out: Path | None, train: dict | None = None,
                   settings: Settings = Settings(), num_updates: int | None = None, num_chunks: int | None = None,
                   keep: dict | None = None, programs: dict | None = None, evaluate: Callable | None = None) -> dict:
    """Export, agreement check, decision timing, component timing and parameter counts of one trained method.

    ``train``: the run's result for the method (``train_time_s``, ``compile_time_s``, ``updates``) when known.
    ``keep``: a dict that receives ``{name: controllers}`` (for the final interleaved timing)."""
    t_start = time.perf_counter()
    pols = X.host_policies(method, states)
    ctrls = X.export_controllers(name, method, states, table, env, policies=pols)
    if keep is not None:
        keep[name] = ctrls
    files = []
    if out is not None:
        files = [str(p.relative_to(out)) for p in X.save_controllers(ctrls, Path(out) / "controllers")]
    agreement = check_agreement(ctrls, method, states, table, env)
    reqs = X.val_requests(table, env)
    dec = time_decisions([c.decide for c in ctrls], reqs, settings.decisions, settings.warmup)
    res: dict[str, Any] = {
        "controller": ctrls[0].kind,
        "decision_ms": dec,
        "decision_timing": "this method alone, after the run's training",
        "decision_path": ("NumPy forward (float32): standardize features, task one-hot, standardized budget, "
                          "ReLU trunk, heads in one matmul, per-head argmax -> levels") if ctrls[0].kind == "mlp"
        else "dict lookup: task_type -> row, budget -> evaluation-budget column -> level tuple",
        "decision_seeds": [c.seed for c in ctrls],
        "eager_agreement": agreement,
    }
    if settings.jax_decisions > 0:
        jfns = [c.jax_batch1() for c in ctrls]
        res["decision_ms_jax_batch1"] = time_decisions(jfns, reqs, settings.jax_decisions, max(20, settings.warmup // 10))
    res["num_params"] = param_counts(method, states, pols)
    if train is not None:
        S = jax.tree_util.tree_leaves(states)[0].shape[0]
        upd = train.get("updates") or [0]
        nu = num_updates if num_updates is not None else int(upd[-1])
        nc = num_chunks if num_chunks is not None else max(1, len(upd) - 1)
        total = train.get("train_time_s")  # the run's, evaluations excluded; None when below resolution
        total = None if total is None else float(total)
        tr: dict[str, Any] = {"total_s": total, "per_seed_equivalent_s": None if total is None else total / S,
                              "seeds": S, "compile_s": train.get("compile_time_s"), "num_updates": nu,
                              "num_chunks": nc, "eval_time_s": train.get("eval_time_s"), "components": {}}
        for k in ("train_time_below_resolution", "train_time_resolution_s"):
            if k in train:
                tr[k] = train[k]
        if settings.components:
            ct = time_training_components(name, method, states, env, nu, settings.repeats, settings.target_call_s,
                                          train=train, num_chunks=nc, programs=programs, evaluate=evaluate)
            pieces = ct["pieces"]
            counted = {k: v for k, v in pieces.items() if v["in_components"]}
            tr["whole_s"] = ct["whole"]["value_s"]
            tr["whole"] = ct["whole"]
            tr["components"] = {k: v["value_s"] for k, v in counted.items()}  # seconds over the run; None: below res.
            tr["below_resolution"] = {k: v["resolution_s"] for k, v in counted.items() if v.get("below_resolution")}
            tr["components_sum_s"] = float(sum(v for v in tr["components"].values() if v is not None))
            tr["sum_rule"] = SUM_RULE
            tr["component_timing"] = pieces
        res["training"] = tr
    res["files"] = files
    res["analysis_wall_s"] = time.perf_counter() - t_start
    return res


# ----------------------------------------------------------------------------- the run hook
class Recorder:
    """Called by ``run_experiment`` for each method after all training (``compile`` before it, in the compile
    threads): analyses the method and rewrites ``e5_overhead_analysis.json``."""

    def __init__(self, out: Path, table, env: E.EnvParams, run_cfg=None, settings: Settings | None = None):
        self.out, self.table, self.env = Path(out), table, env
        self.run_cfg = run_cfg
        self.settings = settings or Settings()
        self.controllers: dict = {}
        self.programs: dict = {}  # {method: {piece: compiled}} from compile(), in the run's compile threads
        self._compiled: dict = {}  # {timing_signature: {piece: compiled}}
        self.compile_times: dict = {}  # {method: {"programs": {piece: stage times}} or {"shared_with": method}}
        self._compiled_by: dict = {}  # {timing_signature: the method whose compile made them}
        self._compiling: dict = {}  # {timing_signature: lock held while it compiles}
        self._lock = threading.Lock()
        self.doc = {
            "schema": SCHEMA,
            "complete": False,
            "meta": {
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv),
                "host": host_meta(),
                "settings": dataclasses.asdict(self.settings),
                "seeds": None if run_cfg is None else run_cfg.seeds,
                "budgets": [float(b) for b in np.asarray(env.budgets)],
                "knobs": {k: np.asarray(v).tolist() for k, v in table.knobs.items()},
                "units": {"decision_ms": "milliseconds per single-request decide() call",
                          "training.total_s": "training wall time of all seeds together (vmapped, compile and the "
                                              "in-chunk val evaluations excluded; null: below resolution)",
                          "training.whole_s": "the run's chunk time: training and in-chunk evaluations",
                          "training.components": "seconds over the run: median per-update time (all seeds) x updates "
                                                 "(evaluation: x eval points); the derived piece: the remainder, "
                                                 "null when below resolution (training.below_resolution)"},
                "notes": "CPU shared with other jobs: read medians/percentiles and ratios, not single numbers.",
                "analysis_wall_s": 0.0,
            },
            "methods": {},
        }

    @property
    def path(self) -> Path:
        return self.out / FILE

    def compile(self, name: str, method, states) -> None:
        """Compile the method's timing programs ahead of time (executes nothing: safe in a compile thread);
        ``states``: any states of the run's shapes (e.g. the initial ones). Methods with the same phases on states
        of the same structure and shapes (heuristic uses lut's) share one set of programs: the second waits for
        the first compile instead of repeating it."""
        if not self.settings.components:
            return
        key = timing_signature(method, states)
        with self._lock:
            lock = self._compiling.setdefault(key, threading.Lock())
        with lock:
            if key not in self._compiled:
                times: dict = {}
                self._compiled[key] = compile_components(method, states, self.env, times=times)
                self._compiled_by[key] = name
                self.compile_times[name] = {"programs": times}
            else:
                self.compile_times[name] = {"shared_with": self._compiled_by[key]}
        self.programs[name] = self._compiled[key]

    def __call__(self, name: str, method, states, result: dict, evaluate: Callable | None = None) -> None:
        run = self.run_cfg
        t0 = time.perf_counter()
        try:
            self.doc["methods"][name] = analyze_method(
                name, method, states, self.table, self.env, self.out, result, self.settings,
                num_updates=None if run is None else run.num_updates, num_chunks=None if run is None else run.num_chunks,
                keep=self.controllers, programs=self.programs.pop(name, None), evaluate=evaluate)
        except Exception as e:  # the overhead measurement must never lose a finished training run
            print(f"e5jax: overhead analysis of {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            self.doc["methods"][name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5)}
        if name in self.compile_times:  # its timing programs' trace / lower / compile seconds (in the compile threads)
            self.doc["methods"][name]["timing_programs_compile_s"] = self.compile_times[name]
        self.doc["meta"]["analysis_wall_s"] += time.perf_counter() - t0
        write_json(self.path, self.doc)

    def finish(self) -> None:
        """Re-time every method's decide() interleaved (blocks of 50 decisions per method in turn), so the
        headline ``decision_ms`` of all methods share the same machine conditions; add ratios to the LUT."""
        ok = [n for n in self.controllers if "decision_ms" in self.doc["methods"].get(n, {})]
        base = baseline()
        if ok:
            s = self.settings
            res = time_decisions_interleaved({n: [c.decide for c in self.controllers[n]] for n in ok},
                                             X.val_requests(self.table, self.env), s.decisions, s.warmup)
            for n in ok:
                m = self.doc["methods"][n]
                m["decision_ms_after_training"] = m["decision_ms"]
                m["decision_ms"] = res[n]
                m["decision_timing"] = "all methods interleaved at the end of the run (blocks of 50 decisions)"
                if base in res:  # the key is named after the baseline method (Method.decision_baseline)
                    m[f"decision_ratio_to_{base}"] = {p: res[n][p] / res[base][p] for p in ("p50", "p95", "p99")}
        self.doc["complete"] = True
        self.doc["overhead_table"] = overhead_table(self.doc)
        write_json(self.path, self.doc)


# ----------------------------------------------------------------------------- the table
def baseline() -> str | None:
    """The method the decision latencies are ratios to (``Method.decision_baseline``)."""
    return next((n for n, m in METHODS.items() if m.decision_baseline), None)


def seed_columns() -> dict:
    """The seed table's method columns: {column: (method, overhead pieces summed)} (``Method.seed_columns``)."""
    return {col: (n, parts) for n, m in METHODS.items() for col, parts in m.seed_columns.items()}


def overhead_table(doc: dict) -> list[dict]:
    """One row per method: the seed's overhead table (decision p50/p95/p99, critic training (PPO), pair
    generation (DPO), group generation (GRPO), total training) plus every measured component."""
    rows, base, columns = [], baseline(), seed_columns()
    for name, m in doc.get("methods", {}).items():
        if "decision_ms" not in m:
            continue
        d, tr = m["decision_ms"], m.get("training") or {}
        comps = tr.get("components") or {}
        row = {"method": name, "decision_p50_ms": d["p50"], "decision_p95_ms": d["p95"], "decision_p99_ms": d["p99"],
               f"decision_p50_ratio_to_{base}": (m.get(f"decision_ratio_to_{base}") or {}).get("p50"),
               "total_training_s": tr.get("total_s"), "per_seed_equivalent_s": tr.get("per_seed_equivalent_s"),
               "num_params": m.get("num_params", {}).get("total")}
        for col, (meth, parts) in columns.items():  # None: not this method's column, or below resolution
            vals = [comps[p] for p in parts if p in comps]
            row[col] = sum(vals) if name == meth and vals and None not in vals else None
        row["components_s"] = dict(comps)
        rows.append(row)
    return rows


def format_table(doc: dict) -> str:
    """Markdown rendering of ``overhead_table``."""
    g = lambda v, f="{:.3g}": "—" if v is None else f.format(v)  # noqa: E731
    base, columns = baseline(), seed_columns()
    heads = [f"{col.removesuffix('_s').replace('_', ' ')} ({meth.upper()})" for col, (meth, _) in columns.items()]
    L = ["| " + " | ".join(["method", "decision p50 / p95 / p99 (ms)", f"p50 / {str(base).upper()}",
                            "jax batch-1 p50 (ms)", "eager = vmapped", "params", "training total (s)",
                            "per seed equiv. (s)", *heads, "components (s)"]) + " |",
         "|" + "---|" * (9 + len(heads))]
    for r in overhead_table(doc):
        m = doc["methods"][r["method"]]
        j = (m.get("decision_ms_jax_batch1") or {}).get("p50")
        ag = m.get("eager_agreement", {})
        L.append("| " + " | ".join([
            r["method"], f"{r['decision_p50_ms']:.4f} / {r['decision_p95_ms']:.4f} / {r['decision_p99_ms']:.4f}",
            g(r[f"decision_p50_ratio_to_{base}"], "{:.1f}×"), g(j, "{:.4f}"), f"{ag.get('fraction', float('nan')):.4f} ({ag.get('decisions_compared', 0)})",
            f"{r['num_params']:,}" if r["num_params"] is not None else "—",
            g(r["total_training_s"]), g(r["per_seed_equivalent_s"]), *(g(r[col]) for col in columns),
            ", ".join(f"{k} {v:.3g}" if v is not None else f"{k} below resolution "
                      f"(< {(m['training'].get('below_resolution') or {}).get(k, float('nan')):.2g})"
                      for k, v in r["components_s"].items()) or "—"]) + " |")
    return "\n".join(L)
