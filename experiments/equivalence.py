"""Are two code versions of the lab statistically equivalent? (the rule for changes that alter arithmetic, issue 23)

    python experiments/equivalence.py OLD_REV [NEW_REV] --seeds 20 [--config TOML] [--out REPORT.json]
                                      [--margin 0.01] [--workdir DIR] [--reuse] [--new-env KEY=VALUE ...]

Runs `e5jax run --seeds N --no-progress` with the overhead analysis off (E5JAX_OVERHEAD=off) for OLD_REV (checked
out in a detached git worktree) and for NEW_REV (default: this working tree), one after the other, each with its
own ``src`` on PYTHONPATH, on the same seeds (each version's default config, or both on --config). Then:

- per method and metric (final normalized utility: the last point of the run's ``val_utility_norm`` per seed,
  mean over budgets; AUC: the run's own per-seed sample-efficiency AUC): the paired differences new − old per
  seed, their mean and its 90 % paired t interval (mean ± t_{0.95, n−1} · sd / √n, ``scipy.stats.t``).
  **equivalent** iff that interval lies strictly inside ±margin (two one-sided tests at 5 % each);
  **identical** when every per-seed value is bit-equal.
- every ordering ``e5_decisions.json`` states (per question: each pair's decision, two-level and seeds-only,
  and the winner set) must be the same.

The versions are equivalent when every method is equivalent (or identical) on both metrics and no ordering
differs. Prints one line per method and an overall line, writes the report JSON (default
``artifacts/equivalence/OLD_vs_NEW.json``). Exit 0: equivalent; 1: not; 2: usage error or a run failed.
Fewer than 20 seeds are refused (exit 2, nothing written) unless --allow-few-seeds (tests, smoke runs).
--reuse keeps a run directory in --workdir made by the same revision, seeds and config (the working tree counts
as its HEAD commit: edit nothing between the runs you reuse).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

from e5jax.io import write_json

CONFIDENCE = 0.90
MARGIN = 0.01
MIN_SEEDS = 20
METRICS = {"final_utility": "final normalized utility", "auc": "sample-efficiency AUC"}
VERDICTS = ("identical", "equivalent", "not equivalent")  # best first
FLIP = {">": "<", "<": ">"}
RUN_FILES = ("e5_training_curves.json", "e5_sample_efficiency.json", "e5_decisions.json")
DEFINITION = (f"per method and metric: d = new − old per seed (same seeds); {CONFIDENCE:.0%} paired t interval "
              "of mean(d) = mean ± t_{0.95, n−1} · sd(d) / √n (scipy.stats.t); equivalent iff the interval lies "
              "strictly inside ±margin (two one-sided tests at 5 %); identical iff every per-seed value is "
              "bit-equal. Final normalized utility: the last point of val_utility_norm per seed (mean over "
              "budgets); AUC: e5_sample_efficiency.json auc.methods.<m>.per_seed. Orderings: every question of "
              "e5_decisions.json, each pair's decision (two-level and seeds-only) and the winner set (as a set); "
              "the versions are equivalent iff every method is equivalent on both metrics and no ordering differs")


# ------------------------------------------------------------------------------------------------ pure logic
def paired_difference(old, new, margin: float = MARGIN, confidence: float = CONFIDENCE) -> dict:
    """Paired comparison of per-seed values: {"n", "mean_diff", "sd_diff", "ci", "identical", "verdict"}.

    The interval is undefined (NaN) with fewer than 2 seeds or a non-finite value; an undefined interval is not
    equivalent unless the samples are identical."""
    a, b = np.asarray(old, np.float64), np.asarray(new, np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired samples need the same seeds: shapes {a.shape} and {b.shape}")
    d = b - a
    n = d.size
    identical = a.tobytes() == b.tobytes()
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
    lo, hi = mean - half, mean + half
    inside = math.isfinite(lo) and math.isfinite(hi) and -margin < lo and hi < margin
    verdict = "identical" if identical else "equivalent" if inside else "not equivalent"
    return {"n": n, "mean_diff": mean, "sd_diff": sd, "ci": [lo, hi], "identical": identical, "verdict": verdict}


def worst(verdicts) -> str:
    return max(verdicts, key=VERDICTS.index, default="identical")


def run_values(curves: dict, sample_efficiency: dict) -> dict:
    """{method: {"final_utility": [S], "auc": [S]}} from a run's training curves and sample-efficiency files."""
    auc = sample_efficiency["auc"]["methods"]
    out = {}
    for name, m in curves["methods"].items():
        ps = [[math.nan if v is None else v for v in row] for row in m["curves"]["val_utility_norm"]["per_seed"]]
        out[name] = {"final_utility": np.array([row[-1] for row in ps], np.float64),
                     "auc": np.array([math.nan if v is None else v for v in auc[name]["per_seed"]], np.float64)}
    return out


