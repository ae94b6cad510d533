"""experiments/equivalence.py's logic on synthetic samples (no runs): paired t interval, TOST verdict, the
ordering comparison, reading a run's values, and the refusal of fewer than 20 seeds."""

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("equivalence", ROOT / "experiments" / "equivalence.py")
eq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eq)

RNG = np.random.default_rng(0)
OLD = RNG.uniform(0.3, 0.9, 20)


def _zero_mean(sd):
    e = np.random.default_rng(1).normal(0.0, sd, OLD.size)
    return e - e.mean()


def test_equal_samples_are_identical_and_equivalent():
    r = eq.paired_difference(OLD, OLD.copy())
    assert r["identical"] and r["verdict"] == "identical"
    assert r["n"] == 20 and r["mean_diff"] == 0.0 and r["ci"] == [0.0, 0.0]


def test_a_shift_of_005_is_not_equivalent():
    r = eq.paired_difference(OLD, OLD + 0.05)
    assert r["verdict"] == "not equivalent" and not r["identical"]
    assert r["mean_diff"] == pytest.approx(0.05)


def test_small_zero_mean_noise_is_equivalent():
    r = eq.paired_difference(OLD, OLD + _zero_mean(0.002))
    assert r["verdict"] == "equivalent"
    lo, hi = r["ci"]
    assert -0.01 < lo < 0 < hi < 0.01
    # the interval is the paired t interval: mean ± t_{0.95, 19} sd / sqrt(20)
    d = (OLD + _zero_mean(0.002)) - OLD
    half = 1.729133 * d.std(ddof=1) / np.sqrt(20)
    assert hi - lo == pytest.approx(2 * half, rel=1e-5)


def test_large_zero_mean_noise_is_not_equivalent():
    r = eq.paired_difference(OLD, OLD + _zero_mean(0.05))
    assert abs(r["mean_diff"]) < 1e-12
    assert r["ci"][1] > 0.01 and r["verdict"] == "not equivalent"  # the interval is too wide


def test_mismatched_seeds_and_one_seed():
    with pytest.raises(ValueError):
        eq.paired_difference(OLD, OLD[:-1])
    assert eq.paired_difference([0.5], [0.5001])["verdict"] == "not equivalent"  # no interval from one seed


def _decisions():
    row = lambda a, b, d, ds: {"a": a, "b": b, "decision": d, "decision_seeds": ds}  # noqa: E731
    q = {"pairs": {"ppo vs grpo": row("ppo", "grpo", ">", ">"), "ppo vs lut": row("ppo", "lut", "unresolved", ">"),
                   "grpo vs lut": row("grpo", "lut", "<", "<")},
         "winners": ["ppo", "lut"]}
    return {"questions": {"final_utility": q, "auc": copy.deepcopy(q)}}


def test_orderings_same_and_independent_of_pair_orientation():
    old = _decisions()
    new = copy.deepcopy(old)
    new["questions"]["auc"]["pairs"] = {"grpo vs ppo": {"a": "grpo", "b": "ppo", "decision": "<", "decision_seeds": "<"},
                                        **{k: v for k, v in old["questions"]["auc"]["pairs"].items() if k != "ppo vs grpo"}}
    new["questions"]["auc"]["winners"] = ["lut", "ppo"]
    r = eq.compare_orderings(old, new)
    assert r == {"count": 14, "same": True, "different": []}


def test_orderings_detect_a_changed_pair_decision_and_winner_set():
    old = _decisions()
    new = copy.deepcopy(old)
    new["questions"]["final_utility"]["pairs"]["ppo vs lut"]["decision"] = ">"
    new["questions"]["auc"]["winners"] = ["ppo"]
    r = eq.compare_orderings(old, new)
    assert not r["same"]
    assert r["different"] == [
        {"ordering": "final_utility: lut vs ppo", "old": "unresolved", "new": "<"},
        {"ordering": "auc: winners", "old": ["lut", "ppo"], "new": ["ppo"]},
    ]
    ok = {"final_utility": {"verdict": "identical"}}
    assert eq.overall(ok, r) == "not equivalent"
    assert eq.overall(ok, eq.compare_orderings(old, old)) == "identical"


def test_run_values_and_compare_methods():
    curves = {"methods": {"a": {"curves": {"val_utility_norm": {"per_seed": [[0.1, 0.5], [0.2, None]]}}}}}
    se = {"auc": {"methods": {"a": {"per_seed": [0.3, 0.4]}}}}
    v = eq.run_values(curves, se)
    np.testing.assert_array_equal(v["a"]["final_utility"], [0.5, np.nan])
    np.testing.assert_array_equal(v["a"]["auc"], [0.3, 0.4])
    old = {"a": {"final_utility": OLD, "auc": OLD}, "b": {"final_utility": OLD, "auc": OLD}}
    new = {"a": {"final_utility": OLD + _zero_mean(0.002), "auc": OLD}, "c": old["b"]}
    r = eq.compare_methods(old, new)
    assert list(r) == ["a", "b", "c"]
    assert r["a"]["final_utility"]["verdict"] == "equivalent" and r["a"]["auc"]["verdict"] == "identical"
    assert r["a"]["verdict"] == "equivalent"
    assert r["b"] == {"missing_in": "new", "verdict": "not equivalent"}
    assert r["c"]["missing_in"] == "old"
    assert "not equivalent" in eq.method_line("b", r["b"], 0.01)
    assert eq.method_line("a", r["a"], 0.01).endswith("-> equivalent")


