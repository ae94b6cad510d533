"""`e5jax robustness`: the E5 comparison on several tables, and which of its answers hold on every table.

Each table gets one ordinary run (``run.run_experiment`` + ``report.write_outputs``) in ``OUT/<table name>/``, so
every table's answers are the ones its own ``summary.md`` / ``e5_decisions.json`` state (``e5jax.decide``: the
two-level bootstrap over seeds and val requests). Across tables, per question (``report.decisions.QUESTIONS``) and
per pair of methods, ``decide.across`` gives the verdict: **holds** (resolved the same way on every table), **flips**
(resolved in opposite directions on two tables) or **unresolved** (anything else); per table the winner set, and the
methods in the winner set on every table.

Tables are named sources (``parse_tables``): a ``.npz``/``.csv`` path, ``default`` (the embedded table), a
built-in name (``BUILTIN``) or ``synth:SEED[:REQUESTS]`` (``e5jax.synth.generate`` written once into
``OUT/tables/<name>.npz`` and reused on a rerun). ``OUT/robustness.json`` records a fingerprint of the table list
(content hashes), the run config and the method configs: a rerun with the same spec skips every table whose run is
complete with that config and table (and continues an interrupted one from its checkpoints); another spec in the
same ``OUT`` is refused unless ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path

from e5jax import decide as D
from e5jax.config import ConfigError, load_config, read_toml
from e5jax.errors import UsageError
from e5jax.io import atomic_write, read_json, write_json
from e5jax.report.decisions import QUESTIONS
from e5jax.table import ProfileTable, default_table_path, load_table

SCHEMA = "e5jax/robustness/v1"
FILE = "robustness.json"
SUMMARY = "summary.md"
FIG = "figures/robustness.png"
TABLE_DIR = "tables"  # generated synthetic tables
RESERVED = ("tables", "figures")
ROOT = Path(__file__).resolve().parents[2]  # the repository (built-in table paths are relative to it)
SYNTH_REQUESTS = 1200  # the default table's size (docs/default_table.md)
# built-in names -> sources; the default list is these five, in this order
BUILTIN = {
    "default": "default",
    "synth_seed1": "synth:1",
    "h100": "artifacts/tables/h100_llava_olmoe.npz",
    "easyvqa": "artifacts/tables/cpu_tiny_llava_olmoe_easyvqa.npz",
    "shapes": "artifacts/tables/cpu_tiny_llava_olmoe_shapes.npz",
}
DEFAULT_TABLES = tuple(BUILTIN)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
METHOD_KEYS = ("value", "ci_seeds", "ci_two_level", "deterministic")  # per table and method in robustness.json


@dataclasses.dataclass(frozen=True)
class TableSource:
    name: str
    source: str  # as given: "default", "synth:SEED[:N]" or a path
    path: Path | None = None  # a file table's path
    synth_seed: int | None = None
    synth_requests: int | None = None

    @property
    def synthetic_generated(self) -> bool:
        return self.synth_seed is not None


# ----------------------------------------------------------------------------------------------- table list
def _source(name: str, src: str) -> TableSource:
    src = str(src).strip()
    src = BUILTIN.get(src, src)  # NAME=h100 etc.
    if src == "default":
        return TableSource(name, src, path=default_table_path())
    if src.startswith("synth:"):
        parts = src.split(":")[1:]
        try:
            seed = int(parts[0])
            n = int(parts[1]) if len(parts) > 1 else SYNTH_REQUESTS
        except (ValueError, IndexError):
            raise UsageError(f"table {name}: {src!r} is not synth:SEED or synth:SEED:REQUESTS (integers)") from None
        if len(parts) > 2 or seed < 0 or n < 10:
            raise UsageError(f"table {name}: {src!r}: need synth:SEED[:REQUESTS] with SEED >= 0 and REQUESTS >= 10")
        return TableSource(name, src, synth_seed=seed, synth_requests=n)
    p = Path(src)
    if not p.is_absolute() and not p.exists() and (ROOT / p).exists() and src in BUILTIN.values():
        p = ROOT / p  # a built-in path, run from outside the repository
    if p.suffix.lower() not in (".npz", ".csv"):
        raise UsageError(f"table {name}: {src!r} is not a .npz/.csv file, 'default' or synth:SEED")
    if not p.is_file():
        raise UsageError(f"table {name}: no such file {src}")
    return TableSource(name, src, path=p)


def parse_tables(items) -> list[TableSource]:
    """Table sources from ``[NAME=]SOURCE`` items (``--tables``) or (name, source) pairs (a spec's ``[tables]``).

    SOURCE: a .npz/.csv path, ``default``, ``synth:SEED[:REQUESTS]``, or (without NAME=) a built-in name
    (``BUILTIN``). Without NAME the name is the built-in name, the file's stem or ``synth_seedSEED``."""
    out = []
    for it in items:
        if isinstance(it, tuple):
            name, src = it
        else:
            it = it.strip()
            if not it:
                continue
            name, src = it.split("=", 1) if "=" in it else (None, it)
            if name is None:
                if src in BUILTIN:
                    name, src = src, BUILTIN[src]
                elif src.startswith("synth:"):
                    name = "synth_seed" + src.split(":")[1]
                elif "/" in src or "." in src:
                    name = Path(src).stem
                else:
                    raise UsageError(f"--tables: unknown table name {src!r} (built-in: {', '.join(BUILTIN)}; or give "
                                     "NAME=PATH, a .npz/.csv path, default or synth:SEED)")
        name = str(name).strip()
        if not NAME_RE.match(name) or name in RESERVED:
            raise UsageError(f"table name {name!r}: use letters, digits, '_', '-', '.' (not {' or '.join(RESERVED)})")
        out.append(_source(name, src))
    if not out:
        raise UsageError("no tables given")
    names = [t.name for t in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"table name {dup[0]!r} given twice (name them: NAME=SOURCE)")
    return out


def load_spec(path) -> dict:
    """A TOML spec: ``[tables]`` name = source (in order), optional ``[robustness]`` config, seeds, methods."""
    raw = read_toml(path, UsageError)
    bad = sorted(set(raw) - {"tables", "robustness"})
    if bad:
        raise UsageError(f"robustness spec {path}: unknown section [{bad[0]}] (sections: [robustness], [tables])")
    opts = dict(raw.get("robustness", {}))
    bad = sorted(set(opts) - {"config", "seeds", "methods"})
    if bad:
        raise UsageError(f"robustness spec {path}: [robustness] unknown key {bad[0]!r} (known: config, methods, seeds)")
    tabs = raw.get("tables")
    if not isinstance(tabs, dict) or not tabs:
        raise UsageError(f"robustness spec {path}: [tables] is missing or empty (name = \"path\" | \"default\" | "
                         "\"synth:SEED\")")
    if any(not isinstance(v, str) for v in tabs.values()):
        raise UsageError(f"robustness spec {path}: [tables] values must be strings (a path, default or synth:SEED)")
    return {"tables": list(tabs.items()), **opts}


# ----------------------------------------------------------------------------------------------- conditions
def table_conditions(table: ProfileTable) -> dict:
    """What a table's latency and quality are: measured (where, how) or synthetic, read from its meta."""
    m = table.meta
    gen = m.get("generator") if isinstance(m.get("generator"), dict) else {}
    if m.get("source") == "e5jax.synth":
        return {"latency": "synthetic (e5jax.synth cost model)", "quality": "synthetic (e5jax.synth quality model)",
                "quality_measured": False, "latency_measured": False, "generator_seed": gen.get("seed")}
    if m.get("source") == "profiling_bridge":
        dev = m.get("device", {}) if isinstance(m.get("device"), dict) else {}
        where = dev.get("name") or (f"{dev['type']} ({dev.get('machine')})" if dev.get("type") else "unknown device")
        method = (m.get("latency") or {}).get("method") if isinstance(m.get("latency"), dict) else None
        lat = f"measured on {where}" + (f" (--method {method})" if method else "")
        qs = str(m.get("quality_source", ""))
        if m.get("quality_is_placeholder"):
            q, qm = "placeholder (not a measurement)", False
        elif "e5jax.synth" in qs:
            q, qm = f"SYNTHETIC ({qs})", False
        elif qs:
            q, qm = f"measured ({qs.split(' (')[0].split(' of ')[0]})", True
        else:
            q, qm = "unknown (no quality_source in the table's meta)", None
        return {"latency": lat, "quality": q, "quality_measured": qm, "latency_measured": True, "generator_seed": None,
                "quality_source": qs}
    return {"latency": f"unknown (source: {m.get('source')})", "quality": f"unknown (source: {m.get('source')})",
            "quality_measured": None, "latency_measured": None, "generator_seed": gen.get("seed")}


def _sha16(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def spec_fingerprint(tables: list[TableSource], hashes: dict, run, cfgs: dict) -> str:
    """The whole spec: each table's name and content (a file's hash; a generated table's seed and size), the run
    config and the method configs."""
    tabs = [{"name": t.name, **({"synth": [t.synth_seed, t.synth_requests]} if t.synthetic_generated
                                else {"sha256_16": hashes[t.name]})} for t in tables]
    blob = json.dumps({"tables": tabs, "run": dataclasses.asdict(run),
                       "cfgs": {k: dataclasses.asdict(v) for k, v in cfgs.items()}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- analysis
def cross_table(per_table: dict) -> dict:
    """Per question, from each table's ``e5_decisions.json`` questions {table: {question: compare result}}: every
    method's value and CIs, the winner set per table and the methods in it on every table, every pair's decision per
    table and its verdict across tables (``decide.across``)."""
    tables = list(per_table)
    out = {}
    for q, (_, stat, higher, label) in QUESTIONS.items():
        if q not in per_table[tables[0]]:
            continue
        res = {t: per_table[t][q] for t in tables}
        names = list(res[tables[0]]["methods"])
        for t in tables[1:]:
            if list(res[t]["methods"]) != names:
                raise ValueError(f"question {q}: table {t} has methods {list(res[t]['methods'])}, not {names}")
        winners = {t: list(res[t]["winners"]) for t in tables}
        everywhere = [m for m in names if all(m in winners[t] for t in tables)]
        pairs = {}
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                rows = {t: D.pair(res[t], a, b) for t in tables}
                v = D.across({t: r["decision"] for t, r in rows.items()})
                better = None if v["direction"] is None else (a if (v["direction"] == ">") == higher else b)
                pairs[f"{a} vs {b}"] = {
                    "a": a, "b": b, "verdict": v["verdict"], "direction": v["direction"],
                    # holds: the better method on every table; unresolved: the direction of the resolved tables
                    "better": better,
                    "decisions": v["where"],
                    "diff": {t: r["diff"] for t, r in rows.items()},
                    "ci_two_level": {t: r["ci_two_level"] for t, r in rows.items()},
                    "decisions_seeds": {t: r["decision_seeds"] for t, r in rows.items()},
                }
        out[q] = {
            "label": label, "statistic": stat, "higher_is_better": higher,
            "methods": {t: {m: {k: res[t]["methods"][m][k] for k in METHOD_KEYS} for m in names} for t in tables},
            "best": {t: res[t]["best"] for t in tables},
            "winners": winners,
            "in_winner_set_on_every_table": everywhere,
            "same_winner_set_on_every_table": all(set(winners[t]) == set(winners[tables[0]]) for t in tables),
            "pairs": pairs,
            "holds_on_every_table": [pair_statement(p) for p in pairs.values() if p["verdict"] == "holds"],
            "flips": [f"{p['a']} vs {p['b']}" for p in pairs.values() if p["verdict"] == "flips"],
        }
    return out


def pair_statement(p: dict) -> str:
    """'a ≻ b' (a is better) for a pair that holds; 'a vs b: flips' / 'unresolved' otherwise."""
    if p["verdict"] == "holds":
        worse = p["b"] if p["better"] == p["a"] else p["a"]
        return f"{p['better']} ≻ {worse}"
    return f"{p['a']} vs {p['b']}: {p['verdict']}"


def pair_cells(p: dict, tables: list) -> str:
    """Per table, who is better ('a ≻' style, from a's side: '≻' a better, '≺' b better, '~' unresolved)."""
    def one(t):
        d = p["decisions"][t]
        if d == "unresolved":
            return f"{t} ~"
        better = p["a"] if (d == ">") == p["higher"] else p["b"]
        return f"{t}: {better}"
    return ", ".join(one(t) for t in tables)


# ----------------------------------------------------------------------------------------------- prose
def summary_markdown(doc: dict) -> str:
    meta, tabs, qs = doc["meta"], doc["tables"], doc["questions"]
    names = list(tabs)
    L = [f"# E5 across tables — {meta['created']}", "",
         f"Command: `{meta['command']}`. One `e5jax run` per table in `<out>/<table>/` (its own summary.md and "
         "e5_decisions.json); the verdicts below combine their decisions.", "",
         f"Conditions of every answer: {meta['settings']}; run config {meta['config'] or 'built-in default protocol'}; "
         f"methods {', '.join(meta['methods'])}; {meta['seeds']} seeds (base seed {meta['base_seed']}); λ = "
         f"{meta['lam']}; budgets {meta['budgets']}; {meta['total_env_steps']:,} env steps per method and seed. "
         f"Per table and question: the two-level bootstrap (seeds, then val requests; {D.N_BOOT} replicates, "
         f"{D.CONFIDENCE:.0%} percentile CIs, no multiple-comparison correction) of `e5jax.decide`.", "",
         "| table | source | requests (train/val) x configs | tasks | latency | quality |", "|---|---|---|---|---|---|"]
    for t, c in tabs.items():
        src = c["source"] + (f" (generated: seed {c['generator_seed']})" if c.get("generated") else "")
        L.append(f"| {t} | `{src}` sha256 {c['sha256_16']} | {c['train_requests']}/{c['val_requests']} x "
                 f"{c['num_configs']} | {c['num_tasks']} | {c['latency']} | {c['quality']} |")
    syn = [t for t, c in tabs.items() if c["quality_measured"] is not True]
    if syn:
        L += ["", f"Quality is not measured on {', '.join(syn)}: an answer that holds there holds on a synthetic (or "
              "unknown) quality model, not on a model's measured answers."]
    L += ["", "## Which answers hold on every table", ""]
    for q, r in qs.items():
        ev = r["in_winner_set_on_every_table"]
        held = r["holds_on_every_table"]
        L.append(f"- **{r['label']}** ({'higher' if r['higher_is_better'] else 'lower'} is better): in the winner set "
                 f"on every table: {', '.join(ev) if ev else 'no method'}"
                 + ("" if not r["same_winner_set_on_every_table"] else " (the same winner set on every table)")
                 + f"; orderings that hold on every table ({len(held)} of {len(r['pairs'])} pairs): "
                 + (", ".join(held) or "none") + (f"; flips: {', '.join(r['flips'])}" if r["flips"] else "") + ".")
        if r["statistic"] == "std":  # a deterministic method's std is 0 by construction: not robustness
            det = {m: [t for t in names if r["methods"][t][m]["deterministic"]] for m in r["methods"][names[0]]}
            det = {m: ts for m, ts in det.items() if ts}
            if det:
                L.append("  Deterministic (identical results for every seed: a std of 0 by construction, which says "
                         "nothing about robustness): " + "; ".join(f"{m} on {', '.join(ts)}" for m, ts in det.items())
                         + ".")
    L += ["", "## Winner set per question and table", "",
          "Winner set = every method not separated (two-level 95% CI of the difference) from the best point "
          "estimate, best first.", "",
          "| question | " + " | ".join(names) + " | in the winner set on every table |",
          "|---|" + "---|" * (len(names) + 1)]
    for q, r in qs.items():
        L.append(f"| {r['label']} | " + " | ".join("{" + ", ".join(r["winners"][t]) + "}" for t in names)
                 + f" | {', '.join(r['in_winner_set_on_every_table']) or '—'} |")
    L += ["", f"![values per table]({FIG})", "",
          "## Every pair's verdict across tables", "",
          "Per pair: **holds** = resolved the same way on every table; **flips** = resolved in opposite directions "
          "on two tables; **unresolved** = otherwise (unresolved on some table, nowhere opposite). In brackets, per "
          "table, the better method or ~ (unresolved)."]
    for q, r in qs.items():
        L += ["", f"**{r['label']}**", ""]
        for kind in ("holds", "flips", "unresolved"):
            ps = [p for p in r["pairs"].values() if p["verdict"] == kind]
            if not ps:
                continue
            items = []
            for p in ps:
                cells = pair_cells({**p, "higher": r["higher_is_better"]}, names)
                head = pair_statement(p) if kind == "holds" else f"{p['a']} vs {p['b']}"
                items.append(f"{head} [{cells}]")
            L.append(f"- {kind} ({len(ps)}): " + "; ".join(items))
    L.append("")
    return "\n".join(L)


# ----------------------------------------------------------------------------------------------- command
def _run_dirs_present(out: Path, names) -> list[str]:
    from e5jax.run import run_outputs

    return [f"{n}/{p.name}" for n in names for p in run_outputs(out / n) if p.exists()]


def _clean(out: Path, names) -> None:
    """Remove only what this command writes: the run outputs of each table directory, the generated tables, the
    figure, robustness.json and summary.md."""
    from e5jax.run import run_outputs

    for n in names:
        for p in run_outputs(out / n):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        if (out / n).is_dir() and not any((out / n).iterdir()):
            (out / n).rmdir()
        (out / TABLE_DIR / f"{n}.npz").unlink(missing_ok=True)
    for p in (out / FIG, out / FILE, out / SUMMARY):
        p.unlink(missing_ok=True)


def _table_state(d: Path, fps: dict) -> str:
    """"complete" (finished with these fingerprints), "partial" (interrupted) or "absent"."""
    from e5jax.report import CURVES

    p = d / CURVES
    if not p.is_file():
        return "absent"
    doc = read_json(p)
    old = doc.get("meta", {}).get("fingerprints", {})
    if any(old.get(m) not in (None, fps[m]) for m in fps):
        bad = next(m for m in fps if old.get(m) not in (None, fps[m]))
        raise UsageError(f"{p}: {bad} was run with another config or table than this spec's; use --overwrite")
    return "complete" if doc.get("complete") and set(fps) <= set(old) else "partial"


def _run_tables(sources, tables, paths, conds, run, cfgs, out: Path, no_progress: bool) -> dict:
    """Run (or skip, or continue) every table; {table: its e5_decisions.json}."""
    from tqdm.auto import tqdm

    from e5jax import report as R
    from e5jax.checkpoint import ResumeError
    from e5jax.run import print_final, run_experiment, run_fingerprint

    n = len(sources)
    per_table = {}
    with tqdm(total=n, desc="e5 robustness", unit="table", file=sys.stderr, disable=no_progress,
              position=0) as bar:
        for i, t in enumerate(sources):
            d = out / t.name
            fps = {m: run_fingerprint(run, cfgs[m], {"sha256_16": conds[t.name]["sha256_16"]}) for m in run.methods}
            state = _table_state(d, fps)
            c = conds[t.name]
            print(f"[{i + 1}/{n}] {t.name}: {c['num_requests']} requests x {c['num_configs']} configs, latency "
                  f"{c['latency']}, quality {c['quality']}" + {"complete": " — complete, skipped",
                                                                 "partial": " — continuing the interrupted run",
                                                                 "absent": ""}[state], file=sys.stderr)
            if state != "complete":
                try:
                    rdoc = run_experiment(run, cfgs, tables[t.name], paths[t.name], d, progress=not no_progress,
                                          resume=state == "partial")
                except ResumeError as e:
                    raise UsageError(str(e)) from None
                R.write_outputs(d, thresholds=run.thresholds)
                print_final(rdoc, d)
            elif not (d / R.DECISIONS).is_file() or not (d / R.SUMMARY).is_file():
                R.write_outputs(d, thresholds=run.thresholds)  # finished training, report not yet written
            per_table[t.name] = read_json(d / R.DECISIONS)
            bar.update(1)
    return per_table


def robustness_from_args(args) -> int:
    spec = load_spec(args.spec) if args.spec else {}
    if args.spec and args.tables:
        raise UsageError("give the tables by --spec or by --tables, not both")
    items = (spec.get("tables") if args.spec else
             args.tables.split(",") if args.tables else list(DEFAULT_TABLES))
    sources = parse_tables(items)
    config = args.config or spec.get("config") or None
    seeds = args.seeds if args.seeds is not None else spec.get("seeds")
    methods = spec.get("methods")
    if methods is not None and not (isinstance(methods, str) or
                                    (isinstance(methods, list) and all(isinstance(m, str) for m in methods))):
        raise UsageError(f"robustness spec {args.spec}: [robustness] methods must be a list of method names")
    methods = args.methods or (",".join(methods) if isinstance(methods, list) else methods)
    try:
        run, cfgs = load_config(config, seeds=seeds, methods=methods)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")

    # every table loaded (or generated in memory) before anything is written
    from e5jax.synth import generate

    tables, paths, to_save = {}, {}, {}
    for t in sources:
        if t.synthetic_generated:
            p = out / TABLE_DIR / f"{t.name}.npz"
            tab = None
            if p.is_file() and not args.overwrite:
                tab = load_table(p)
                g = tab.meta.get("generator") if isinstance(tab.meta.get("generator"), dict) else {}
                if (g.get("seed"), g.get("num_requests")) != (t.synth_seed, t.synth_requests):
                    tab = None  # another seed: the spec check below refuses (or --overwrite replaces it)
            if tab is None:
                tab = generate(seed=t.synth_seed, num_requests=t.synth_requests)
                to_save[t.name] = p
            tables[t.name], paths[t.name] = tab, p
        else:
            tables[t.name], paths[t.name] = load_table(t.path), t.path
    hashes = {t.name: _sha16(paths[t.name]) for t in sources if not t.synthetic_generated}
    fp = spec_fingerprint(sources, hashes, run, cfgs)
    path = out / FILE
    old = read_json(path) if path.is_file() else None
    if old is not None and not args.overwrite and old.get("meta", {}).get("fingerprint") != fp:
        raise UsageError(f"--out {out}: holds a robustness run with another table list, config or seeds; use another "
                         "--out or --overwrite")
    if old is None and not args.overwrite:
        stray = _run_dirs_present(out, [t.name for t in sources])
        if stray:
            raise UsageError(f"--out {out}: {stray[0]} holds a run not made by e5jax robustness; use another --out or "
                             "--overwrite")
    if args.overwrite:
        _clean(out, {t.name for t in sources} | set((old or {}).get("tables", {})))
        old = None

    # ---- writing starts here
    from e5jax.run import table_provenance

    for name, p in to_save.items():
        tables[name].save(p)
    conds = {}
    for t in sources:
        tab = tables[t.name]
        prov = table_provenance(tab, paths[t.name])
        conds[t.name] = {"source": t.source, "path": str(paths[t.name]), "sha256_16": prov["sha256_16"],
                         "generated": t.synthetic_generated, **table_conditions(tab),
                         "num_requests": tab.num_requests, "num_configs": tab.num_configs,
                         "train_requests": int((tab.split == "train").sum()),
                         "val_requests": int((tab.split == "val").sum()),
                         "num_tasks": len(tab.task_names), "tasks": list(tab.task_names), "run_dir": t.name}
    doc = {"schema": SCHEMA, "complete": False,
           "meta": {"created": (old or {}).get("meta", {}).get("created")
                    or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "command": " ".join(sys.argv),
                    "fingerprint": fp, "config": config,
                    "settings": "default (untuned) hyperparameters of the run config",
                    "methods": list(run.methods), "seeds": run.seeds, "base_seed": run.base_seed, "lam": run.lam,
                    "budgets": list(run.budgets), "total_env_steps": run.total_env_steps,
                    "run": dataclasses.asdict(run),
                    "method_configs": {k: dataclasses.asdict(v) for k, v in cfgs.items()}},
           "tables": conds, "questions": {}}
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)

    n = len(sources)
    print(f"e5jax robustness: {n} tables x {len(run.methods)} methods x {run.seeds} seeds -> {out}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        per_table = _run_tables(sources, tables, paths, conds, run, cfgs, out, args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished tables and methods are kept in {out}; rerun the same command to continue",
              file=sys.stderr)
        return 130
    doc["tables_data_level"] = {t: per_table[t]["data_level"] for t in per_table}
    doc["questions"] = cross_table({t: v["questions"] for t, v in per_table.items()})
    doc["holds_on_every_table"] = {q: r["holds_on_every_table"] for q, r in doc["questions"].items()}
    doc["in_winner_set_on_every_table"] = {q: r["in_winner_set_on_every_table"] for q, r in doc["questions"].items()}
    doc["definition"] = ("per table: e5jax.decide.compare on the run's e5_val_actions.npz (two-level bootstrap, "
                         "seeds then val requests); across tables: decide.across on each pair's per-table decision "
                         "(holds = resolved the same way on every table; flips = resolved in opposite directions on "
                         "two tables; unresolved = otherwise); winner set = methods not separated from the best")
    doc["complete"] = True
    doc["meta"]["wall_s_this_process"] = time.perf_counter() - t0
    write_json(path, doc)
    from e5jax import figures as Fg

    Fg.robustness(read_json(path), out / FIG)  # the JSON round trip (None for NaN)
    text = summary_markdown(doc)
    atomic_write(out / SUMMARY, lambda f: f.write(text))
    print(text)
    return 0
