"""Would the features matter if the feature-sensitive knob carried latency? A counterfactual on a measured table.

On the shapes-vqa tables the vision-token knob's quality effect depends on a request feature (a small object loses
0.2-0.28 of its colour/shape quality at 16 tokens, a large one almost nothing: docs/shapes_table.md), yet a LUT keyed
on object size gains only +0.014 over the task LUT on shapes6k. One explanation: on this tiny model vision tokens
carry little latency (4 tokens = 0.70-0.78 of the full config's latency; depth carries the rest), so at every budget
the oracle cuts depth and keeps tokens, and which request needs tokens rarely matters. This script tests that
explanation without a new model: it adds to every config's *measured* latency a cost linear in the knob's level,

    latency'(r, c) = latency(r, c) + share / (1 - share) * latency(r, full) * level(c) / max_level,

so the added part is ``share`` of each request's new full-config latency (``share = 0``: the measured table), as if the
knob's stage were heavier (larger images, a bigger vision tower). Quality is the measured one, untouched. Per share it
reports the knob's latency leverage (its smallest level's latency over full, median over requests), the context
value (the perfect task x budget LUT, normalized), the same LUT keyed on (task, ``--feature``) with every
request's rewards known (the most that feature can give), and whether a LUT keyed on (task, feature) beats the task LUT on
val by the lab's decision rule (``stats.feature_lut_decision``: paired request-level bootstrap, 95% CI) for (a) the
feature named in advance (``--feature``, the generator's designed one) and (b) the feature set of up to
``--max-columns`` columns chosen on a tuning split carved from train (never on val).

``--output-mix L1 L2 ...`` adds a second counterfactual: every request's output length drawn uniformly from the list
(seed 0) and its latency re-predicted by the table's own stage model (``meta.latency.model``, the model the
measured table's latency comes from: vision + prefill + one decode step per output token after the first), with
``expected_output_tokens`` named in advance. Long outputs are decode-bound (depth and experts), short ones carry more
vision and prefill, so the output length changes which knob is cheap for a request.

Counterfactuals, not test beds: their latency is not measured, so no E5 conclusion is drawn from them.

    python experiments/latency_leverage.py --table artifacts/tables/cpu_tiny_llava_olmoe_shapes6k.npz \\
        --knob vision_tokens --feature object_size --share 0 0.25 0.5 0.75 --output-mix 2 4 8 16 32 64 \\
        --out artifacts/shapes6k/latency_leverage.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # profiling_bridge (--output-mix)

from e5jax.host import host_description  # noqa: E402
from e5jax.io import write_json  # noqa: E402
from e5jax.stats import feature_lut, feature_lut_decision  # noqa: E402
from e5jax.table import ProfileTable, TableError, load_table  # noqa: E402


def with_knob_cost(table: ProfileTable, knob: str, share: float) -> ProfileTable:
    """``table`` with ``share`` / (1 - share) x each request's full-config latency x level / max level added to every
    config's latency (``share`` in [0, 1); 0 returns the table unchanged)."""
    if not 0 <= share < 1:
        raise TableError(f"share must be in [0, 1), got {share}")
    if knob not in table.knobs:
        raise TableError(f"knob {knob!r} is not in the table (knobs: {', '.join(table.knobs)})")
    if share == 0:
        return table
    values = table.config_levels()[:, list(table.knobs).index(knob)].astype(float)  # [C] the knob's level value
    full = table.latency_ms[:, table.full_config]  # [R]
    added = share / (1 - share) * full[:, None] * (values / values.max())[None, :]
    return table.replace(latency_ms=table.latency_ms + added, latency_std_ms=None,
                         meta=dict(table.meta, counterfactual={"knob": knob, "share": share}))


def with_output_mix(table: ProfileTable, lengths, seed: int = 0) -> ProfileTable:
    """``table`` with every request's ``expected_output_tokens`` drawn uniformly from ``lengths`` and its latency
    predicted by the table's stage model for that length (``meta.latency.model``; ``profiling_bridge.latency_model``)."""
    from profiling_bridge.knobs import KnobConfig
    from profiling_bridge.latency_model import from_dict

    model = (table.meta.get("latency") or {}).get("model") if isinstance(table.meta, dict) else None
    names = list(table.feature_names)
    if not isinstance(model, dict) or "decode_step_p50_ms" not in model:
        raise TableError("--output-mix needs a table whose meta.latency.model holds a stage model (a bridge profile)")
    if "prompt_tokens" not in names or "expected_output_tokens" not in names:
        raise TableError("--output-mix needs the prompt_tokens and expected_output_tokens features")
    if not lengths or min(lengths) < 1:
        raise TableError(f"--output-mix lengths must be >= 1, got {list(lengths)}")
    m = from_dict(model)
    configs = [KnobConfig(**{k: int(v) for k, v in zip(table.knobs, row)}) for row in table.config_levels()]
    out = np.random.default_rng(seed).choice(np.asarray(lengths, int), size=table.num_requests)
    prompt = table.features[:, names.index("prompt_tokens")].astype(int)
    features = table.features.copy()
    features[:, names.index("expected_output_tokens")] = out
    return table.replace(latency_ms=m.predict(prompt, out, configs), latency_std_ms=None, features=features,
                         meta=dict(table.meta, counterfactual={"output_mix": list(lengths), "seed": seed}))


