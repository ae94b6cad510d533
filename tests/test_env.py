"""Environment: shapes (chex), reward semantics, evaluator vs plain numpy, vmapped sampling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from e5jax import env as E
from e5jax.stats import format_summary, table_summary


def test_env_params_shapes(small_table):
    env = E.make_env_params(small_table, lam=2.0)
    R, C = small_table.num_requests, small_table.num_configs
    chex.assert_shape([env.latency_norm, env.quality, env.latency_ms, env.latency_std_norm], (R, C))
    chex.assert_shape(env.features, (R, 2))
    chex.assert_shape(env.task, (R,))
    assert env.knob_sizes == (3, 2, 2) and env.num_configs == C and env.num_tasks == 3
    assert env.obs_dim == 2 + 3 + 1
    np.testing.assert_allclose(np.asarray(env.latency_norm[:, -1]), 1.0, rtol=1e-6)  # full config = baseline
    # standardized with train statistics
    tr = np.asarray(env.train_idx)
    np.testing.assert_allclose(np.asarray(env.features)[tr].mean(0), 0.0, atol=1e-5)


def test_observation_and_reward(small_table):
    env = E.make_env_params(small_table, lam=3.0)
    req = jnp.array([0, 4, 5])
    obs = E.observe(env, req, jnp.array([0.35, 0.5, 1.0]))
    chex.assert_shape(obs, (3, env.obs_dim))
    tb = np.asarray(E.EVAL_BUDGETS)
    np.testing.assert_allclose(np.asarray(obs[:, -1]), (np.array([0.35, 0.5, 1.0]) - tb.mean()) / tb.std(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(obs[:, 2:5]).sum(-1), 1.0)
    config = jnp.array([0, 5, 11])
    r, q, lat = E.step(env, req, jnp.array([0.35, 0.5, 1.0]), config)
    chex.assert_shape([r, q, lat], (3,))
    t = small_table
    base = t.latency_ms[[0, 4, 5], -1]
    lat_np = t.latency_ms[[0, 4, 5], [0, 5, 11]] / base
    q_np = t.quality[[0, 4, 5], [0, 5, 11]]
    r_np = q_np - 3.0 * np.maximum(0, lat_np - np.array([0.35, 0.5, 1.0]))
    np.testing.assert_allclose(np.asarray(r), r_np, rtol=1e-5)
    rm = E.reward_matrix(env, req, jnp.array([0.35, 0.5, 1.0]))
    chex.assert_shape(rm, (3, t.num_configs))
    np.testing.assert_allclose(np.asarray(rm[jnp.arange(3), config]), r_np, rtol=1e-5)


def test_latency_noise_only_when_enabled(small_table):
    key = jax.random.PRNGKey(0)
    req, cfg = jnp.arange(6), jnp.arange(6)
    off = E.make_env_params(small_table, latency_noise=False)
    on = E.make_env_params(small_table, latency_noise=True)
    _, lat0 = E.lookup(off, req, cfg, key)
    _, lat1 = E.lookup(on, req, cfg, key)
    np.testing.assert_allclose(np.asarray(lat0), np.asarray(off.latency_norm[req, cfg]))
    assert not np.allclose(np.asarray(lat1), np.asarray(lat0))


def _numpy_eval(t, lam, actions, budgets):
    val = np.flatnonzero(t.split == "val")
    base = t.latency_ms[:, -1]
    out = {k: [] for k in ("utility", "quality_mean", "latency_p95_ms", "latency_p95_norm", "slo_violation_rate")}
    for bi, b in enumerate(budgets):
        a = actions[bi]
        q = t.quality[val, a]
        lat_ms = t.latency_ms[val, a]
        lat = lat_ms / base[val]
        out["utility"].append(np.mean(q - lam * np.maximum(0, lat - b)))
        out["quality_mean"].append(q.mean())
        out["latency_p95_ms"].append(np.percentile(lat_ms, 95))
        out["latency_p95_norm"].append(np.percentile(lat, 95))
        out["slo_violation_rate"].append(np.mean(lat > b))
    return out


def test_evaluator_matches_numpy(small_table):
    t = small_table
    lam = 2.5
    env = E.make_env_params(t, lam=lam)
    B, Rv = len(E.EVAL_BUDGETS), int((t.split == "val").sum())
    actions = np.random.default_rng(1).integers(0, t.num_configs, (B, Rv))
    got = E.evaluate_actions(env, jnp.asarray(actions))
    want = _numpy_eval(t, lam, actions, E.EVAL_BUDGETS)
    for k, v in want.items():
        chex.assert_shape(got[k], (B,))
        np.testing.assert_allclose(np.asarray(got[k]), v, rtol=1e-5, atol=1e-6, err_msg=k)
    # oracle: brute force in numpy
    val = np.flatnonzero(t.split == "val")
    base = t.latency_ms[:, -1]
    orc = np.stack([np.argmax(t.quality[val] - lam * np.maximum(0, t.latency_ms[val] / base[val, None] - b), -1) for b in E.EVAL_BUDGETS])
    np.testing.assert_array_equal(np.asarray(E.reference_actions(env)["oracle"]), orc)
    refs = E.evaluate_references(env)
    want_orc = _numpy_eval(t, lam, orc, E.EVAL_BUDGETS)
    np.testing.assert_allclose(np.asarray(refs["oracle"]["utility"]), want_orc["utility"], rtol=1e-5)
    # random policy: exact expectation = mean over all configs
    rnd = [np.mean(t.quality[val] - lam * np.maximum(0, t.latency_ms[val] / base[val, None] - b)) for b in E.EVAL_BUDGETS]
    np.testing.assert_allclose(np.asarray(refs["random"]["utility"]), rnd, rtol=1e-5)
    assert np.all(np.asarray(refs["oracle"]["utility"]) >= np.asarray(refs["random"]["utility"]))


def test_vmapped_sampling_gives_independent_batches(small_table):
    env = E.make_env_params(small_table)
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    req, b, bidx = jax.jit(jax.vmap(lambda k: E.sample_requests(k, env, 64)))(keys)
    chex.assert_shape([req, b, bidx], (5, 64))
    req = np.asarray(req)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not np.array_equal(req[i], req[j])
    assert set(np.unique(req)) <= set(np.asarray(env.train_idx).tolist())
    np.testing.assert_allclose(np.asarray(b), np.asarray(env.train_budgets)[np.asarray(bidx)])
    # the env is a traced input: the same compiled function serves another table of the same shape
    f = jax.jit(lambda e, k: E.sample_requests(k, e, 8)[0])
    f(env, keys[0])
    env2 = env.replace(quality=env.quality * 0.5)
    f(env2, keys[0])
    assert f._cache_size() == 1


def test_default_table_summary_is_contextual():
    from e5jax.table import load_default_table

    s = table_summary(load_default_table(), lam=2.0)
    assert s["context_value"] < 0.95  # a task x budget LUT cannot already be optimal
    for task, rows in s["oracle_diversity"].items():
        assert any(r["distinct_oracle_configs"] > 1 for r in rows[:-1]), task
    assert s["full_config_latency_ms_mean"] > 2 * s["smallest_config_latency_ms_mean"]
    # where the task's LUT is optimal for every val request (b = 1: the full config), no request misses it
    missed = s["lut_choice_not_optimal_val"]
    assert s["task_budget_lut_normalized_utility_val"][-1] == 1.0 and missed[-1] == 0.0
    assert all(0.3 < m <= 1.0 for m in missed[:-1])  # the request matters below b = 1 on the default table


# ----------------------------------------------------------------------------- the set-valued oracle
TIE_QUALITY = np.array([
    [0.8, 0.8, 0.8, 0.8],  # every config equal: all optimal where the latency fits
    [0.2, 0.4, 0.65, 0.9],  # one best config at each budget
    [0.5, 0.9, 0.9, 0.7],  # two configs tie at b = 1
    [0.7, 0.7 + 5e-7, 0.1, 0.1],  # a difference below the tolerance (1e-6) but above float32 resolution
    [0.1, 0.2, 0.3, 0.4],
    [0.6, 0.6, 0.6, 0.6],
])
TIE_BUDGETS = (0.5, 1.0)
# lam = 2, latency / baseline = [0.3, 0.5, 0.7, 1.0]: at b = 0.5 configs 2 and 3 lose 0.4 and 1.0
TIE_SETS = {  # budget -> [R, C] the optimal configs, by hand
    0.5: [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]],
    1.0: [[1, 1, 1, 1], [0, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1]],
}


def make_tie_table():
    """6 requests x 4 configs whose optimal sets are known (TIE_SETS): some with one optimal config, some several."""
    from e5jax.table import ProfileTable

    R = TIE_QUALITY.shape[0]
    return ProfileTable(
        knobs={"a": np.array([1, 2]), "b": np.array([1, 2])},
        request_ids=np.array([f"t{i}" for i in range(R)]),
        task_types=np.array(["x", "y"] * (R // 2)),
        split=np.array(["train", "val"] * (R // 2)),
        feature_names=("f0",),
        features=np.random.default_rng(0).normal(size=(R, 1)),
        latency_ms=np.tile([30.0, 50.0, 70.0, 100.0], (R, 1)),
        quality=TIE_QUALITY,
        meta={"source": "test: known ties"},
    )


def test_oracle_set_on_a_table_with_known_ties():
    env = E.make_env_params(make_tie_table(), lam=2.0, budgets=TIE_BUDGETS)
    req = jnp.arange(TIE_QUALITY.shape[0])
    for b, want in TIE_SETS.items():
        got = np.asarray(E.oracle_set(env, req, jnp.full(req.shape, b)))
        np.testing.assert_array_equal(got, np.asarray(want, bool), err_msg=f"b={b}")
        # the reference oracle's action is a member, and its reward is the best reward
        orc = np.asarray(E.oracle_config(env, req, jnp.full(req.shape, b)))
        assert got[np.arange(len(orc)), orc].all()
        rm = np.asarray(E.reward_matrix(env, req, jnp.full(req.shape, b)))
        np.testing.assert_array_equal(rm[np.arange(len(orc)), orc], rm.max(-1))
    # the tolerance decides request 3: with 0 only the exact best config is optimal
    env0 = E.make_env_params(make_tie_table(), lam=2.0, budgets=TIE_BUDGETS, oracle_tol=0.0)
    np.testing.assert_array_equal(np.asarray(E.oracle_set(env0, req[3], 1.0)), [False, True, False, False])
    assert bool(E.oracle_set(env, req[3], 1.0)[0])


def test_oracle_tol_reaches_the_env_from_the_run_config(small_table):
    import dataclasses

    from e5jax.config import load_config

    run, _ = load_config()
    assert float(E.env_from_run(run, small_table).oracle_tol) == np.float32(E.ORACLE_TOL)
    env = E.env_from_run(dataclasses.replace(run, oracle_tol=0.25), small_table)
    assert float(env.oracle_tol) == 0.25


def test_numpy_twins_equal_the_jax_observation_and_reward(small_table):
    """env.request_point_np / observation_np / reward_np (the eager controllers' and the PyTorch reference's) give
    the JAX functions' float32 values for every request and budget."""
    from e5jax import policy as P
    from e5jax.export import observation_spec

    env = E.make_env_params(small_table, lam=3.0)
    spec = observation_spec(small_table, env)
    R, T = small_table.num_requests, len(small_table.task_names)
    task = {t: i for i, t in enumerate(spec["task_names"])}
    for b in (0.35, 0.6, 1.0):
        obs = np.asarray(E.observe(env, jnp.arange(R), jnp.full((R,), b)))
        points = np.asarray(P.knn_features(env, jnp.arange(R)))
        for r in range(R):
            pt = E.request_point_np(small_table.features[r], spec["feature_mean"], spec["feature_std"],
                                    task[str(small_table.task_types[r])], T)
            np.testing.assert_array_equal(pt, points[r])
            np.testing.assert_allclose(E.observation_np(pt, b, spec["budget_mean"], spec["budget_std"]), obs[r],
                                       rtol=0, atol=1e-6)
    q, lat = np.asarray(env.quality), np.asarray(env.latency_norm)
    for b in (0.35, 0.7, 1.0):
        np.testing.assert_array_equal(E.reward_np(q, lat, b, 3.0), np.asarray(E.reward(env.quality, env.latency_norm,
                                                                                       jnp.float32(b), env.lam)))