def compare_methods(old: dict, new: dict, margin: float = MARGIN, confidence: float = CONFIDENCE) -> dict:
    """Per method (old's order, then methods only new has): each metric's ``paired_difference`` and the method's
    verdict (the worst of its metrics). A method run by one version only is not equivalent."""
    out = {}
    for name in [*old, *(m for m in new if m not in old)]:
        if name not in old or name not in new:
            out[name] = {"missing_in": "old" if name not in old else "new", "verdict": "not equivalent"}
            continue
        res = {k: paired_difference(old[name][k], new[name][k], margin, confidence) for k in METRICS}
        out[name] = {**res, "verdict": worst(r["verdict"] for r in res.values())}
    return out


def orderings(decisions: dict) -> dict:
    """Every ordering an ``e5_decisions.json`` states: {"question: a vs b": decision, "question: a vs b (seeds
    only)": decision, "question: winners": sorted names}; pairs oriented with a < b by name."""
    out = {}
    for q, res in decisions["questions"].items():
        for row in res["pairs"].values():
            a, b, d, ds = row["a"], row["b"], row["decision"], row["decision_seeds"]
            if b < a:
                a, b, d, ds = b, a, FLIP.get(d, d), FLIP.get(ds, ds)
            out[f"{q}: {a} vs {b}"] = d
            out[f"{q}: {a} vs {b} (seeds only)"] = ds
        out[f"{q}: winners"] = sorted(res["winners"])
    return out


def pair_intervals(decisions: dict) -> dict:
    """The interval behind each pair ordering of ``orderings`` (two-level, or seeds only), oriented like it
    (a - b with a < b by name); pairs whose decisions carry no interval are left out."""
    out = {}
    for q, res in decisions["questions"].items():
        for row in res["pairs"].values():
            a, b, sign = row["a"], row["b"], 1.0
            if b < a:
                a, b, sign = b, a, -1.0
            for key, ci in ((f"{q}: {a} vs {b}", row.get("ci_two_level")), (f"{q}: {a} vs {b} (seeds only)", row.get("ci_seeds"))):
                if ci is not None and None not in ci:
                    out[key] = sorted(sign * float(x) for x in ci)
    return out


def compare_orderings(old: dict, new: dict) -> dict:
    """{"count": orderings compared, "same": bool, "different": [{"ordering", "old", "new"}]} (None: not stated);
    a differing pair ordering also carries both runs' intervals ("old_ci", "new_ci") when the decisions state them,
    so a move across the decision rule's edge (an end of the interval crossing 0) shows as such."""
    a, b = orderings(old), orderings(new)
    ca, cb = pair_intervals(old), pair_intervals(new)
    keys = [*a, *(k for k in b if k not in a)]
    diff = [{"ordering": k, "old": a.get(k), "new": b.get(k),
             **({"old_ci": ca[k], "new_ci": cb[k]} if k in ca and k in cb else {})} for k in keys if a.get(k) != b.get(k)]
    return {"count": len(keys), "same": not diff, "different": diff}


RESOLVED = (">", "<")


def floor_label(report: dict, path) -> str:
    """A noise-floor report's name: its new side's environment (``--new-env``), else the file name."""
    env = (report.get("meta") or {}).get("new_env") or {}
    return " ".join(f"{k}={v}" for k, v in sorted(env.items())) or Path(path).name


