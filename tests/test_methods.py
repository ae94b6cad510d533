"""Methods through the engine: env-step accounting, seed independence/reproducibility, and learning."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e5jax import engine
from e5jax import env as E
from e5jax.methods import METHODS
from e5jax.methods import common as C
from e5jax.stats import task_budget_lut_actions

LEARNED = ("supervised", "ppo", "dpo", "grpo")


def _norm_utility(env, eval_metrics):
    refs = E.evaluate_references(env)
    u = np.asarray(eval_metrics["utility"])
    return np.mean((u - np.asarray(refs["random"]["utility"])) / (np.asarray(refs["oracle"]["utility"]) - np.asarray(refs["random"]["utility"])), -1)


@pytest.mark.parametrize("name", list(METHODS))
def test_env_steps_per_update_match_accounting(known_table, name):
    env = E.make_env_params(known_table)
    m = METHODS[name]
    cfg = m.Config(env_steps_per_update=64)
    state = m.init(jax.random.PRNGKey(0), env, cfg)
    upd = jax.jit(lambda s, k: m.update(s, env, k))
    steps = []
    for i in range(8):
        state, met = upd(state, jax.random.PRNGKey(i + 1))
        steps.append(float(met["env_steps"]))
        for k in ("train_utility", "loss", "grad_norm", "entropy", "kl_ref", "num_failed_updates"):
            assert k in met, k
    if name in ("supervised", "knn_lut"):  # both pay C env steps per newly profiled/labelled request
        C, Rt = env.num_configs, env.train_idx.shape[0]
        per = (64 // C) * C
        assert steps[0] == per == m.steps_per_update(cfg, env)
        assert sum(steps) == min(8 * per, Rt * C)  # every train request labelled at most once
        assert float(met["labelled_requests"]) == min(8 * (64 // C), Rt)
    else:
        assert steps == [m.steps_per_update(cfg, env)] * 8
        assert steps[0] == 64


def test_supervised_stops_paying_once_every_train_request_is_labelled(known_table):
    env = E.make_env_params(known_table)
    m = METHODS["supervised"]
    cfg = m.Config(env_steps_per_update=256)  # 21 labels per update, 90 train requests
    state = m.init(jax.random.PRNGKey(0), env, cfg)
    upd = jax.jit(lambda s, k: m.update(s, env, k))
    total = 0.0
    for i in range(7):
        state, met = upd(state, jax.random.PRNGKey(i))
        total += float(met["env_steps"])
    assert total == env.train_idx.shape[0] * env.num_configs
    assert float(met["env_steps"]) == 0.0
    labelled = np.asarray(state.extra.order)
    assert sorted(labelled.tolist()) == sorted(np.asarray(env.train_idx).tolist())


@pytest.mark.parametrize("name", ["grpo", "lut"])
def test_vmapped_seeds_independent_and_reproducible(known_table, name):
    env = E.make_env_params(known_table)
    m = METHODS[name]
    tr = engine.make_train(m, m.Config(env_steps_per_update=64), eval_every=3)
    k = jax.random.split(jax.random.PRNGKey(0), 2)
    keys = jnp.stack([k[0], k[1], k[0]])
    st = tr.init(keys, env)
    st, met = tr.chunk(st, keys, env)
    leaves = jax.tree_util.tree_leaves(st)
    same = all(np.array_equal(np.asarray(x[0]), np.asarray(x[2])) for x in leaves)
    diff = any(not np.array_equal(np.asarray(x[0]), np.asarray(x[1])) for x in leaves if x.ndim > 1)
    assert same and diff
    tu = np.asarray(met["train"]["train_utility"])
    assert tu[0] == tu[2] and tu[0] != tu[1]
    # seed keys depend only on (base seed, index): adding seeds leaves the first ones unchanged
    np.testing.assert_array_equal(np.asarray(engine.seed_keys(0, 2)), np.asarray(engine.seed_keys(0, 5))[:2])


def test_same_initial_policy_for_every_learned_method(known_table):
    env = E.make_env_params(known_table)
    key = jax.random.PRNGKey(3)
    pols = [METHODS[n].policy(METHODS[n].init(key, env, METHODS[n].Config())) for n in LEARNED]
    for p in pols[1:]:
        jax.tree_util.tree_map(np.testing.assert_array_equal, pols[0].params, p.params)


@pytest.mark.parametrize("name", LEARNED)
def test_learned_method_closes_the_gap(known_table, name):
    """Every learned method closes >= 90% of the oracle gap on a table whose oracle is learnable (seeded)."""
    env = E.make_env_params(known_table)
    m = METHODS[name]
    tr = engine.make_train(m, m.Config(), eval_every=25)
    keys = engine.seed_keys(0, 2)
    st = tr.init(keys, env)
    nu0 = _norm_utility(env, jax.device_get(tr.evaluate(st, env)))
    for c in range(8):  # 200 updates x 256 = 51,200 env steps
        st, met = tr.chunk(st, engine.chunk_keys(keys, c), env)
    nu = _norm_utility(env, met["eval"])
    assert np.all(nu >= 0.9), (name, nu0, nu)
    assert np.all(nu > nu0 + 0.1), (name, nu0, nu)  # it learned: the initial policy was far from it
    assert float(np.max(met["train"]["num_failed_updates"])) == 0.0


def test_task_lut_cannot_solve_the_known_table_but_lut_method_matches_it(known_table):
    env = E.make_env_params(known_table)
    lut_perfect = _norm_utility(env, E.evaluate_actions(env, task_budget_lut_actions(env)))
    assert lut_perfect < 0.9  # the oracle depends on a feature the LUT does not see
    m = METHODS["lut"]
    tr = engine.make_train(m, m.Config(), eval_every=20)
    keys = engine.seed_keys(0, 2)
    st = tr.init(keys, env)
    st, met = tr.chunk(st, keys, env)
    nu = _norm_utility(env, met["eval"])
    assert np.all(nu <= lut_perfect + 0.05)
    assert np.all(nu >= lut_perfect - 0.15)


def test_chunk_eval_trains_identically_and_evaluates_at_masked_updates(known_table):
    """The run's program: same updates as ``chunk`` (same keys), plus evaluations after the masked updates."""
    env = E.make_env_params(known_table)
    m = METHODS["grpo"]
    tr = engine.make_train(m, m.Config(env_steps_per_update=64), eval_every=4)
    keys = engine.seed_keys(0, 2)
    st0 = tr.init(keys, env)
    mask = engine.early_eval_mask(4, first_chunk=True)
    assert mask.tolist() == [True, True, False, True]  # after updates 1, 2 (doubling) and the chunk's last
    assert engine.early_eval_mask(40, first_chunk=True).nonzero()[0].tolist() == [0, 1, 3, 7, 15, 31, 39]
    assert engine.early_eval_mask(4, first_chunk=False).tolist() == [False, False, False, True]
    st_a, met_a = tr.chunk(st0, keys, env)
    st_b, met_b = tr.chunk_eval(st0, keys, env, mask)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7),
                           st_a, st_b)
    ev = np.asarray(met_b["eval_points"]["utility"])  # [S, U, B]
    assert ev.shape[:2] == (2, 4)
    assert np.isnan(ev[:, 2]).all() and np.isfinite(ev[:, [0, 1, 3]]).all()
    np.testing.assert_allclose(ev[:, 3], np.asarray(met_a["eval"]["utility"]), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(met_b["env_steps_per_update"]), np.full((2, 4), 64))
    # the same compiled program serves another mask (no recompilation)
    tr.chunk_eval(st0, keys, env, engine.early_eval_mask(4, first_chunk=False))
    assert tr.chunk_eval._cache_size() == 1


