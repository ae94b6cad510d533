"""The helpers several modules share: normalized utility, feature standardization, env from a run config, and
parameter counts (one function each; every former copy calls it)."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e5jax import analysis as A
from e5jax import env as E
from e5jax import export as X
from e5jax import policy as P
from e5jax.config import load_config


def test_normalized_utility_maps_random_to_0_and_oracle_to_1():
    u_r, u_o = np.array([0.2, -0.5]), np.array([0.6, 0.5])
    np.testing.assert_allclose(A.normalized_utility(u_r, u_r, u_o), [0.0, 0.0])
    np.testing.assert_allclose(A.normalized_utility(u_o, u_r, u_o), [1.0, 1.0])
    np.testing.assert_allclose(A.normalized_utility(np.array([0.5, 0.0]), u_r, u_o), [0.75, 0.5])
    np.testing.assert_allclose(A.normalized_utility(np.array([[0.2, -1.0]]), u_r, u_o), [[0.0, -0.5]])  # broadcasts
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no gap to close (0, or float32 rounding): NaN, never a warning
        z = A.normalized_utility(np.array([0.1, 0.3, 0.3]), np.array([0.3, 0.3, 0.3]), np.array([0.3, 0.3, 0.3000002]))
        assert np.isnan(z).all()
        # the mean over budgets leaves such a budget out (a constant-quality table at b = 1)
        assert A.mean_over_budgets(np.array([[1.0, 0.5, np.nan]])) == pytest.approx([0.75])
        assert np.isnan(A.mean_over_budgets(np.array([np.nan, np.nan])))
    assert float(A.normalized_utility(jnp.float32(0.4), 0.2, 0.6)) == np.float32(0.5)  # JAX arrays too


def test_feature_standardization_is_the_train_split_statistics(small_table):
    t = small_table
    t.features[:, 0] = 3.0  # a constant column: std 0 -> 1
    mu, sd = E.feature_standardization(t)
    train = t.features[t.split == "train"]
    np.testing.assert_allclose(mu, train.mean(0))
    np.testing.assert_allclose(sd[1:], train.std(0)[1:])
    assert sd[0] == 1.0
    env = E.make_env_params(t)
    np.testing.assert_allclose(np.asarray(env.features), (t.features - mu) / sd, rtol=1e-6, atol=1e-6)
    spec = X.observation_spec(t, env)
    np.testing.assert_array_equal(spec["feature_mean"], mu)
    np.testing.assert_array_equal(spec["feature_std"], sd)


def test_env_from_run_uses_lam_budgets_and_latency_noise(small_table):
    run, _ = load_config(None)
    run = dataclasses.replace(run, lam=3.5, budgets=(0.5, 1.0), latency_noise=True)
    env = E.env_from_run(run, small_table)
    assert float(env.lam) == 3.5 and float(env.latency_noise) == 1.0
    np.testing.assert_allclose(np.asarray(env.budgets), [0.5, 1.0])
    np.testing.assert_allclose(np.asarray(env.train_budgets), [0.5, 1.0])


def test_count_params_with_and_without_a_seed_axis():
    params = {"a": np.zeros((3, 4)), "b": [np.zeros(4), (np.zeros((2, 5)),)]}
    assert P.count_params(params) == 12 + 4 + 10
    stacked = jax.tree_util.tree_map(lambda x: np.stack([x] * 7), params)
    assert P.count_params(stacked, batch_dims=1) == 26
    assert P.count_params(stacked) == 7 * 26