def noise_floor(ords: dict, floors: list) -> dict:
    """Which orderings that differ also differ in a noise-floor report (``floors``: [(label, report)], each an
    equivalence report of one revision against itself with a semantically neutral change on the new side), and which
    were reversed (resolved one way, then the other: never a noise-floor move). Informative: the verdict stays the
    rule's. {"reports", "also_in_noise_floor": [{"ordering", "under": [labels]}], "not_in_noise_floor": [orderings],
    "reversed": [orderings]}."""
    moved = {label: {d["ordering"] for d in rep["orderings"]["different"]} for label, rep in floors}
    also, not_in, rev = [], [], []
    for d in ords["different"]:
        k = d["ordering"]
        under = [label for label, keys in moved.items() if k in keys]
        if under:
            also.append({"ordering": k, "under": under})
        else:
            not_in.append(k)
        if d["old"] in RESOLVED and d["new"] in RESOLVED:
            rev.append(k)
    return {"reports": [label for label, _ in floors], "also_in_noise_floor": also, "not_in_noise_floor": not_in,
            "reversed": rev}


def noise_floor_line(nf: dict, differing: int) -> str:
    return (f"noise floor ({len(nf['reports'])} reports: {'; '.join(nf['reports'])}): {len(nf['also_in_noise_floor'])} "
            f"of {differing} differing orderings also differ under a semantically neutral change, "
            f"{len(nf['not_in_noise_floor'])} do not, {len(nf['reversed'])} reversed (informative; the verdict is the rule's)")


def overall(methods: dict, ords: dict) -> str:
    """"identical" / "equivalent" / "not equivalent" for the two versions."""
    v = worst(m["verdict"] for m in methods.values())
    return v if ords["same"] else "not equivalent"


def method_line(name: str, res: dict, margin: float) -> str:
    if "missing_in" in res:
        return f"{name:11s} run by one version only (missing in {res['missing_in']}) -> not equivalent"
    parts = []
    for k, label in (("final_utility", "final utility"), ("auc", "AUC")):
        r = res[k]
        lo, hi = r["ci"]
        parts.append(f"{label} {r['mean_diff']:+.5f} [{lo:+.5f}, {hi:+.5f}] {r['verdict']}")
    return f"{name:11s} new − old (n = {res['final_utility']['n']}, {CONFIDENCE:.0%} CI, ±{margin:g}): " \
           + "; ".join(parts) + f" -> {res['verdict']}"


def overall_line(report: dict) -> str:
    o = report["orderings"]
    return (f"overall: {report['verdict'].upper()} ({len(report['methods'])} methods, margin ±{report['margin']:g}; "
            f"{len(o['different'])} of {o['count']} orderings differ)")


# ------------------------------------------------------------------------------------------------ running
def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.rstrip("\n")


def resolve(repo: Path, rev: str) -> str:
    return git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}")


def working_tree(repo: Path) -> dict:
    """This checkout as a code version: its HEAD and the files that differ from it."""
    status = git(repo, "status", "--porcelain", "--untracked-files=no")
    return {"rev": "working tree", "head": resolve(repo, "HEAD"),
            "modified": sorted(line[3:] for line in status.splitlines())}