def test_autoregressive_head_is_a_normalized_joint_distribution(known_table):
    """The AR head's C outputs are log-probs summing to one; they equal the chain rule of its conditionals; its
    greedy config is the exact joint argmax (checked by brute force against the conditionals)."""
    from e5jax import policy as P

    env = E.make_env_params(known_table)
    sizes = tuple(env.knob_sizes)
    net = P.MLP((16, 8), (env.num_configs,), ar=sizes, head_scale=1.0)  # large init: far from uniform
    obs = E.observe(env, env.val_idx[:6], jnp.full((6,), 0.5))
    params = net.init(jax.random.PRNGKey(4), obs)
    (lp,) = net.apply(params, obs)
    np.testing.assert_allclose(np.exp(np.asarray(lp)).sum(-1), 1.0, rtol=1e-5)
    # chain rule by hand: p(a1) from knob_0, p(a_j | prefix) from cond_j/knob_j on [h, one-hot prefix]
    p = params["params"]
    h = np.asarray(obs)
    for i in range(2):
        d = p[f"Dense_{i}"]
        h = np.maximum(h @ np.asarray(d["kernel"]) + np.asarray(d["bias"]), 0)
    ar = {k: (np.asarray(v["kernel"]), np.asarray(v["bias"])) for k, v in p["ARHead_0"].items()}
    from scipy.special import log_softmax

    ls = lambda z: log_softmax(z, axis=-1)  # noqa: E731
    for c in range(env.num_configs):
        a = np.unravel_index(c, sizes)
        total = ls(h @ ar["knob_0"][0] + ar["knob_0"][1])[:, a[0]]
        code = np.eye(sizes[0])[a[0]]
        for j in range(1, len(sizes)):
            x = np.concatenate([h, np.broadcast_to(code, (h.shape[0], code.size))], 1)
            z = np.maximum(x @ ar[f"cond_{j}"][0] + ar[f"cond_{j}"][1], 0) @ ar[f"knob_{j}"][0] + ar[f"knob_{j}"][1]
            total = total + ls(z)[:, a[j]]
            code = np.concatenate([code, np.eye(sizes[j])[a[j]]])
        np.testing.assert_allclose(np.asarray(lp)[:, c], total, rtol=1e-4, atol=1e-5)
    pol = P.MLPPolicy(params, (16, 8), (env.num_configs,), ar=sizes)
    g = pol.greedy(env, env.val_idx[:6], jnp.full((6,), 0.5), jnp.zeros((6,), jnp.int32))
    np.testing.assert_array_equal(np.asarray(g), np.argmax(np.asarray(lp), -1))
    assert len(set(np.argmax(np.asarray(lp), -1).tolist())) >= 1


