"""Outputs of a run (issue #3): statistics on known inputs, schema of every file, `e5jax report` from JSON alone.

No training: a small synthetic ``e5_training_curves.json`` (3 methods x 3 seeds x 4 eval points x 5 budgets)
with hand-placed threshold crossings stands in for a run.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from e5jax import analysis as A
from e5jax import report as R
from e5jax.cli import main as cli_main
from e5jax.io import read_json, write_json

S, E, B = 3, 4, 5
BUDGETS = [0.35, 0.5, 0.7, 0.85, 1.0]
STEPS = [0.0, 100.0, 200.0, 300.0]
WALL = [0.0, 1.0, 2.0, 3.0]
OFFS = np.linspace(-0.02, 0.02, B)  # per-budget offsets, zero mean: the budget average is the curve itself

# normalized utility per seed: threshold 0.9 is crossed at known eval points
UNORM = {
    "lut": [[-1.0, 0.5, 0.95, 0.97], [-1.0, 0.92, 0.93, 0.95], [-1.0, 0.6, 0.7, 0.8]],  # idx 2, 1, never
    "ppo": [[0.0, 0.3, 0.5, 0.6], [0.0, 0.35, 0.55, 0.62], [0.0, 0.4, 0.5, 0.58]],  # never
    "grpo": [[0.0, 0.91, 0.85, 0.92], [0.0, 0.5, 0.9, 0.95], [0.0, 0.95, 0.96, 0.97]],  # 1 (held from 3), 2, 1
}
SLO = {
    "lut": [[0.8, 0.2, 0.04, 0.03], [0.8, 0.1, 0.06, 0.05], [0.8, 0.3, 0.2, 0.1]],  # <=0.05: idx 2, 3, never
    "ppo": [[0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]],
    "grpo": [[0.4, 0.05, 0.05, 0.05], [0.4, 0.2, 0.1, 0.01], [0.4, 0.3, 0.2, 0.1]],
}
FULL_Q = 0.6  # threshold quality >= 0.54
QUAL = {
    "lut": [[0.6, 0.5, 0.5, 0.5], [0.6, 0.5, 0.5, 0.5], [0.6, 0.5, 0.5, 0.5]],  # idx 0 for all, never held
    "ppo": [[0.45, 0.5, 0.55, 0.56], [0.45, 0.5, 0.53, 0.56], [0.45, 0.5, 0.52, 0.53]],  # 2, 3, never
    "grpo": [[0.45, 0.5, 0.52, 0.53], [0.45, 0.5, 0.52, 0.53], [0.45, 0.5, 0.52, 0.53]],
}
# fixed configs (latency ms, quality): Pareto front = 5, 0, 2, 4 (1, 3 dominated; 6 duplicates 4)
FIXED = [(1000, 0.5), (2000, 0.4), (2000, 0.7), (3000, 0.7), (4000, 0.9), (500, 0.1), (4000, 0.9)]


def _stats(a):
    a = np.asarray(a, dtype=float)
    return {"mean": a.mean(0), "std": a.std(0), "per_seed": a}


def _ref(u, q, lat, slo):
    per = {"utility": np.full(B, u) + OFFS, "quality_mean": np.full(B, q), "latency_p95_ms": np.full(B, lat),
           "latency_p95_norm": np.full(B, lat / 4000), "latency_mean_norm": np.full(B, lat / 5000),
           "slo_violation_rate": np.full(B, slo)}
    return {"per_budget": per, "mean_over_budgets": {k: float(v.mean()) for k, v in per.items()}}


def make_curves(seeds=S) -> dict:
    u_r, u_o = 0.2, 0.6
    methods = {}
    for name in UNORM:
        un = np.asarray(UNORM[name])[:seeds]
        u = u_r + un * (u_o - u_r)
        val = {
            "val_utility": u, "val_utility_norm": un, "val_quality_mean": np.asarray(QUAL[name])[:seeds],
            "val_latency_p95_ms": 1000 + 1000 * np.asarray(QUAL[name])[:seeds],
            "val_slo_violation_rate": np.asarray(SLO[name])[:seeds],
        }
        val["val_latency_p95_norm"] = val["val_latency_p95_ms"] / 4000
        curves = {k: _stats(v) for k, v in val.items()}
        tr = np.concatenate([np.full((seeds, 1), np.nan), u[:, 1:] - 0.05], 1)
        curves["train_utility"] = _stats(tr)
        curves["num_failed_updates"] = _stats(np.concatenate([np.full((seeds, 1), np.nan), np.zeros((seeds, E - 1))], 1))
        per_budget = {k: _stats(np.asarray(v)[..., None] + (OFFS if k != "val_slo_violation_rate" else 0 * OFFS)) for k, v in val.items()}
        methods[name] = {
            "updates": [0, 10, 20, 30], "env_steps": STEPS, "env_steps_per_seed": [STEPS] * seeds,
            "env_steps_per_update": 10, "wall_time_s": WALL, "chunk_time_s": [1.0] * 3, "compile_time_s": 2.0,
            "train_time_s": 3.0, "num_params": None if name == "lut" else (200 if name == "ppo" else 100),
            "curves": curves, "per_budget": per_budget,
        }
    lv = np.stack(np.unravel_index(np.arange(len(FIXED)), (len(FIXED), 1, 1)), -1)
    fixed = {"level_index": lv, "per_budget": {
        "latency_p95_ms": np.array([[f[0]] * B for f in FIXED], float),
        "latency_p95_norm": np.array([[f[0] / 4000] * B for f in FIXED], float),
        "quality_mean": np.array([[f[1]] * B for f in FIXED], float),
        "slo_violation_rate": np.array([[0.5 * f[0] / 4000] * B for f in FIXED], float),
        "utility": np.array([[f[1] - 0.1] * B for f in FIXED], float),
    }}
    return {
        "schema": "e5jax/e5_training_curves/v1",
        "complete": True,
        "meta": {
            "created": "2026-01-01T00:00:00+00:00", "command": "e5jax run (synthetic test)",
            "run": {"seeds": seeds, "eval_every": 10, "total_env_steps": 300, "env_steps_per_update": 10},
            "lam": 2.0, "budgets": BUDGETS, "seeds": seeds, "seed_keys": "test",
            "table": {"path": "synthetic", "sha256_16": "0" * 16, "source": "test", "num_requests": 10,
                      "num_configs": len(FIXED), "knobs": {"vision_tokens": list(range(len(FIXED))), "top_k": [1], "active_blocks": [8]}},
            "host": {"jax_version": "0.0-test", "backend": "cpu", "device_kind": "cpu", "cpu": "test", "cpu_count": 1},
            "reward": "quality - lam * overshoot",
        },
        "references": {"oracle": _ref(u_o, 0.55, 2500, 0.2), "full": _ref(-0.1, FULL_Q, 4000, 0.8),
                       "random": _ref(u_r, 0.4, 2000, 0.3), "fixed_configs": fixed},
        "methods": methods,
    }


@pytest.fixture(scope="module", autouse=True)
def fast_figures():
    """Figures at low resolution: the tests check that they are drawn, not how they look."""
    from e5jax import figures as F

    dpi, F.DPI = F.DPI, 40
    yield
    F.DPI = dpi


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    write_json(d / "e5_training_curves.json", make_curves())
    paths = R.write_outputs(d)
    return d, paths


# ------------------------------------------------------------------------------------------ statistics


def test_first_crossing_known_points():
    v = [0.1, 0.5, 0.95, 0.8, 0.97]
    assert A.first_crossing(v, 0.9, ">=") == 2
    assert A.first_crossing(v, 0.99, ">=") is None
    assert A.first_crossing([0.8, 0.3, 0.05, 0.2], 0.05, "<=") == 2
    assert A.first_crossing([np.nan, 0.95], 0.9) == 1  # NaN never meets a threshold
    assert A.first_sustained_crossing(v, 0.9) == 4  # dips below at index 3
    assert A.first_sustained_crossing([0.95, 0.96], 0.9) == 0
    assert A.first_sustained_crossing([0.95, 0.5], 0.9) is None
    with pytest.raises(ValueError):
        A.first_crossing(v, 0.9, "=>")


def test_crossings_per_seed_and_never_reached():
    c = A.crossings([STEPS] * S, UNORM["lut"], 0.9, ">=", wall=WALL)
    assert c["eval_index_per_seed"] == [2, 1, None]
    assert c["env_steps_per_seed"] == [200.0, 100.0, None]
    assert c["wall_time_s_per_seed"] == [2.0, 1.0, None]
    assert c["env_steps_mean"] == 150.0 and c["seeds_reached"] == 2 and c["fraction_reached"] == pytest.approx(2 / 3)
    n = A.crossings(STEPS, UNORM["ppo"], 0.9)
    assert n["seeds_reached"] == 0 and n["env_steps_mean"] is None and n["env_steps_per_seed"] == [None] * S
    g = A.crossings(STEPS, UNORM["grpo"], 0.9)
    assert g["eval_index_per_seed"] == [1, 2, 1] and g["held_eval_index_per_seed"] == [3, 2, 1]


def test_t_ci_known_values():
    c = A.t_ci([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    half = stats.t.ppf(0.975, 2) / math.sqrt(3)
    np.testing.assert_allclose(c["mean"], [2.0, 5.0])
    np.testing.assert_allclose(c["ci_low"], [2.0 - half, 5.0])
    np.testing.assert_allclose(c["ci_high"], [2.0 + half, 5.0])  # zero spread -> zero-width CI
    one = A.t_ci([[1.0, 2.0]])
    assert np.isnan(one["ci_low"]).all()  # a single seed has no CI


def test_bootstrap_iqm_ci_contains_mean_and_narrows():
    x = np.arange(1.0, 11.0)
    r = A.iqm_ci(x)
    assert r["iqm"] == pytest.approx(5.5) and r["mean"] == pytest.approx(5.5)
    assert r["ci_low"] < 5.5 < r["ci_high"]
    rng = np.random.default_rng(1)
    pop = rng.normal(0.5, 0.1, 10_000)
    small, large = A.iqm_ci(pop[:5]), A.iqm_ci(pop[:80])
    for c in (small, large):
        assert c["ci_low"] <= c["iqm"] <= c["ci_high"]
    assert (large["ci_high"] - large["ci_low"]) < 0.6 * (small["ci_high"] - small["ci_low"])
    assert A.iqm_ci(x) == r  # fixed bootstrap seed: reproducible


def test_bootstrap_degenerate_samples():
    r = A.iqm_ci([0.7, 0.7, 0.7])
    assert r["iqm"] == pytest.approx(0.7) and r["ci_low"] == pytest.approx(0.7) and r["ci_high"] == pytest.approx(0.7)
    one = A.iqm_ci([0.3])
    assert one["iqm"] == pytest.approx(0.3) and np.isnan(one["ci_low"])
    assert np.isnan(A.iqm_ci([np.nan, np.nan])["iqm"])


def test_probability_of_improvement_is_mann_whitney():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.1, 1, 5), rng.normal(0, 1, 5)
    y[0] = x[0]  # a tie counts one half
    u = stats.mannwhitneyu(x, y, alternative="two-sided").statistic
    assert A.probability_of_improvement(x, y) == pytest.approx(u / 25)
    assert A.probability_of_improvement([2, 3], [0, 1]) == 1.0
    assert A.probability_of_improvement([0, 1], [2, 3]) == 0.0
    assert A.probability_of_improvement([1, 1], [1, 1]) == 0.5
    r = A.probability_of_improvement_ci([0.5, 0.6, 0.7], [0.1, 0.2, 0.65])
    assert r["ci_low"] <= r["p"] <= r["ci_high"]


def test_pareto_front_hand_built():
    lat, q = zip(*FIXED)
    assert A.pareto_front(lat, q).tolist() == [5, 0, 2, 4]
    assert A.pareto_front([1, 2, np.nan], [0.1, 0.2, 0.9]).tolist() == [0, 1]
    assert A.dominated_by(2500, 0.6, [1000, 2000], [0.5, 0.7])
    assert not A.dominated_by(1500, 0.6, [1000, 2000], [0.5, 0.7])


def test_within_run_std_window():
    v = [[0.0, 1.0, 2.0, 2.0, 4.0, 6.0]]  # last third of 6 points = indices 4, 5
    w = A.within_run_std(v)
    assert w["first_eval_index"] == 4 and w["num_points"] == 2
    assert w["mean"] == pytest.approx(1.0)


# -------------------------------------------------------------------------------------------- the files


def test_all_files_written_with_schema_and_meta(run_dir):
    d, paths = run_dir
    names = {p.relative_to(d).as_posix() for p in paths}
    expected = {"e5_sample_efficiency.json", "e5_final_frontiers.json", "e5_stability_analysis.json",
                "e5_decisions.json", "summary.md", *(f"figures/{f}" for k, f in R.FIGURES.items() if k != "overhead")}
    assert names == expected
    dec = json.loads((d / "e5_decisions.json").read_text())
    assert dec["data_level"] == "seeds"  # synthetic curves without e5_val_actions.npz: seed-only decisions
    assert set(dec["questions"]["final_utility"]["methods"]) == set(json.loads((d / "e5_training_curves.json").read_text())["methods"])
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (d / "figures" / R.FIGURES["overhead"]).exists()  # no overhead data -> no overhead figure
    for name in ("e5_sample_efficiency.json", "e5_final_frontiers.json", "e5_stability_analysis.json", "e5_decisions.json"):
        doc = json.loads((d / name).read_text())  # strict JSON: NaN was written as null
        assert doc["schema"] == f"e5jax/{name[:-5]}/v1"
        meta = doc["meta"]
        for k in ("lam", "budgets", "seeds", "table", "host", "run"):
            assert k in meta, (name, k)
        assert meta["lam"] == 2.0 and meta["budgets"] == BUDGETS and meta["seeds"] == S
        assert meta["host"]["jax_version"] and meta["host"]["backend"] == "cpu"
        assert meta["source"]["complete"] is True


def test_sample_efficiency_json(run_dir):
    d, _ = run_dir
    se = read_json(d / "e5_sample_efficiency.json")
    names = [t["name"] for t in se["thresholds"]]
    assert names == ["slo_violation_le_5pct", "quality_ge_90pct_full", "utility_norm_ge_0.9", "gap_closed_ge_0.5",
                     "gap_closed_ge_0.8", "gap_closed_ge_0.95", "slo_within_5pts_of_oracle", "quality_ge_95pct_oracle"]
    q = se["thresholds"][1]
    assert q["value"] == pytest.approx(0.9 * FULL_Q)
    assert q["reference_values"]["oracle"] == pytest.approx(0.55) and q["oracle_meets"] is True
    assert se["thresholds"][0]["oracle_meets"] is False  # oracle's SLO violation 20% > 5%
    lut = se["methods"]["lut"]
    u = lut["utility_norm_ge_0.9"]
    assert u["env_steps_per_seed"] == [200.0, 100.0, None] and u["env_steps_mean"] == 150.0
    assert u["wall_time_s_per_seed"] == [2.0, 1.0, None] and u["seeds_reached"] == 2
    assert lut["slo_violation_le_5pct"]["env_steps_per_seed"] == [200.0, 300.0, None]
    assert lut["quality_ge_90pct_full"]["env_steps_per_seed"] == [0.0] * 3
    assert lut["quality_ge_90pct_full"]["seeds_holding"] == 0
    ppo = se["methods"]["ppo"]["utility_norm_ge_0.9"]
    assert ppo["seeds_reached"] == 0 and ppo["env_steps_mean"] is None and ppo["wall_time_s_mean"] is None
    assert ppo["env_steps_per_seed"] == [None, None, None]
    assert se["methods"]["ppo"]["quality_ge_90pct_full"]["env_steps_per_seed"] == [200.0, 300.0, None]
    assert se["methods"]["grpo"]["utility_norm_ge_0.9"]["env_steps_per_seed"] == [100.0, 200.0, 100.0]


def test_final_frontiers_json(run_dir):
    d, _ = run_dir
    ff = read_json(d / "e5_final_frontiers.json")
    assert ff["budgets"] == BUDGETS
    assert [p["config_index"] for p in ff["fixed_configs"]["pareto_front"]] == [5, 0, 2, 4]
    q = ff["methods"]["ppo"]["per_budget"]["quality_mean"]
    final = np.array([0.56, 0.56, 0.53])
    half = stats.t.ppf(0.975, S - 1) * final.std(ddof=1) / math.sqrt(S)
    np.testing.assert_allclose(q["mean"], final.mean() + OFFS)
    np.testing.assert_allclose(np.array(q["ci_high"]) - np.array(q["mean"]), half)
    assert len(q["per_seed"]) == S and len(q["per_seed"][0]) == B
    for m in ("quality_mean", "latency_p95_ms", "latency_p95_norm", "slo_violation_rate", "utility", "utility_norm"):
        blk = ff["methods"]["grpo"]["per_budget"][m]
        assert len(blk["mean"]) == B and all(lo <= mu <= hi for lo, mu, hi in zip(blk["ci_low"], blk["mean"], blk["ci_high"]))
    for r in ("oracle", "full", "random"):
        assert len(ff["references"][r]["per_budget"]["quality_mean"]) == B
    assert ff["references"]["oracle"]["mean_over_budgets"]["utility_norm"] == pytest.approx(1.0)


def test_stability_json(run_dir):
    d, _ = run_dir
    st = read_json(d / "e5_stability_analysis.json")
    lut = st["methods"]["lut"]
    final = np.array([0.97, 0.95, 0.8])
    assert lut["final_utility_norm"]["per_seed"] == pytest.approx(final.tolist())
    assert lut["final_utility_norm"]["iqm"] == pytest.approx(stats.trim_mean(final, 0.25))
    assert lut["final_utility_norm"]["ci_low"] <= lut["final_utility_norm"]["iqm"] <= lut["final_utility_norm"]["ci_high"]
    np.testing.assert_allclose(lut["across_seed_std"]["val_utility_norm"], np.std(UNORM["lut"], 0, ddof=1))
    assert lut["fraction_reached"]["utility_norm_ge_0.9"] == pytest.approx(2 / 3)
    assert lut["num_failed_updates"]["total"] == 0
    assert lut["within_run_std"]["val_utility_norm"]["num_points"] == 2
    P = st["probability_of_improvement"]
    i, j = P["methods"].index("grpo"), P["methods"].index("ppo")
    assert P["p"][i][j] == 1.0 and P["p"][j][i] == 0.0 and P["p"][i][i] is None


def test_summary_content(run_dir):
    d, _ = run_dir
    text = (d / "summary.md").read_text()
    for name in UNORM:
        assert f"| **{name}** |" in text
    for k, f in R.FIGURES.items():
        assert (f"](figures/{f})" in text) == (k != "overhead")
    assert "λ = 2.0" in text and "budgets** [0.35, 0.5, 0.7, 0.85, 1.0]" in text
    assert "not measured in this run" in text
    for q in ("1. Which method", "2. Which method", "3. What is the overhead", "4. How do the final"):
        assert q in text
    # grpo reaches norm. utility >= 0.9 at 133 env steps (3/3), lut at 150 (2/3)
    assert "133 (3/3" in text and "150 (2/3)" in text
    assert "first to reach it is **grpo**" in text


def test_report_cli_reproduces_outputs_from_json(run_dir, tmp_path):
    src, paths = run_dir
    d = tmp_path / "copy"
    d.mkdir()
    shutil.copy(src / "e5_training_curves.json", d)
    assert cli_main(["report", str(d)]) == 0
    for p in paths:
        rel = p.relative_to(src)
        assert (d / rel).is_file(), rel
        if p.suffix in (".json", ".md"):
            assert (d / rel).read_text() == p.read_text(), rel


def test_no_figures_writes_the_same_json_and_removes_stale_figures(run_dir, tmp_path):
    src, paths = run_dir
    d = tmp_path / "nofig"
    shutil.copytree(src, d)  # figures of an earlier report are there
    written = R.write_outputs(d, figures=False)
    assert not any(p.suffix == ".png" for p in written) and not list((d / R.FIG_DIR).glob("*.png"))
    for p in paths:
        if p.suffix == ".json":
            assert (d / p.relative_to(src)).read_text() == p.read_text(), p.name
    text = (d / R.SUMMARY).read_text()
    assert "--no-figures" in text and f"{R.FIG_DIR}/" not in text.split("## Figures")[1].split("## Files")[0]
    assert cli_main(["report", str(d)]) == 0  # draws them later from the same JSON
    assert {p.name for p in (d / R.FIG_DIR).glob("*.png")} == {p.name for p in paths if p.suffix == ".png"}
    assert (d / R.SUMMARY).read_text() == (src / R.SUMMARY).read_text()


def test_relative_thresholds_resolve_against_the_oracle(run_dir):
    d, _ = run_dir
    se = read_json(d / "e5_sample_efficiency.json")
    th = {t["name"]: t for t in se["thresholds"]}
    slo = th["slo_within_5pts_of_oracle"]  # oracle violation 0.2 -> threshold 0.25, which the oracle meets
    assert slo["value"] == pytest.approx(0.25) and slo["oracle_meets"] is True
    q = th["quality_ge_95pct_oracle"]  # oracle quality 0.55 -> 0.5225
    assert q["value"] == pytest.approx(0.95 * 0.55) and q["oracle_meets"] is True
    # crossings with the relative thresholds: lut's SLO [.8 .2 .04], [.8 .1 ..], [.8 .3 .2 ..] <= 0.25 at idx 1, 1, 2
    lut = se["methods"]["lut"]["slo_within_5pts_of_oracle"]
    assert lut["env_steps_per_seed"] == [100.0, 100.0, 200.0]
    ppo = se["methods"]["ppo"]["quality_ge_95pct_oracle"]  # [.45 .5 .55 ..], [.. .53 ..], [.. .52 .53] >= 0.5225: 2, 2, 3
    assert ppo["env_steps_per_seed"] == [200.0, 200.0, 300.0]
    gap = se["methods"]["lut"]["gap_closed_ge_0.5"]  # lut 0.5 / 0.92 / 0.6 at idx 1
    assert gap["env_steps_per_seed"] == [100.0, 100.0, 100.0]


def test_auc_known_areas():
    # constant curve -> its value; a jump from 0 to 1 at the geometric middle of the range -> 0.5
    assert A.auc_log_steps([0, 10, 100], [0.3, 0.3, 0.3], 1, 100) == pytest.approx(0.3)
    assert A.auc_log_steps([0, 10], [0.0, 1.0], 1, 100) == pytest.approx(0.5)
    # a jump at a quarter of the log range -> 0.75; NaN keeps the previous value; after the last point it holds
    assert A.auc_log_steps([0, 10 ** 0.5, 50], [0.0, 1.0, np.nan], 1, 100) == pytest.approx(0.75)
    # points before lo only set the starting value; points after hi do not count
    assert A.auc_log_steps([0, 0.5, 1000], [0.0, 0.4, 1.0], 1, 100) == pytest.approx(0.4)
    assert np.isnan(A.auc_log_steps([5, 10], [1, 1], 1, 100))  # nothing evaluated at the start of the range
    with pytest.raises(ValueError):
        A.auc_log_steps([0, 1], [0, 1], 10, 1)


def test_auc_in_sample_efficiency(run_dir):
    d, _ = run_dir
    se = read_json(d / "e5_sample_efficiency.json")
    au = se["auc"]
    lo, hi = au["env_steps_range"]
    assert (lo, hi) == (10.0, 300.0)  # one update's env steps .. the run's budget (meta.run)
    # recompute one seed by hand: lut seed 0 normalized utility [-1, 0.5, 0.95, 0.97] at steps [0, 100, 200, 300]
    w = np.diff(np.log([10, 100, 200, 300]))
    expect = (w * np.array([-1.0, 0.5, 0.95])).sum() / np.log(30)
    assert au["methods"]["lut"]["per_seed"][0] == pytest.approx(expect)
    g, p = au["methods"]["grpo"], au["methods"]["ppo"]
    assert g["iqm"] > p["iqm"] and g["ci_low"] <= g["iqm"] <= g["ci_high"]
    P = au["probability_of_improvement"]
    i, j = P["methods"].index("grpo"), P["methods"].index("ppo")
    assert P["p"][i][j] == 1.0 and P["p"][j][i] == 0.0
    summary = (d / "summary.md").read_text()
    assert "Winner (sample-efficiency AUC" in summary and "sample-efficiency AUC IQM" in summary


def test_thresholds_configurable(tmp_path):
    write_json(tmp_path / "e5_training_curves.json", make_curves())
    doc = read_json(tmp_path / "e5_training_curves.json")
    th = R.resolve_thresholds(doc, "utility_norm=0.5,slo=0.25")
    se = R.sample_efficiency(doc, th)
    assert th[2]["value"] == 0.5 and th[0]["value"] == 0.25
    assert se["methods"]["ppo"][th[2]["name"]]["env_steps_per_seed"] == [200.0, 200.0, 200.0]
    assert se["methods"]["ppo"][th[0]["name"]]["env_steps_per_seed"] == [200.0, 200.0, 200.0]
    with pytest.raises(R.ReportError):
        R.parse_thresholds("speed=3")
    th = R.resolve_thresholds(doc, "gaps=0.3/0.7,slo_vs_oracle=0.1,quality_vs_oracle=0.9")
    names = [t["name"] for t in th]
    assert "gap_closed_ge_0.3" in names and "gap_closed_ge_0.7" in names and "gap_closed_ge_0.5" not in names
    by = {t["name"]: t for t in th}
    assert by["slo_within_10pts_of_oracle"]["value"] == pytest.approx(0.3)
    assert by["quality_ge_90pct_oracle"]["value"] == pytest.approx(0.9 * 0.55)


def test_overhead_file_is_used(tmp_path):
    write_json(tmp_path / "e5_training_curves.json", make_curves(seeds=2))
    write_json(tmp_path / "e5_overhead_analysis.json", {
        "schema": "e5jax/e5_overhead_analysis/v1",
        "methods": {"lut": {"decision_ms": {"p50": 0.01, "p95": 0.02, "p99": 0.03}, "training": {"total_s": 1.0, "components": {}}},
                    "ppo": {"decision_ms": {"p50": 0.1, "p95": 0.2, "p99": 0.3},
                            "training": {"total_s": 3.0, "components": {"critic_s": 1.0, "policy_s": 1.5}}}}})
    paths = R.write_outputs(tmp_path)
    assert tmp_path / "figures" / R.FIGURES["overhead"] in paths
    text = (tmp_path / "summary.md").read_text()
    assert "0.01 ms p50" in text and "critic_s 1" in text
    # without interleaved rounds (an older file) the ordering is labelled as point estimates, not decided
    assert "lowest p50 lut, highest ppo (point estimates" in text and "cheapest" not in text
    assert "| **grpo** |" in text and "not measured |" in text  # grpo has no overhead row
    ff = read_json(tmp_path / "e5_final_frontiers.json")  # the seed's controller_overhead_ms: p50 decision time
    assert ff["methods"]["lut"]["controller_overhead_ms"] == 0.01 and ff["methods"]["ppo"]["controller_overhead_ms"] == 0.1
    assert ff["methods"]["grpo"]["controller_overhead_ms"] is None


def test_report_usage_errors(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    assert cli_main(["report", str(tmp_path)]) == 2  # no curves file
    (tmp_path / "e5_training_curves.json").write_text("{not json")
    assert cli_main(["report", str(tmp_path)]) == 2
    write_json(tmp_path / "e5_training_curves.json", {"schema": "something/else/v1"})
    assert cli_main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("e5jax: error: ") for line in err)
    assert not (tmp_path / "summary.md").exists()


def test_decide_command_prints_a_pair_and_refuses_a_method_not_run(run_dir, capsys):
    from e5jax.cli import main as cli_main

    d, _ = run_dir
    before = sorted(p.name for p in d.iterdir())
    assert cli_main(["decide", str(d), "grpo", "ppo"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Conditions") and len(out) == 1 + 5  # one line per question
    assert all(ln.split("-> ")[1].split()[0] in (">", "<", "unresolved") for ln in out[1:])
    assert cli_main(["decide", str(d), "grpo", "dqn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'dqn' was not run" in err[0]
    assert sorted(p.name for p in d.iterdir()) == before  # nothing written


def test_overhead_orderings_are_sets_under_their_resolution(tmp_path):
    """Q3 names the fastest / slowest training and the cheapest / most expensive decisions as sets: a training time
    whose interval (± its resolution) overlaps the fastest's is not separated from it; a decision time whose 95% CI of
    the ratio of interleaved round medians to the cheapest's includes 1 is not separated from it."""
    doc = make_curves(seeds=2)
    names = list(doc["methods"])
    times = {names[0]: (1.0, 0.1), names[1]: (1.15, 0.1), names[2]: (3.0, 0.1)}  # the first two overlap
    for n, m in doc["methods"].items():
        t, r = times.get(n, (2.0, 0.05))
        m["train_time_s"], m["train_time_resolution_s"] = t, r
    write_json(tmp_path / "e5_training_curves.json", doc)
    rng = np.random.default_rng(0)
    base = 0.01 * np.exp(rng.normal(0, 0.05, 20))  # the rounds' shared machine noise
    blocks = {names[0]: base * np.exp(rng.normal(0, 0.03, 20)),
              names[1]: None,

              names[2]: base * 100 * np.exp(rng.normal(0, 0.03, 20))}
    blocks[names[1]] = blocks[names[0]] * np.exp(0.05 * np.array([1, -1] * 10))  # no consistent difference
    write_json(tmp_path / "e5_overhead_analysis.json", {"schema": "e5jax/e5_overhead_analysis/v1", "methods": {
        n: {"decision_ms": {"p50": float(np.median(b)), "p95": float(b.max()), "p99": float(b.max()),
                            "block_p50": b.tolist()}, "training": {"total_s": 1.0, "components": {}}}
        for n, b in blocks.items()}})
    R.write_outputs(tmp_path, figures=False)
    text = (tmp_path / "summary.md").read_text()
    fast = sorted(names[:2], key=lambda n: times[n][0])
    assert f"fastest **{{{fast[0]}, {fast[1]}}}**, slowest {names[2]} (a time" in text
    cheap = sorted(names[:2], key=lambda n: float(np.median(blocks[n])))
    assert f"cheapest (p50) **{{{cheap[0]}, {cheap[1]}}}**, most expensive {names[2]} (a method" in text
    # every method in one set: said so, not as "cheapest X, most expensive X"
    for n, m in doc["methods"].items():
        m["train_time_s"], m["train_time_resolution_s"] = 1.0 + 0.01 * names.index(n), 0.5
    write_json(tmp_path / "e5_training_curves.json", doc)
    write_json(tmp_path / "e5_overhead_analysis.json", {"schema": "e5jax/e5_overhead_analysis/v1", "methods": {
        n: {"decision_ms": {"p50": float(np.median(blocks[n])), "p95": 1.0, "p99": 1.0, "block_p50": blocks[n].tolist()},
            "training": {"total_s": 1.0, "components": {}}} for n in names[:2]}})
    R.write_outputs(tmp_path, figures=False)
    same = (tmp_path / "summary.md").read_text()
    assert "none separated from the others: each time ± its resolution overlaps the fastest's" in same
    assert "none separated from the others (the 95% CI of each one's ratio" in same and "cheapest (p50)" not in same
    # the seed's expected findings carry the same rules: per-seed ranges of env steps, training times' resolution
    assert "gap closed ≥ 0.5: grpo 100 vs ppo 200 env steps (per-seed ranges do not overlap)" in text
    assert "training time grpo 3 s vs ppo 1.15 s (parameters 100 vs 200) — separated by more than their resolution" in text
    # the rule itself: overlapping intervals are one set; paired rounds resolve a 2 % ratio only when it is consistent
    assert A.overlap_set({"a": (1.0, 0.1), "b": (1.15, 0.1), "c": (3.0, 0.1)}) == ["a", "b"]
    assert A.overlap_set({"a": (1.0, 0.1), "b": (1.15, 0.1), "c": (3.0, 0.1)}, lowest=False) == ["c"]
    lo, hi = A.paired_ratio_ci(base * 1.02, base)  # every round 2 % slower: resolved
    assert lo == pytest.approx(1.02) and hi == pytest.approx(1.02)
    lo, hi = A.paired_ratio_ci(blocks[names[1]], blocks[names[0]])
    assert lo <= 1 <= hi