def leverage(table: ProfileTable, knob: str) -> float:
    """Median over requests of latency(knob at its smallest level, others full) / latency(full)."""
    from profiling_bridge.knob_effects import level_configs

    c = level_configs(table)[knob][int(table.knobs[knob][0])]
    return float(np.median(table.latency_ms[:, c] / table.latency_ms[:, table.full_config]))


def analyse(table: ProfileTable, feature: str, lam: float, max_columns: int, tuning_fraction: float) -> dict:
    tune = table.tuning_split(tuning_fraction)
    cols = table.varying_features()
    subsets = [s for n in range(1, max_columns + 1) for s in itertools.combinations(cols, n)]
    task_tuning = feature_lut(tune, (), lam=lam)["normalized_utility"]
    tuning = {s: feature_lut(tune, s, lam=lam)["normalized_utility"] for s in subsets}
    chosen = max(subsets, key=lambda s: tuning[s]) if subsets else None  # None: no feature varies
    out = {"context_value": feature_lut(table, (), lam=lam, fit="all")["normalized_utility"],
           "task_lut_val": feature_lut(table, (), lam=lam)["normalized_utility"],
           "tuning_split": {"task_lut": task_tuning, "chosen": None if chosen is None else list(chosen),
                            "chosen_value": None if chosen is None else tuning[chosen]},
           "chosen_on_tuning_split": None}
    task_pb = np.asarray(feature_lut(table, (), lam=lam)["normalized_utility_per_budget"])
    for label, s in (("named_in_advance", (feature,)), ("chosen_on_tuning_split", chosen)):
        if s is None:
            continue
        d = feature_lut_decision(table, s, lam=lam)
        out[label] = {k: d[k] for k in ("columns", "value", "base_value", "diff", "ci", "decision")}
        pb = np.asarray(feature_lut(table, s, lam=lam)["normalized_utility_per_budget"])
        out[label]["diff_per_budget"] = (pb - task_pb).tolist()  # point estimates, per budget
    # the same LUT with every request's rewards known (fit on all requests): what the feature could give at most
    out["named_in_advance"]["perfect_knowledge"] = feature_lut(table, (feature,), lam=lam, fit="all")["normalized_utility"]
    return out


def _vs(d: dict | None) -> str:
    """One LUT's difference to the task LUT on val, with its CI and decision (or that no feature varies)."""
    if d is None:
        return "no varying feature"
    return f"{'+'.join(d['columns'])} {d['diff']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] {d['decision']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True, help="a measured table (.npz/.csv)")
    ap.add_argument("--knob", default="vision_tokens", help="the knob whose latency is made heavier")
    ap.add_argument("--feature", default="object_size", help="the feature named in advance for the knob")
    ap.add_argument("--share", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75],
                    help="added knob-linear latency as a share of the new full-config latency (0 = measured)")
    ap.add_argument("--output-mix", type=int, nargs="+", metavar="TOKENS",
                    help="also: output lengths drawn from these (latency from the table's stage model)")
    ap.add_argument("--lam", type=float, default=2.0)
    ap.add_argument("--max-columns", type=int, default=2, help="feature sets of up to this many columns (>= 1)")
    ap.add_argument("--tuning-fraction", type=float, default=0.25)
    ap.add_argument("--out", required=True, help="JSON report")
    args = ap.parse_args(argv)
    try:
        if args.max_columns < 1:
            raise TableError(f"--max-columns must be >= 1, got {args.max_columns}")
        table = load_table(args.table)
        if args.feature not in table.feature_names:
            raise TableError(f"feature {args.feature!r} is not in the table (features: {', '.join(table.feature_names)})")
        tables = [with_knob_cost(table, args.knob, s) for s in args.share]
        mix = None if args.output_mix is None else with_output_mix(table, args.output_mix)
    except TableError as e:
        print(f"latency_leverage: {e}", file=sys.stderr)
        return 2
    rows = []
    for s, t in zip(args.share, tables):
        r = {"share": s, "knob_leverage": leverage(t, args.knob), **analyse(t, args.feature, args.lam,
                                                                             args.max_columns, args.tuning_fraction)}
        rows.append(r)
        a = r["named_in_advance"]
        print(f"share {s:.2f}: {args.knob} at its smallest level {r['knob_leverage']:.3f} of full; context value "
              f"{r['context_value']:.3f} (with {args.feature} {a['perfect_knowledge']:.3f}); task LUT "
              f"{r['task_lut_val']:.3f} on val; {_vs(a)}; chosen on the tuning split {_vs(r['chosen_on_tuning_split'])}",
              flush=True)
    output_mix = None
    if mix is not None:
        output_mix = {"lengths": args.output_mix, "seed": 0,
                      **analyse(mix, "expected_output_tokens", args.lam, args.max_columns, args.tuning_fraction)}
        a = output_mix["named_in_advance"]
        print(f"output mix {args.output_mix}: context value {output_mix['context_value']:.3f} (with expected_output_tokens "
              f"{a['perfect_knowledge']:.3f}); task LUT {output_mix['task_lut_val']:.3f} on val; {_vs(a)}; chosen on "
              f"the tuning split {_vs(output_mix['chosen_on_tuning_split'])}")
    write_json(args.out, {"table": args.table, "knob": args.knob, "feature": args.feature, "lam": args.lam,
                          "output_mix": output_mix,
                          "tuning_split": {"fraction": args.tuning_fraction, "seed": 0},
                          "max_columns": args.max_columns, "command": " ".join(sys.argv),
                          "host": host_description(), "rows": rows,
                          "note": "counterfactual latency (measured + share/(1-share) x full x level/max level); "
                                  "quality measured; not a test bed"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