@pytest.mark.parametrize("name", LEARNED)
def test_every_learned_method_trains_with_an_autoregressive_head(known_table, name):
    env = E.make_env_params(known_table)
    m = METHODS[name]
    tr = engine.make_train(m, m.Config(head="autoregressive", env_steps_per_update=64), eval_every=2)
    keys = engine.seed_keys(0, 2)
    st, met = tr.chunk(tr.init(keys, env), keys, env)
    assert np.all(np.isfinite(np.asarray(met["eval"]["utility"])))
    assert float(np.max(met["train"]["num_failed_updates"])) == 0.0


@pytest.mark.parametrize("k", [1, 5])
def test_knn_lut_finds_the_oracle_on_a_table_where_the_answer_is_known(known_table, k):
    """The known table's oracle depends on a feature (modality); same-modality requests have identical normalized
    latency and quality, so the nearest profiled neighbours' best config is the request's own oracle config."""
    env = E.make_env_params(known_table)
    m = METHODS["knn_lut"]
    cfg = m.Config(k=k)
    assert m.steps_per_update(cfg, env) == (256 // 12) * 12
    tr = engine.make_train(m, cfg, eval_every=5)
    keys = engine.seed_keys(0, 2)
    st = tr.init(keys, env)
    # nothing profiled: the full config everywhere
    pol = m.policy(jax.tree_util.tree_map(lambda x: x[0], st))
    req, budget = E.eval_grid(env)
    assert np.all(np.asarray(pol.greedy(env, req, budget, None)) == env.num_configs - 1)
    st, met = tr.chunk(st, keys, env)  # 5 x 21 = 105 > 90 train requests: all profiled
    assert np.all(np.asarray(met["train"]["labelled_requests"]) == env.train_idx.shape[0])
    nu = _norm_utility(env, met["eval"])
    np.testing.assert_allclose(nu, 1.0, atol=1e-6)
    assert _norm_utility(env, E.evaluate_actions(env, task_budget_lut_actions(env))) < 0.9  # a task LUT cannot


class _GridBlind:
    """A controller that only has the per-request ``greedy``/``probs`` (the path without ``greedy_grid``)."""

    def __init__(self, pol):
        self.greedy, self.probs = pol.greedy, pol.probs


def test_knn_lut_whole_grid_evaluation_equals_the_per_request_path(small_table):
    """engine.evaluate takes KNNPolicy.greedy_grid (neighbours once per val request, shared by the budgets): every
    output equals the per-request greedy/probs path bit for bit, with nothing, part or all of the store profiled."""
    env = E.make_env_params(small_table)
    m = METHODS["knn_lut"]
    tr = engine.make_train(m, m.Config(k=3), eval_every=2)
    keys = engine.seed_keys(0, 1)
    st = jax.tree_util.tree_map(lambda x: x[0], tr.chunk(tr.init(keys, env), keys, env)[0])
    ev = jax.jit(engine.evaluate)
    for n in (0, 1, 5, int(st.n_profiled)):
        pol = m.policy(st.replace(n_profiled=jnp.asarray(n, jnp.int32)))
        a, b = ev(env, pol), jax.jit(lambda env, p: engine.evaluate(env, _GridBlind(p)))(env, pol)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=f"n={n} {key}")
        if n == 0:
            assert np.all(np.asarray(a["actions"]) == env.num_configs - 1)
    assert len(np.unique(np.asarray(a["actions"]))) > 1  # the profiled store decides something


