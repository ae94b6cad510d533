"""The one decision rule (e5jax.decide): known answers, the two-level bootstrap's coverage, per-request metrics."""

import numpy as np
import pytest

from e5jax import analysis as A
from e5jax import decide as D


def _metric(x):
    """[S, R] per-seed, per-request values -> a plain-mean Metric (one budget)."""
    x = np.asarray(x, np.float64)
    return D.Metric(x[:, None, :], np.ones((1, x.shape[1])))


def test_decision_rule_known_answers():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 0.05, (5, 200))
    far = _metric(base + 1.0)
    same = _metric(base)
    res = D.compare({"far": far, "same": same, "copy": _metric(base.copy())}, n=500)
    assert D.pair(res, "far", "same")["decision"] == ">"
    assert D.pair(res, "same", "far")["decision"] == "<"
    assert D.pair(res, "same", "copy")["decision"] == "unresolved"  # identical: never ordered
    assert res["winners"] == ["far"]
    # lower is better: the same data, the winner flips to the low ones, which tie
    low = D.compare({"far": far, "same": same, "copy": _metric(base.copy())}, higher=False, n=500)
    assert set(low["winners"]) == {"same", "copy"}
    assert D.pair(low, "far", "same")["better"] == "same"


def test_overlapping_samples_are_unresolved_and_share_the_win():
    rng = np.random.default_rng(1)
    a = _metric(rng.normal(0.50, 0.2, (5, 100)))
    b = _metric(rng.normal(0.51, 0.2, (5, 100)))
    res = D.compare({"a": a, "b": b}, n=500)
    assert res["pairs"]["a vs b"]["decision"] == "unresolved"
    assert set(res["winners"]) == {"a", "b"}


def test_identical_methods_reaching_the_oracle_are_never_ordered():
    """A null-quality table: every config has the same quality, latency decides; two methods that both pick an
    optimal config for every request (different tie members, same rewards) get the same contributions."""
    rng = np.random.default_rng(2)
    R, C, B = 50, 6, 3
    quality = np.full((R, C), 0.7)
    lat = rng.uniform(0.2, 1.0, (R, C))
    rew = D.request_rewards(quality, lat, [0.35, 0.7, 1.0], 2.0)  # [B, R, C]
    best = rew.max(-1, keepdims=True)
    # method x takes the first optimal config, method y the last (ties: every config under the budget)
    first = np.argmax(rew >= best - 1e-12, -1)
    last = C - 1 - np.argmax((rew >= best - 1e-12)[..., ::-1], -1)
    acts = lambda a: np.broadcast_to(a, (4, 2, B, R)).copy()  # noqa: E731
    steps = np.tile([0.0, 256.0], (4, 1))
    mx = D.run_metrics(acts(first), rew, quality, lat, [0.35, 0.7, 1.0], steps, (256.0, 512.0))
    my = D.run_metrics(acts(last), rew, quality, lat, [0.35, 0.7, 1.0], steps, (256.0, 512.0))
    res = D.compare({"x": mx["final"], "y": my["final"]}, n=300)
    assert res["methods"]["x"]["value"] == pytest.approx(1.0)
    assert res["pairs"]["x vs y"]["decision"] == "unresolved"
    assert set(res["winners"]) == {"x", "y"}
    assert res["methods"]["x"]["deterministic"]


def test_two_level_bootstrap_covers_the_population_mean():
    """y[s, r] = a_s + b_r + e_sr with both seeds and requests random: the two-level 95% CI of the mean covers the
    population mean (0) close to 95% of the time; the seed-only CI, which holds the requests fixed, does not."""
    rng = np.random.default_rng(3)
    S, R, reps = 10, 80, 120
    hit2 = hit1 = 0
    for i in range(reps):
        y = rng.normal(0, 1, (S, 1)) + rng.normal(0, 1, (1, R)) * np.sqrt(R / 2) + rng.normal(0, 0.5, (S, R))
        res = D.compare({"m": _metric(y)}, n=600, seed=i)
        lo, hi = res["methods"]["m"]["ci_two_level"]
        hit2 += lo <= 0 <= hi
        lo, hi = res["methods"]["m"]["ci_seeds"]
        hit1 += lo <= 0 <= hi
    cov2, cov1 = hit2 / reps, hit1 / reps
    assert 0.88 <= cov2 <= 0.995, cov2
    assert cov1 < 0.75, cov1


def test_metric_values_match_the_ratio_of_weighted_sums():
    rng = np.random.default_rng(4)
    num, den = rng.normal(size=(3, 2, 7)), rng.uniform(1, 2, (2, 7))
    w = rng.integers(0, 3, (4, 7)).astype(float) + 0.5
    got = D.Metric(num, den).values(w)
    want = np.array([[np.mean([(w[n] * num[s, b]).sum() / (w[n] * den[b]).sum() for b in range(2)]) for s in range(3)]
                     for n in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_run_metrics_reproduce_the_curves_and_the_auc():
    rng = np.random.default_rng(5)
    S, E, B, R, C = 3, 4, 2, 30, 5
    quality, lat, budgets = rng.uniform(0, 1, (R, C)), rng.uniform(0.1, 1.2, (R, C)), [0.5, 1.0]
    rew = D.request_rewards(quality, lat, budgets, 2.0)
    acts = rng.integers(0, C, (S, E, B, R))
    steps = np.tile([0.0, 256.0, 512.0, 2048.0], (S, 1))
    m = D.run_metrics(acts, rew, quality, lat, budgets, steps, (256.0, 2048.0))
    u = rew[np.arange(B)[:, None], np.arange(R)[None], acts]  # [S, E, B, R]
    norm = A.normalized_utility(u.mean(-1), rew.mean(-1).mean(-1), rew.max(-1).mean(-1)).mean(-1)  # [S, E]
    np.testing.assert_allclose(m["final"].values()[0], norm[:, -1], rtol=1e-12)
    auc = [A.auc_log_steps(steps[s], norm[s], 256.0, 2048.0) for s in range(S)]
    np.testing.assert_allclose(m["auc"].values()[0], auc, rtol=1e-12)
    slo = (lat[np.arange(R)[None], acts[:, -1]] > np.asarray(budgets)[:, None]).mean((-1, -2))
    np.testing.assert_allclose(m["slo"].values()[0], slo, rtol=1e-12)


def test_across_conditions():
    assert D.across({"a": ">", "b": ">"})["verdict"] == "holds"
    assert D.across({"a": ">", "b": "<"})["verdict"] == "flips"
    assert D.across({"a": ">", "b": "unresolved"})["verdict"] == "unresolved"
    assert D.across({"a": "unresolved", "b": "unresolved"})["direction"] is None


def test_a_decision_between_methods_not_both_run_is_refused():
    res = D.compare({"a": D.Metric.per_seed([1.0, 2.0]), "b": D.Metric.per_seed([1.0, 2.5])}, n=100)
    with pytest.raises(D.DecisionError, match="ppo was not run"):
        D.pair(res, "a", "ppo")


def test_one_seed_and_a_json_round_trip_stay_unresolved_for_the_std():
    import json

    from e5jax.io import to_jsonable

    res = D.compare({"a": _metric(np.ones((1, 5))), "b": _metric(np.zeros((1, 5)))}, higher=False, statistic="std",
                    n=50)
    back = json.loads(json.dumps(to_jsonable(res)))  # NaN -> null
    r = D.pair(back, "b", "a")
    assert r["decision"] == "unresolved" and r["diff"] is None and r["ci_two_level"] == [None, None]
    assert back["winners"] == []  # no method has a std with one seed: nobody wins
