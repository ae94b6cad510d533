"""DPO's preference pairs: ``ranks`` pairs every sample of a group once (rank i vs rank G-1-i), so an update's N
samples fill its minibatches as in PPO and GRPO; ``best_worst`` is the one best-vs-worst pair per group."""

import jax
import jax.numpy as jnp
import numpy as np

from e5jax import env as E
from e5jax.methods import dpo


def test_rank_pairs_are_disjoint_and_ordered():
    r = jnp.asarray([[0.1, 0.9, 0.5, 0.3], [1.0, 1.0, 1.0, 1.0]])
    win, lose = dpo.pair_indices(r, "ranks")
    np.testing.assert_array_equal(win, [[1, 2], [0, 1]])  # best, 2nd best; ties in index order
    np.testing.assert_array_equal(lose, [[0, 3], [3, 2]])  # worst, 2nd worst
    rng = np.random.default_rng(0)
    r = jnp.asarray(rng.integers(0, 3, (50, 8)).astype(np.float32))  # many ties
    win, lose = map(np.asarray, dpo.pair_indices(r, "ranks"))
    for row, w, l in zip(np.asarray(r), win, lose):
        assert sorted(np.concatenate([w, l]).tolist()) == list(range(8))  # every sample in exactly one pair
        assert np.all(row[w] >= row[l]) and row[w[0]] == row.max() and row[l[0]] == row.min()
    bw, bl = dpo.pair_indices(r, "best_worst")
    np.testing.assert_array_equal(bw[:, 0], jnp.argmax(r, -1))
    np.testing.assert_array_equal(bl[:, 0], jnp.argmin(r, -1))


def test_an_update_holds_all_its_samples_in_pairs(known_table):
    env = E.make_env_params(known_table, lam=2.0)
    for pairing, pairs in (("ranks", 32), ("best_worst", 8)):  # 64 env steps = 8 groups of G = 8
        cfg = dpo.Config(env_steps_per_update=64, group_size=8, pairing=pairing, minibatches=4)
        st = dpo.METHOD.init(jax.random.PRNGKey(0), env, cfg)
        batch = dpo.METHOD.collect(st, env, jax.random.PRNGKey(1))
        assert batch.pairs.obs.shape[0] == batch.pairs.win.shape[0] == batch.pairs.valid.shape[0] == pairs
        assert batch.group_obs.shape[0] == 8
        new, m = dpo.METHOD.learn(st, env, batch, jax.random.PRNGKey(2))
        assert np.isfinite(float(m["loss"])) and int(new.step) == 1