def test_grpo_with_beta_zero_never_evaluates_the_reference(known_table):
    """beta = 0: the reference forward is skipped (identical results, less work): a NaN reference changes nothing."""
    env = E.make_env_params(known_table)
    m = METHODS["grpo"]
    state = m.init(jax.random.PRNGKey(0), env, m.Config(env_steps_per_update=64))
    poisoned = state.replace(ref_params=jax.tree_util.tree_map(lambda x: jnp.full_like(x, jnp.nan), state.ref_params))
    upd = jax.jit(lambda s, k: m.update(s, env, k))
    a, ma = upd(state, jax.random.PRNGKey(1))
    b, mb = upd(poisoned, jax.random.PRNGKey(1))
    jax.tree_util.tree_map(np.testing.assert_array_equal, a.params, b.params)
    assert float(mb["num_failed_updates"]) == 0.0
    with_kl = m.init(jax.random.PRNGKey(0), env, m.Config(env_steps_per_update=64, beta=0.04))
    c, mc = upd(with_kl.replace(ref_params=poisoned.ref_params), jax.random.PRNGKey(1))
    # with beta > 0 the (poisoned) reference is used: every gradient step is non-finite, skipped and counted,
    # and the parameters stay where they were (finite)
    assert float(mc["num_failed_updates"]) == with_kl.cfg.epochs * with_kl.cfg.minibatches
    jax.tree_util.tree_map(np.testing.assert_array_equal, c.params, with_kl.params)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(c.params))


def test_grpo_beta_zero_path_equals_beta_to_zero(known_table):
    """The static beta = 0 path (no reference forward) equals the path with the KL term and beta -> 0."""
    env = E.make_env_params(known_table)
    m = METHODS["grpo"]
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    out = {}
    for tag, cfg, hp in (("skip", m.Config(env_steps_per_update=64, beta=0.0), None),
                         ("tiny", m.Config(env_steps_per_update=64, beta=1.0), {"beta": jnp.full(2, 1e-7)})):
        tr = engine.make_train(m, cfg, eval_every=4)
        st, _ = tr.chunk(tr.init(keys, env, hp), keys, env)
        out[tag] = jax.tree_util.tree_leaves(st.params)
    for a, b in zip(out["skip"], out["tiny"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    assert max(float(jnp.abs(a).max()) for a in out["skip"]) > 0


@pytest.mark.parametrize("name", ["ppo", "dpo"])
def test_traced_hyperparameter_rows_equal_separate_configs(known_table, name):
    """Rows with overridden traced hyperparameters (one compile) train exactly as separate static configs."""
    env = E.make_env_params(known_table)
    m = METHODS[name]
    key = jax.random.PRNGKey(5)
    settings = {"ppo": [{"lr": 1e-3, "clip_eps": 0.1}, {"lr": 3e-4, "clip_eps": 0.3}],
                "dpo": [{"lr": 1e-3, "beta": 0.5}, {"lr": 3e-4, "beta": 0.05}]}[name]
    base = m.Config(env_steps_per_update=64)
    tr = engine.make_train(m, base, eval_every=3)
    hp = {k: jnp.asarray([s[k] for s in settings], jnp.float32) for k in settings[0]}
    keys = jnp.stack([key, key])
    rows, _ = tr.chunk(tr.init(keys, env, hp), keys, env)
    for i, s in enumerate(settings):
        tr1 = engine.make_train(m, dataclasses.replace(base, **s), eval_every=3)
        # as many rows (the same program shape: XLA:CPU's vectorization, and so float rounding, depends on the
        # row count, and PPO amplifies a last-bit difference within a few updates)
        one, _ = tr1.chunk(tr1.init(keys, env), keys, env)
        for a, b in zip(jax.tree_util.tree_leaves(rows.params), jax.tree_util.tree_leaves(one.params)):
            np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b)[i], rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(jax.tree_util.tree_leaves(rows.params)[0][0]),
                           np.asarray(jax.tree_util.tree_leaves(rows.params)[0][1]))  # the settings differ