def test_fewer_than_20_seeds_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = eq.main(["HEAD", "--seeds", "5", "--out", str(out), "--workdir", str(tmp_path / "w")])
    assert rc == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--allow-few-seeds" in err
    assert list(tmp_path.iterdir()) == []


def test_new_env_without_a_value_refused_in_one_line(tmp_path, capsys):
    rc = eq.main(["HEAD", "--new-env", "XLA_FLAGS", "--out", str(tmp_path / "r.json"), "--workdir", str(tmp_path / "w")])
    assert rc == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "KEY=VALUE" in err
    assert list(tmp_path.iterdir()) == []


def test_noise_floor_marks_orderings_that_a_neutral_change_also_moves():
    ords = {"count": 4, "same": False, "different": [
        {"ordering": "auc: dpo vs ppo", "old": ">", "new": "unresolved"},
        {"ordering": "quality: lut vs ppo", "old": "<", "new": ">"},
        {"ordering": "slo_violation: winners", "old": ["a"], "new": ["a", "b"]}]}
    avx = {"meta": {"new_env": {"XLA_FLAGS": "--xla_cpu_max_isa=AVX"}},
           "orderings": {"different": [{"ordering": "auc: dpo vs ppo", "old": ">", "new": "unresolved"},
                                       {"ordering": "slo_violation: winners", "old": ["a"], "new": ["b"]}]}}
    width = {"meta": {}, "orderings": {"different": [{"ordering": "auc: dpo vs ppo", "old": ">", "new": "unresolved"}]}}
    floors = [(eq.floor_label(avx, "a.json"), avx), (eq.floor_label(width, "noise_floor_w.json"), width)]
    nf = eq.noise_floor(ords, floors)
    assert nf["reports"] == ["XLA_FLAGS=--xla_cpu_max_isa=AVX", "noise_floor_w.json"]
    assert nf["also_in_noise_floor"] == [
        {"ordering": "auc: dpo vs ppo", "under": ["XLA_FLAGS=--xla_cpu_max_isa=AVX", "noise_floor_w.json"]},
        {"ordering": "slo_violation: winners", "under": ["XLA_FLAGS=--xla_cpu_max_isa=AVX"]}]
    assert nf["not_in_noise_floor"] == ["quality: lut vs ppo"] and nf["reversed"] == ["quality: lut vs ppo"]
    assert "2 of 3 differing orderings" in eq.noise_floor_line(nf, 3)


def test_noise_floor_that_is_not_a_report_refused_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"verdict": "equivalent"}')
    rc = eq.main(["HEAD", "--noise-floor", str(bad), "--seeds", "20", "--out", str(tmp_path / "r.json"),
                  "--workdir", str(tmp_path / "w")])
    assert rc == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not an equivalence report" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_a_differing_pair_carries_both_intervals_oriented_like_the_ordering():
    old = _decisions()
    for q in old["questions"].values():
        q["pairs"]["ppo vs lut"].update(ci_two_level=[-0.002, 0.010], ci_seeds=[0.001, 0.009])
    new = copy.deepcopy(old)
    new["questions"]["auc"]["pairs"]["ppo vs lut"].update(decision_seeds="unresolved", ci_seeds=[-0.0003, 0.008])
    r = eq.compare_orderings(old, new)
    assert r["different"] == [{"ordering": "auc: lut vs ppo (seeds only)", "old": "<", "new": "unresolved",
                               "old_ci": [-0.009, -0.001], "new_ci": [-0.008, 0.0003]}]


def test_runs_on_different_cpus_are_flagged():
    """A reused run from another CPU (same model name, another family/model or ISA) is flagged; the same CPU is not;
    a run that predates the cpu_signature record cannot be judged (None)."""
    a = {"cpu": "AMD EPYC", "cpu_signature": {"cpu family": "25", "model": "17"}, "cpu_isa": ["avx2", "avx512f"]}
    b = {"cpu": "AMD EPYC", "cpu_signature": {"cpu family": "25", "model": "1"}, "cpu_isa": ["avx2"]}
    assert eq.different_machines(a, copy.deepcopy(a)) is False
    assert eq.different_machines(a, b) is True
    assert eq.different_machines({"cpu": "AMD EPYC"}, a) is None