def test_host_records_the_cpu_signature_and_isa(tmp_path):
    """Two virtual machines both named "AMD EPYC" gave different last bits (docs/robustness.md): the host record keeps
    the first processor's vendor, family, model and stepping and which ISA extensions it has; the summary prints them.
    Without /proc/cpuinfo the fields are None."""
    from e5jax.host import cpu_identity

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
                    "stepping\t: 1\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n\nprocessor\t: 1\nflags\t\t: avx512_bf16\n")
    ident = cpu_identity(str(info))
    assert ident["cpu"] == "AMD EPYC" and ident["cpu_isa"] == ["sse4_2", "avx", "avx2", "fma", "avx512f"]
    assert ident["cpu_signature"] == {"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17", "stepping": "1"}
    none = cpu_identity(str(tmp_path / "missing"))
    assert none["cpu_signature"] is None and none["cpu_isa"] is None
    doc = make_curves(seeds=2)
    doc["meta"]["host"].update(cpu="AMD EPYC", cpu_signature=ident["cpu_signature"], cpu_isa=ident["cpu_isa"])
    write_json(tmp_path / "e5_training_curves.json", doc)
    R.write_outputs(tmp_path, figures=False)
    assert "AMD EPYC × 1 (family 25 model 17; sse4_2, avx, avx2, fma, avx512f)." in (tmp_path / "summary.md").read_text()