def test_lam_rows_match_envs_with_that_lam(known_table):
    """A row's lam (an env override, engine row_env) trains and evaluates exactly as an env built with that lam."""
    m = METHODS["lut"]
    cfg = m.Config(env_steps_per_update=64)
    env = E.make_env_params(known_table, lam=2.0)
    tr = engine.make_train(m, cfg, eval_every=3)
    keys = jnp.stack([jax.random.PRNGKey(1)] * 2)
    _, met = tr.chunk(tr.init(keys, env), keys, env, {"lam": jnp.asarray([0.5, 8.0], jnp.float32)})
    for i, lam in enumerate((0.5, 8.0)):
        env_l = E.make_env_params(known_table, lam=lam)
        _, ml = tr.chunk(tr.init(keys[:1], env_l), keys[:1], env_l)
        np.testing.assert_allclose(np.asarray(met["eval"]["utility"])[i], np.asarray(ml["eval"]["utility"])[0], rtol=1e-6)
    with pytest.raises(ValueError, match="not a traced hyperparameter"):
        tr.init(keys, env, {"clip_eps": jnp.ones(2)})
    with pytest.raises(ValueError, match="not a traced hyperparameter"):  # lam is the env's, never the method's
        tr.init(keys, env, {"lam": jnp.ones(2)})


@pytest.mark.parametrize("name", ["supervised", "ppo", "dpo", "grpo"])
def test_row_by_row_init_equals_the_vmapped_init(known_table, name):
    """On the CPU the engine initialises rows one at a time (engine.map_rows: lax.map, docs/hangs.md), the initial
    policy from the program the learned methods share (common.policy_params_for_rows); the states are each
    method's own vmapped init, bit for bit, with and without traced hyperparameters."""
    env = E.make_env_params(known_table)
    m = METHODS[name]
    cfg = m.Config(env_steps_per_update=64)
    tr = engine.make_train(m, cfg, eval_every=2)
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    vmapped = jax.jit(jax.vmap(lambda k, h: engine.with_hp(m.init(k, env, cfg), h)))
    for hp in (None, {"lr": jnp.linspace(1e-4, 1e-3, 5)}):
        a, b = tr.init(keys, env, hp), vmapped(keys, hp)
        assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_permutation_is_jax_random_permutation_without_the_sort():
    """The minibatch shuffle (common.permutation) draws the same permutation as jax.random.permutation for every
    key and size, both on the rank path (n <= RANK_PERMUTATION_MAX) and past it; ties among the sort keys go by
    index, as in jax's stable sort."""
    sizes = [1, 2, 5, 256, C.RANK_PERMUTATION_MAX, C.RANK_PERMUTATION_MAX + 1]
    for n in sizes:
        keys = jax.random.split(jax.random.PRNGKey(n), 8)
        ours = jax.vmap(lambda k: C.permutation(k, n))(keys)
        ref = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref), err_msg=f"n={n}")
    bits = np.random.default_rng(0).integers(0, 7, size=300).astype(np.uint32)  # many ties
    np.testing.assert_array_equal(np.asarray(C.permutation_from_sort_keys(jnp.asarray(bits))),
                                  np.argsort(bits, kind="stable"))


