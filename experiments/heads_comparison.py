"""Policy heads (factored / joint / autoregressive) for every learned method, at equal env steps.

Defaults are chosen on a **tuning split** carved from train (``ProfileTable.tuning_split``: 25% of the train
requests per task become the evaluation set, the rest train; the real val split is not used), never on val.
Rule, fixed before measuring: the default head is the one with the highest mean, over the learned methods, of the
final normalized-utility IQM on the tuning split; a head within 0.005 of the best loses to a simpler one
(factored < joint < autoregressive). ``--split val`` reruns the same grid on the real split, for the record only.

    python experiments/heads_comparison.py --split tuning --out artifacts/heads/heads_tuning.json
    python experiments/heads_comparison.py --split val --out artifacts/heads/heads_val.json

Each (method, head) is the run's own program (``run.run_method``: same configs as experiments/e5_default.toml but
the head; overhead analysis off), 5 seeds, the default env-step budget unless ``--total-env-steps``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from e5jax import analysis as A  # noqa: E402
from e5jax import env as E  # noqa: E402
from e5jax.config import load_config  # noqa: E402
from e5jax.io import write_json  # noqa: E402
from e5jax.policy import HEADS  # noqa: E402
from e5jax.host import host_description  # noqa: E402
from e5jax.run import references_block, run_method  # noqa: E402
from e5jax.table import default_table_path, load_table  # noqa: E402

LEARNED = ("supervised", "ppo", "dpo", "grpo")
TIE = 0.005


def choose(rows: dict, heads) -> dict:
    """The rule of the module docstring, applied to {head: {method: final IQM}}."""
    score = {h: float(np.mean([rows[h][m] for m in rows[h]])) for h in heads}
    best = max(score.values())
    pick = next(h for h in HEADS if h in score and score[h] >= best - TIE)
    return {"score_mean_final_iqm": score, "chosen": pick, "rule": f"highest mean final IQM; within {TIE} the simpler head"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("tuning", "val"), default="tuning")
    ap.add_argument("--tuning-fraction", type=float, default=0.25)
    ap.add_argument("--methods", default=",".join(LEARNED))
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--total-env-steps", type=int, default=None)
    ap.add_argument("--config", default=None, help="TOML (default: the built-in defaults)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("E5JAX_OVERHEAD", "off")
    run, cfgs = load_config(args.config, seeds=args.seeds, methods=args.methods)
    if args.total_env_steps:
        run = dataclasses.replace(run, total_env_steps=args.total_env_steps)
    table = load_table(default_table_path())
    if args.split == "tuning":
        table = table.tuning_split(args.tuning_fraction, seed=0)
    env = E.env_from_run(run, table)
    refs = references_block(env)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    lo, hi = float(run.env_steps_per_update), float(run.total_env_steps)
    results, finals = {}, {h: {} for h in heads}
    t0 = time.perf_counter()
    with tqdm(total=len(heads) * len(run.methods), desc="heads", file=sys.stderr) as bar:
        for h in heads:
            for name in run.methods:
                cfg = dataclasses.replace(cfgs[name], head=h)
                r = run_method(name, cfg, run, env, refs)
                un = np.asarray(r["curves"]["val_utility_norm"]["per_seed"], float)
                steps = np.asarray(r["env_steps_per_seed"], float)
                fin = un[:, -1]
                auc = np.array([A.auc_log_steps(steps[i], un[i], lo, hi) for i in range(len(un))])
                results.setdefault(name, {})[h] = {
                    "final_utility_norm": {"per_seed": fin, **A.iqm_ci(fin)},
                    "auc": {"per_seed": auc, **A.iqm_ci(auc)},
                    "num_params": r["num_params"], "compile_s": r["compile_time_s"], "train_s": r["train_time_s"],
                }
                finals[h][name] = A.iqm(fin)
                bar.update(1)
    doc = {
        "schema": "e5jax/heads_comparison/v1",
        "command": " ".join(["python", *sys.argv]),
        "split": args.split,
        "tuning_fraction": args.tuning_fraction if args.split == "tuning" else None,
        "requests": {"train": int(env.train_idx.shape[0]), "eval": int(env.val_idx.shape[0])},
        "seeds": run.seeds, "total_env_steps": run.total_env_steps, "auc_env_steps_range": [lo, hi],
        "host": host_description(), "wall_s": time.perf_counter() - t0,
        "results": results,
        "choice": choose(finals, heads),
    }
    write_json(Path(args.out), doc)
    print(f"\nheads on the {args.split} split ({run.seeds} seeds, {run.total_env_steps} env steps): final normalized "
          "utility IQM [95% CI] / AUC IQM")
    print(f"{'method':11s}" + "".join(f"{h:>30s}" for h in heads))
    for name, rs in results.items():
        cells = [f"{rs[h]['final_utility_norm']['iqm']:.3f} [{rs[h]['final_utility_norm']['ci_low']:.3f},"
                 f"{rs[h]['final_utility_norm']['ci_high']:.3f}] / {rs[h]['auc']['iqm']:.3f}" for h in heads]
        print(f"{name:11s}" + "".join(f"{c:>30s}" for c in cells))
    print(f"choice: {doc['choice']} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