def file_sha(path: Path | None) -> str | None:
    return None if path is None else hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_version(label: str, root: Path, out: Path, seeds: int, config: Path | None, stamp: dict,
                reuse: bool, extra_env: dict | None = None) -> dict:
    """`e5jax run` of the code under ``root`` into ``out`` (overhead analysis off); with ``reuse``, a finished run
    there with the same ``stamp`` (revision, seeds, config) is kept. Returns what the report records of it."""
    marker = out / "equivalence_run.json"
    if reuse and marker.is_file() and all((out / f).is_file() for f in RUN_FILES):
        done = json.loads(marker.read_text())
        if done.get("stamp") == stamp:
            print(f"{label}: reusing {out}", file=sys.stderr)
            return {**done, "reused": True}
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "e5jax", "run", "--seeds", str(seeds), "--out", str(out), "--no-progress"]
    cmd += ["--config", str(config)] if config else []
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "E5JAX_OVERHEAD": "off", **(extra_env or {})}
    load = os.getloadavg()
    print(f"{label}: running {stamp['rev']} ({seeds} seeds) -> {out}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"{label} run failed (exit {rc}, log {log}):\n" + "\n".join(tail))
    done = {"stamp": stamp, "command": " ".join(["E5JAX_OVERHEAD=off", f"PYTHONPATH={root / 'src'}",
                                                 *(f"{k}={v}" for k, v in (extra_env or {}).items()), *cmd]),
            "cwd": str(root), "wall_s": round(wall, 1), "load_average_before": list(load),
            "load_average_after": list(os.getloadavg())}
    marker.write_text(json.dumps(done, indent=1))
    print(f"{label}: done in {wall:.0f} s", file=sys.stderr, flush=True)
    return {**done, "reused": False}


def load_run(out: Path) -> tuple[dict, dict, dict]:
    return tuple(json.loads((out / f).read_text()) for f in RUN_FILES)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", metavar="OLD_REV", help="the reference commit")
    p.add_argument("new", metavar="NEW_REV", nargs="?", default=None, help="default: this working tree")
    p.add_argument("--seeds", type=int, default=MIN_SEEDS, help=f"seeds per method (at least {MIN_SEEDS})")
    p.add_argument("--config", type=Path, default=None, help="run config TOML for both (default: each version's own)")
    p.add_argument("--out", type=Path, default=None, help="report JSON (default: artifacts/equivalence/OLD_vs_NEW.json)")
    p.add_argument("--margin", type=float, default=MARGIN, help="equivalence margin on both metrics (default 0.01)")
    p.add_argument("--workdir", type=Path, default=None, help="where the runs and the old worktree go (default: a "
                                                                "new temporary directory, kept)")
    p.add_argument("--reuse", action="store_true", help="keep finished runs in --workdir of the same revision, "
                                                        "seeds and config")
    p.add_argument("--new-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the new run only (repeatable): the same revision on both sides "
                        "with e.g. XLA_FLAGS=--xla_force_host_platform_device_count=2 measures how many orderings a "
                        "last-bit change flips")
    p.add_argument("--noise-floor", action="append", default=[], type=Path, metavar="REPORT",
                   help="an equivalence report of one revision against itself with a semantically neutral change "
                        "(e.g. artifacts/equivalence/noise_floor_*.json; repeatable): the report then says which "
                        "differing orderings also differ there (informative; the verdict is unchanged)")
    p.add_argument("--allow-few-seeds", action="store_true", help=f"allow fewer than {MIN_SEEDS} seeds (tests, smoke)")
    return p


def different_machines(host_old: dict, host_new: dict) -> bool | None:
    """Did the two runs run on different CPUs (e.g. a ``--reuse``'d run made on another machine)? Their learned
    methods' last bits then differ for that reason alone (docs/robustness.md). None when either run predates the
    ``cpu_signature`` record."""
    if "cpu_signature" not in host_old or "cpu_signature" not in host_new:
        return None
    return any(host_old.get(k) != host_new.get(k) for k in ("cpu", "cpu_signature", "cpu_isa"))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.seeds < MIN_SEEDS and not args.allow_few_seeds:
        print(f"equivalence: --seeds {args.seeds} is below the rule's {MIN_SEEDS} (add --allow-few-seeds for a smoke "
              "run)", file=sys.stderr)
        return 2
    bad = [kv for kv in args.new_env if "=" not in kv or not kv.split("=", 1)[0]]
    if bad:
        print(f"equivalence: --new-env {bad[0]}: expected KEY=VALUE", file=sys.stderr)
        return 2
    new_env = dict(kv.split("=", 1) for kv in args.new_env)
    floors = []
    for f in args.noise_floor:
        try:
            rep = json.loads(f.read_text())
            rep["orderings"]["different"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"equivalence: --noise-floor {f}: not an equivalence report ({type(e).__name__})", file=sys.stderr)
            return 2
        floors.append((floor_label(rep, f), rep))
    if args.reuse and args.workdir is None:
        print("equivalence: --reuse needs --workdir", file=sys.stderr)
        return 2
    repo = Path(__file__).resolve().parents[1]
    try:
        old = {"rev": args.old, "commit": resolve(repo, args.old)}
        new = {"rev": args.new, "commit": resolve(repo, args.new)} if args.new else working_tree(repo)
    except subprocess.CalledProcessError as e:
        print(f"equivalence: unknown revision ({e.stderr.strip().splitlines()[-1]})", file=sys.stderr)
        return 2
    config = args.config.resolve() if args.config else None
    if config is not None and not config.is_file():
        print(f"equivalence: --config {args.config}: no such file", file=sys.stderr)
        return 2
    new_id = new["commit"][:7] if args.new else "worktree"
    out = args.out or repo / "artifacts" / "equivalence" / f"{old['commit'][:7]}_vs_{new_id}.json"
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="e5eq."))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cfg = {"path": str(config) if config else None, "sha256_16": file_sha(config)}

    trees, runs = [], {}
    try:
        for label, ver in (("old", old), ("new", new)):
            root = repo
            if "commit" in ver:
                root = work / f"src_{label}"
                if root.exists():
                    git(repo, "worktree", "remove", "--force", str(root))
                git(repo, "worktree", "add", "-f", "--detach", str(root), ver["commit"])
                trees.append(root)
            extra = new_env if label == "new" else {}
            stamp = {"rev": ver.get("commit") or f"working tree at {ver['head']}", "seeds": args.seeds, "config": cfg,
                     **({"env": extra} if extra else {})}
            runs[label] = run_version(label, root, work / f"run_{label}", args.seeds, config, stamp, args.reuse, extra)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"equivalence: {e}", file=sys.stderr)
        return 2
    finally:
        for t in trees:
            git(repo, "worktree", "remove", "--force", str(t))

    (c_old, se_old, dec_old), (c_new, se_new, dec_new) = load_run(work / "run_old"), load_run(work / "run_new")
    if c_old["meta"]["seed_keys"] != c_new["meta"]["seed_keys"]:
        print(f"equivalence: the runs used different seeds ({c_old['meta']['seed_keys']} vs "
              f"{c_new['meta']['seed_keys']})", file=sys.stderr)
        return 2
    methods = compare_methods(run_values(c_old, se_old), run_values(c_new, se_new), args.margin)
    ords = compare_orderings(dec_old, dec_new)
    if floors:
        ords["noise_floor"] = noise_floor(ords, floors)
    host, host_old = c_new["meta"]["host"], c_old["meta"]["host"]
    machines_differ = different_machines(host_old, host)
    if machines_differ:
        print("equivalence: warning: the old and new runs ran on different CPUs "
              f"({host_old.get('cpu_signature')} vs {host.get('cpu_signature')}): differences include the machine's",
              file=sys.stderr)
    report = {
        "verdict": overall(methods, ords),
        "margin": args.margin,
        "confidence": CONFIDENCE,
        "definition": DEFINITION,
        "methods": methods,
        "orderings": ords,
        "meta": {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["experiments/equivalence.py", *(sys.argv[1:] if argv is None else argv)]),
            "old": old, "new": new, "seeds": args.seeds, "seed_keys": c_new["meta"]["seed_keys"],
            "config": cfg, "new_env": new_env, "cpu": host.get("cpu"), "cpu_signature": host.get("cpu_signature"),
            "cpu_isa": host.get("cpu_isa"), "machines_differ": machines_differ, "cpu_count": host.get("cpu_count"),
            "jax_version": host.get("jax_version"), "backend": host.get("backend"),
            "jax_version_old": c_old["meta"]["host"].get("jax_version"),
            "workdir": str(work), "runs": runs,
        },
    }
    write_json(out, report)
    for name, res in methods.items():
        print(method_line(name, res, args.margin))
    for d in ords["different"]:
        ci = (f" (interval [{d['old_ci'][0]:+.5f}, {d['old_ci'][1]:+.5f}] -> [{d['new_ci'][0]:+.5f}, "
              f"{d['new_ci'][1]:+.5f}])") if "old_ci" in d else ""
        print(f"ordering differs: {d['ordering']}: old {d['old']}, new {d['new']}{ci}")
    if floors:
        print(noise_floor_line(ords["noise_floor"], len(ords["different"])))
    print(overall_line(report))
    print(f"report: {out}")
    return 0 if report["verdict"] != "not equivalent" else 1


if __name__ == "__main__":
    sys.exit(main())