def test_supervised_labels_come_from_the_latencies_its_profiling_calls_measured(known_table):
    """With latency_noise on, a labelled request's C profiling calls draw the env's own noise once; its optimal sets
    at every budget come from those measured latencies, not from the table means. With noise off they are the
    mean oracle's sets."""
    m = METHODS["supervised"]
    cfg = m.Config(env_steps_per_update=64)  # 5 labelled requests per update (C = 12)
    table = known_table.replace(latency_std_ms=0.3 * known_table.latency_ms)
    k_init, k1, k2 = jax.random.split(jax.random.PRNGKey(0), 3)
    for noise in (False, True):
        env = E.make_env_params(table, latency_noise=noise)
        state = m.init(k_init, env, cfg)
        batch = jax.jit(lambda s, k: m.collect(s, env, k))(state, k1)
        n = int(batch.n_after)
        order = np.asarray(state.extra.order)[:n]
        stored = np.asarray(batch.latency)[:n]
        req, budget, optimal = (np.asarray(getattr(batch, k)) for k in ("req", "budget", "optimal"))
        mean_sets = np.asarray(E.oracle_set(env, jnp.asarray(req), jnp.asarray(budget)))
        if not noise:
            np.testing.assert_array_equal(stored, np.asarray(env.latency_norm)[order])
            np.testing.assert_array_equal(optimal, mean_sets)
            continue
        _, want = E.lookup(env, jnp.asarray(order)[:, None], jnp.arange(env.num_configs)[None, :],
                           jax.random.split(k1, 3)[2])  # the env's noise, with the key collect profiles with
        np.testing.assert_allclose(stored, np.asarray(want), rtol=1e-6)  # jit vs eager: float32 rounding apart
        assert not np.allclose(stored, np.asarray(env.latency_norm)[order])
        row = {int(r): i for i, r in enumerate(order)}
        lat = stored[[row[int(r)] for r in req]]
        r = np.asarray(env.quality)[req] - 2.0 * np.maximum(0.0, lat - budget[:, None])
        np.testing.assert_array_equal(optimal, r >= r.max(-1, keepdims=True) - E.ORACLE_TOL)
        assert (optimal != mean_sets).any()  # the noisy labels differ from the mean oracle's
        # each request is measured once: a later update leaves its row as it was
        upd = jax.jit(lambda s, k: m.update(s, env, k))
        state, _ = upd(state, k1)
        np.testing.assert_array_equal(np.asarray(state.extra.latency)[:n], stored)
        state, _ = upd(state, k2)
        assert int(state.extra.n_labelled) == 2 * n
        np.testing.assert_array_equal(np.asarray(state.extra.latency)[:n], stored)


def test_supervised_label_accuracy_counts_any_optimal_config(known_table):
    """On a table where every config is optimal for every request, any greedy choice is a correct label."""
    flat = known_table.replace(quality=np.full_like(known_table.quality, 0.5),
                               latency_ms=np.broadcast_to(known_table.latency_ms[:, -1:], known_table.latency_ms.shape).copy())
    env = E.make_env_params(flat)
    m = METHODS["supervised"]
    state = m.init(jax.random.PRNGKey(0), env, m.Config(env_steps_per_update=64))
    state, met = jax.jit(lambda s, k: m.update(s, env, k))(state, jax.random.PRNGKey(1))
    assert float(met["label_accuracy"]) == 1.0
    assert float(met["loss"]) == pytest.approx(0.0, abs=1e-5)  # the optimal set holds all the probability


def test_supervised_label_tol_widens_the_labelled_set(known_table):
    """supervised's traced ``label_tol``: a config is labelled optimal when its reward is within max(env.oracle_tol,
    label_tol) of the best. 0 (the default) gives exactly the env's optimal sets; 0.05 a strict superset of them,
    equal to the sets at that tolerance. Out-of-range values are refused by the config check."""
    from e5jax.methods import supervised as SV

    env = E.make_env_params(known_table)
    m = METHODS["supervised"]
    key = jax.random.PRNGKey(0)
    sets = {}
    for tol in (0.0, 0.05):
        st = m.init(key, env, m.Config(env_steps_per_update=120, label_tol=tol))
        n_after, lat = SV.label_next(st, env, key)
        st = st.replace(extra=st.extra.replace(n_labelled=n_after, latency=lat))
        pos = jnp.arange(int(n_after))
        budget = jnp.full(pos.shape, 0.5)
        got = np.asarray(SV.labels(env, st, pos, budget))
        rewards = E.reward_from(env, env.quality[st.extra.order[pos]], lat[pos], budget[:, None])
        np.testing.assert_array_equal(got, np.asarray(E.optimal_set(rewards, max(tol, float(env.oracle_tol)))))
        sets[tol] = got
    assert sets[0.0].shape[0] == 10 and (sets[0.0] <= sets[0.05]).all() and sets[0.05].sum() > sets[0.0].sum()
    assert C.check_config(m, m.Config(label_tol=-0.1)) == "label_tol must be >= 0, got -0.1"
    assert C.check_config(m, m.Config(lr=0.0)) == "lr must be > 0, got 0.0"
    assert C.check_config(m, m.Config(lr=float("nan"))).startswith("lr must be > 0")