def _f0_table(R: int = 400):
    """Config 0 suits requests with f0 = 0 and config 1 those with f0 = 1; f1 is unrelated noise."""
    from e5jax.table import ProfileTable

    rng = np.random.default_rng(0)
    f0 = rng.integers(0, 2, R)
    quality = np.where(np.arange(2)[None, :] == f0[:, None], 0.8, 0.2) + rng.uniform(0, 0.01, (R, 2))
    return ProfileTable(knobs={"vision_tokens": np.array([1, 2]), "top_k": np.array([1]), "active_blocks": np.array([1])},
                        request_ids=np.array([f"r{i}" for i in range(R)]), task_types=np.array(["t"] * R),
                        split=np.where(np.arange(R) % 4 == 0, "val", "train"), feature_names=("f0", "f1"),
                        features=np.column_stack([f0, rng.normal(size=R)]).astype(float),
                        latency_ms=np.full((R, 2), 10.0), quality=quality, meta={"source": "test"})


def test_lut_cells_shows_where_the_feature_lut_gains(tmp_path, capsys):
    """experiments/lut_cells.py: on the f0 table the task LUT gives every val request one config; the f0 LUT gives
    each f0 cell its own, and the cell the task LUT served badly is where the reward is gained. An unknown column or
    budget: one line, exit 2."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("lut_cells", root / "experiments" / "lut_cells.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t = _f0_table()
    rep = mod.cells(t, "f0", 1.0)
    cells = {c["bin"]: c for c in rep["cells"]}
    assert set(cells) == {0.0, 1.0} and sum(c["val_requests"] for c in cells.values()) == int((t.split == "val").sum())
    assert cells[0.0]["task_lut"]["configs"] == cells[1.0]["task_lut"]["configs"]  # one config for the task
    assert cells[0.0]["feature_lut"]["configs"] != cells[1.0]["feature_lut"]["configs"]
    gains = sorted(c["reward_gain"] for c in cells.values())
    assert abs(gains[0]) < 1e-9 and gains[1] > 0.5  # 0.8 instead of 0.2 in the cell the task LUT's config misfits
    t.save(tmp_path / "t.npz")
    for extra in (["--column", "nope"], ["--column", "f0", "--budget", "0.6"]):
        assert mod.main(["--table", str(tmp_path / "t.npz"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lut_cells: ")


def test_feature_lut_finds_what_features_predict_and_nothing_else():
    """A LUT keyed on (task, feature) fitted on train beats the task LUT exactly when the feature says which config
    a request needs: here config 0 suits f0 = 0 and config 1 suits f0 = 1; f1 is unrelated noise."""
    import pytest

    from e5jax.stats import feature_lut, feature_lut_decision

    t = _f0_table()
    task = feature_lut(t, ())
    by_f0 = feature_lut(t, ("f0",))
    by_f1 = feature_lut(t, ("f1",))
    assert by_f0["normalized_utility"] > 0.98 and task["normalized_utility"] < 0.2
    assert by_f1["normalized_utility"] < task["normalized_utility"] + 0.1 and by_f1["keys_on_val"] == 4
    summary = table_summary(t)
    assert feature_lut(t, (), fit="all")["normalized_utility"] == pytest.approx(summary["context_value"], abs=1e-6)
    # e5jax validate's context value with one feature known: f0 closes the gap, the noise column adds little
    by_feature = summary["context_value_by_feature"]
    assert set(by_feature) == {"f0", "f1"} and by_feature["f0"] > 0.98
    assert by_feature["f1"] < summary["context_value"] + 0.1
    assert "with one feature known" in format_summary(summary) and "f0 1.000" in format_summary(summary)
    # by the lab's decision rule (request-level bootstrap): f0 resolves above the task LUT, the noise column does not
    d0, d1 = feature_lut_decision(t, ("f0",)), feature_lut_decision(t, ("f1",))
    assert d0["value"] == pytest.approx(by_f0["normalized_utility"], abs=1e-6)
    assert d0["base_value"] == pytest.approx(task["normalized_utility"], abs=1e-6)
    assert d0["decision"] == ">" and d0["ci"][0] > 0.5 and d0["diff"] == pytest.approx(d0["value"] - d0["base_value"])
    assert d1["decision"] == "unresolved" and d1["ci"][0] <= 0 <= d1["ci"][1]


def test_lut_rules_mean_reward_vs_label_mode_vs_factored_mode(tmp_path, capsys):
    """One task, a 2 x 2 knob grid (configs (1,1), (1,2), (2,1), (2,2)), equal latencies. Config 0 is never optimal
    but always 0.01 short of the best (0.59 vs 0.6); the optimum is config 1 on 36% of the requests, config 2 on 34%
    and config 3 on 30%, where every other config scores 0. So the best mean reward is config 0's, the most frequent
    label is config 1 and the most frequent level of each knob is level 2 (0.64 / 0.66), i.e. config 3: each rule
    picks its own config, and the label rules lose to the mean reward by the lab's decision rule."""
    import pytest

    from e5jax.stats import feature_lut, feature_lut_decision
    from e5jax.table import ProfileTable

    R = 100
    best = np.select([np.arange(R) % 50 < 18, np.arange(R) % 50 < 35], [1, 2], 3)
    quality = np.zeros((R, 4))
    quality[:, 0] = 0.59
    quality[np.arange(R), best] = 0.6
    t = ProfileTable(knobs={"vision_tokens": np.array([1, 2]), "top_k": np.array([1, 2]), "active_blocks": np.array([1])},
                     request_ids=np.array([f"r{i}" for i in range(R)]), task_types=np.array(["t"] * R),
                     split=np.where(np.arange(R) < 50, "train", "val"), feature_names=("f0",),
                     features=np.zeros((R, 1)), latency_ms=np.full((R, 4), 10.0), quality=quality,
                     meta={"source": "test"})
    got = {r: np.unique(np.asarray(feature_lut(t, (), rule=r)["val_actions"])).tolist()
           for r in ("mean_reward", "label_mode", "label_mode_factored")}
    assert got == {"mean_reward": [0], "label_mode": [1], "label_mode_factored": [3]}
    for rule in ("label_mode", "label_mode_factored"):
        d = feature_lut_decision(t, (), rule=rule)
        assert d["decision"] == "<" and d["ci"][1] < 0
        assert d["base_value"] == pytest.approx(feature_lut(t, ())["normalized_utility"], abs=1e-6)
    with pytest.raises(ValueError, match="rule must be one of"):
        feature_lut(t, (), rule="vote")
    # experiments/label_rule.py: the same three values, and 36% of train requests hold the modal label (config 1)
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("label_rule", root / "experiments" / "label_rule.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t.save(tmp_path / "t.npz")
    assert mod.main(["--table", str(tmp_path / "t.npz"), "--out", str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())["tables"][str(tmp_path / "t.npz")]
    assert rep["label_consistency_per_budget"] == pytest.approx([0.36] * 5)
    assert list(rep["keys"]) == ["task"]  # f0 is constant: no feature keys
    assert rep["keys"]["task"]["vs_mean_reward"]["label_mode"]["decision"] == "<"
    assert mod.main(["--table", str(tmp_path / "t.npz"), "--bins", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists() and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_oracle_gap_sources_puts_the_gap_where_the_full_model_is_wrong():
    """A quarter of the requests are answered wrongly by the full config (0.1) and better by the degraded one (0.6);
    the rest prefer the full config. The task LUT picks the full config, so the whole gap to the oracle sits in the
    wrong quarter, the oracle's quality there is 0.5 above full's, and a LUT on either bin alone closes its gap."""
    import pytest

    from e5jax.stats import oracle_gap_sources
    from e5jax.table import ProfileTable

    R = 200
    wrong = np.arange(R) % 4 == 1
    quality = np.where(wrong[:, None], [0.6, 0.1], [0.7, 0.9])
    t = ProfileTable(knobs={"vision_tokens": np.array([1, 2]), "top_k": np.array([1]), "active_blocks": np.array([1])},
                     request_ids=np.array([f"r{i}" for i in range(R)]), task_types=np.array(["t"] * R),
                     split=np.where(np.arange(R) % 2 == 0, "val", "train"), feature_names=("f0",),
                     features=np.zeros((R, 1)), latency_ms=np.full((R, 2), 10.0), quality=quality,
                     meta={"source": "test"})
    r = oracle_gap_sources(t)
    lo, hi = r["bins"]
    assert lo["full_quality"] == [0.0, 0.5] and hi["full_quality"] == [0.5, 1.0]
    assert lo["val_requests"] == 0 and hi["val_requests"] == 100  # even indices are val; wrong ones are odd
    t = t.replace(split=np.where(np.arange(R) % 8 < 4, "val", "train"))  # now half of the wrong ones are val
    r = oracle_gap_sources(t)
    lo, hi = r["bins"]
    assert lo["val_requests"] == 25 and hi["val_requests"] == 75
    assert lo["share_of_gap"] == pytest.approx(1.0) and hi["share_of_gap"] == pytest.approx(0.0)
    assert lo["oracle_quality_over_full"] == pytest.approx(0.5) and hi["oracle_quality_over_full"] == pytest.approx(0.0)
    assert lo["task_lut_train"] == pytest.approx(1.0) and hi["task_lut_train"] == pytest.approx(1.0)
    assert r["task_lut_train"] < 0.5  # over both bins the task LUT's one config leaves the wrong quarter's gap open
    s = table_summary(t)  # e5jax validate carries it and prints a line of it
    assert s["oracle_gap_by_full_quality"] == r
    line = [x for x in format_summary(s).splitlines() if "oracle's lead over the train-fitted task LUT" in x]
    assert len(line) == 1 and "100% of it in the 25% of val requests" in line[0] and "+0.500" in line[0]
    assert "a degraded config answering better" in line[0]


def test_latency_leverage_counterfactual_adds_a_knob_linear_cost(tmp_path, capsys):
    """experiments/latency_leverage.py: the added cost is ``share`` of each request's new full-config latency, linear
    in the knob's level; quality is untouched; share 0 is the measured table; the report's share-0 row is
    feature_lut_decision's on the table itself. A share outside [0, 1), an unknown knob or feature: one line, exit 2,
    nothing written."""
    import importlib.util
    import json
    from pathlib import Path

    import pytest

    from e5jax.stats import feature_lut_decision

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("latency_leverage", root / "experiments" / "latency_leverage.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t = _f0_table()  # vision_tokens levels 1, 2; 10 ms everywhere
    assert mod.with_knob_cost(t, "vision_tokens", 0.0) is t
    c = mod.with_knob_cost(t, "vision_tokens", 0.5)
    np.testing.assert_allclose(c.latency_ms, np.broadcast_to([15.0, 20.0], t.latency_ms.shape))  # +10 x 1/2, +10 x 2/2
    np.testing.assert_array_equal(c.quality, t.quality)
    added_share = (c.latency_ms - t.latency_ms)[:, c.full_config] / c.latency_ms[:, c.full_config]
    np.testing.assert_allclose(added_share, 0.5)
    assert mod.leverage(t, "vision_tokens") == pytest.approx(1.0) and mod.leverage(c, "vision_tokens") == pytest.approx(0.75)
    t.save(tmp_path / "t.npz")
    out = tmp_path / "r.json"
    assert mod.main(["--table", str(tmp_path / "t.npz"), "--feature", "f0", "--share", "0", "0.5",
                     "--max-columns", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    d = feature_lut_decision(t, ("f0",))
    assert rows[0]["named_in_advance"]["diff"] == pytest.approx(d["diff"]) and rows[0]["named_in_advance"]["decision"] == ">"
    assert rows[0]["tuning_split"]["chosen"] == ["f0"] and rows[1]["knob_leverage"] == pytest.approx(0.75)
    # no feature varies (a legitimate workload): nothing is chosen on the tuning split, the rest is reported
    flat = t.replace(features=np.zeros_like(t.features))
    flat.save(tmp_path / "flat.npz")
    assert mod.main(["--table", str(tmp_path / "flat.npz"), "--feature", "f0", "--share", "0", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["chosen_on_tuning_split"] is None and row["tuning_split"]["chosen"] is None
    assert row["named_in_advance"]["diff"] == pytest.approx(0.0, abs=1e-9)
    # --output-mix: output lengths from the list, latency from the table's stage model (1 ms per vision token and per
    # prompt token, 1 ms per decode step after the first): P + 2v + (O - 1) ms
    model = {"vision_p50_ms": {"1": 1.0, "2": 2.0}, "axes": {"active_blocks": [1], "top_k": [1]},
             "prefill_tokens": [1, 100], "prefill_p50_ms": [[[1.0]], [[100.0]]], "decode_kv_lengths": [1, 100],
             "decode_step_p50_ms": [[[1.0]], [[1.0]]]}
    tm = t.replace(feature_names=("prompt_tokens", "expected_output_tokens"),
                   features=np.column_stack([np.full(t.num_requests, 5.0), np.full(t.num_requests, 2.0)]),
                   meta={"source": "test", "latency": {"model": model}})
    mixed = mod.with_output_mix(tm, [2, 9])
    o = mixed.features[:, 1]
    assert set(np.unique(o)) == {2.0, 9.0} and mixed.meta["counterfactual"]["output_mix"] == [2, 9]
    np.testing.assert_allclose(mixed.latency_ms, 5 + 2 * np.array([1.0, 2.0])[None, :] + (o[:, None] - 1))
    capsys.readouterr()
    for extra in (["--share", "1"], ["--knob", "nope"], ["--feature", "nope"], ["--output-mix", "2", "8"]):
        bad = tmp_path / "bad.json"
        assert mod.main(["--table", str(tmp_path / "t.npz"), "--feature", "f0", *extra, "--out", str(bad)]) == 2
        assert not bad.exists() and len(capsys.readouterr().err.strip().splitlines()) == 1
