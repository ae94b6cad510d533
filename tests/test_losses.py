"""Every loss against its closed form (REFERENCES.md), with gradients, not only values."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from e5jax import policy as P
from e5jax.methods import common as C
from e5jax.methods import dpo, grpo, ppo, supervised


# ----------------------------------------------------------------------------- DPO
@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("h", [-2.0, 0.0, 0.7])
def test_dpo_gradient_identity(beta, h):
    # h = (lw - ref_w) - (ll - ref_l); d loss / d log pi(w) = -beta sigma(-beta h) = - d loss / d log pi(l)
    def loss(lw, ll):
        return dpo.dpo_loss((lw - 0.3) - (ll + 0.2), beta, "sigmoid")

    lw, ll = jnp.float32(h + 0.5), jnp.float32(0.0)
    hh = (lw - 0.3) - (ll + 0.2)
    gw, gl = jax.grad(loss, argnums=(0, 1))(lw, ll)
    expected = -beta * jax.nn.sigmoid(-beta * hh)
    np.testing.assert_allclose(gw, expected, rtol=1e-5)
    np.testing.assert_allclose(gl, -expected, rtol=1e-5)
    np.testing.assert_allclose(loss(lw, ll), -np.log(1 / (1 + np.exp(-beta * hh))), rtol=1e-5)


def test_dpo_ipo_and_label_smoothing_closed_forms():
    beta, h, eps = 0.2, jnp.float32(1.3), 0.1
    np.testing.assert_allclose(dpo.dpo_loss(h, beta, "ipo"), (1.3 - 1 / (2 * beta)) ** 2, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(lambda x: dpo.dpo_loss(x, beta, "ipo"))(h), 2 * (1.3 - 2.5), rtol=1e-5)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    want = -(1 - eps) * np.log(sig(beta * 1.3)) - eps * np.log(sig(-beta * 1.3))
    np.testing.assert_allclose(dpo.dpo_loss(h, beta, "sigmoid", eps), want, rtol=1e-5)
    with pytest.raises(ValueError):
        dpo.dpo_loss(h, beta, "hinge-ish")


# ----------------------------------------------------------------------------- GRPO
def test_grpo_group_advantages_closed_form():
    r = jnp.array([[1.0, 2.0, 3.0, 6.0], [0.5, 0.5, 0.5, 0.5], [0.0, 1e-6, 0.0, 0.0]])
    adv, zero = grpo.group_advantages(r, "group", std_floor=1e-3)
    chex.assert_shape(adv, (3, 4))
    a0 = (np.array([1, 2, 3, 6.0]) - 3) / np.std([1, 2, 3, 6.0], ddof=1)  # Bessel-corrected, as TRL
    np.testing.assert_allclose(adv[0], a0, rtol=1e-5)
    np.testing.assert_array_equal(adv[1], 0.0)  # zero-spread group: no signal, no NaN
    np.testing.assert_allclose(zero, 1 / 3)
    # std floor: tiny spread cannot blow the advantage up (unfloored it would be ~1.5)
    assert np.all(np.abs(adv[2]) <= 1e-6 / 1e-3 + 1e-6)
    np.testing.assert_allclose(adv[2], (np.array([0, 1e-6, 0, 0]) - 0.25e-6) / 1e-3, rtol=1e-3)
    adv_b, _ = grpo.group_advantages(r, "batch")
    np.testing.assert_allclose(adv_b[0], (np.array([1, 2, 3, 6.0]) - 3) / np.std(np.asarray(r), ddof=1), rtol=1e-5)
    adv_n, _ = grpo.group_advantages(r, "none")
    np.testing.assert_allclose(adv_n, np.asarray(r) - np.asarray(r).mean(-1, keepdims=True), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError):
        grpo.group_advantages(r, "median")


def test_rloo_identity():
    r = np.random.default_rng(0).normal(size=(5, 8))
    G = r.shape[1]
    loo = np.stack([r[:, i] - np.delete(r, i, axis=1).mean(1) for i in range(G)], 1)
    adv_none, _ = grpo.group_advantages(jnp.asarray(r), "none")
    np.testing.assert_allclose(loo, G / (G - 1) * np.asarray(adv_none), rtol=1e-5, atol=1e-6)


def test_grpo_loss_zero_value_nonzero_gradient():
    # rho = 1 and beta = 0: loss ~ -mean(A) = 0 for centred advantages, but the gradient is -A d logp
    logits = (jnp.array([[0.1, 0.2, -0.3]] * 4),)
    actions = jnp.array([0, 1, 2, 1])
    adv = jnp.array([1.0, -0.5, 0.25, -0.75])

    def loss(z):
        logp = P.log_prob(z, actions, (3,))
        return grpo.grpo_loss(logp, jax.lax.stop_gradient(logp), adv, jnp.zeros(4), 0.2, 0.0)[0]

    assert abs(float(loss(logits))) < 1e-6
    g = jax.grad(loss)(logits)[0]
    assert float(jnp.abs(g).sum()) > 1e-3
    # closed form: d/dz of -mean(A * logp)
    want = jax.grad(lambda z: -jnp.mean(adv * P.log_prob(z, actions, (3,))))(logits)[0]
    np.testing.assert_allclose(g, want, rtol=1e-5)


# ----------------------------------------------------------------------------- PPO
@pytest.mark.parametrize(
    "ratio,adv,has_grad",
    [(1.3, 1.0, False), (1.1, 1.0, True), (0.7, 1.0, True), (0.7, -1.0, False), (0.9, -1.0, True), (1.3, -1.0, True)],
)
def test_ppo_clip_both_sides(ratio, adv, has_grad):
    eps = 0.2
    logp_old = jnp.float32(-1.0)

    def loss(logp):
        return C.clipped_surrogate(logp[None], logp_old[None], jnp.array([adv]), eps)[0].mean()

    logp = logp_old + jnp.log(ratio)
    g = jax.grad(loss)(logp)
    if has_grad:
        np.testing.assert_allclose(g, -adv * ratio, rtol=1e-4)  # d(-A rho)/d logp = -A rho
    else:
        assert float(g) == 0.0
    np.testing.assert_allclose(loss(logp), -min(ratio * adv, np.clip(ratio, 1 - eps, 1 + eps) * adv), rtol=1e-5)


def test_ppo_value_loss_clipped():
    v, v_old, target = jnp.array([2.0]), jnp.array([1.0]), jnp.array([3.0])
    # clipped prediction 1.2 is further from the target: max picks it
    np.testing.assert_allclose(ppo.ppo_value_loss(v, v_old, target, 0.2), 0.5 * (1.2 - 3) ** 2, rtol=1e-6)
    np.testing.assert_allclose(ppo.ppo_value_loss(v, v_old, target, 0.2, clip=False), 0.5 * 1.0, rtol=1e-6)
    g = jax.grad(lambda x: ppo.ppo_value_loss(x, v_old, target, 0.2))(v)
    assert float(g[0]) == 0.0  # the clipped branch has no gradient in v


# ----------------------------------------------------------------------------- policy helpers
def _logits(key, n=6, sizes=(5, 4, 5)):
    ks = jax.random.split(key, len(sizes))
    return tuple(jax.random.normal(k, (n, s)) * 2 for k, s in zip(ks, sizes))


def test_log_prob_probs_greedy_consistent():
    sizes = (5, 4, 5)
    z = _logits(jax.random.PRNGKey(0))
    probs = P.config_probs(z)
    chex.assert_shape(probs, (6, 100))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    all_c = jnp.broadcast_to(jnp.arange(100), (6, 100))
    lp = P.log_prob(jax.tree_util.tree_map(lambda x: x[:, None], z), all_c, sizes)
    np.testing.assert_allclose(jnp.exp(lp), probs, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(P.greedy(z, sizes), jnp.argmax(probs, -1))
    ent = -(probs * jnp.log(probs)).sum(-1)
    np.testing.assert_allclose(P.entropy(z), ent, rtol=1e-4)


def test_inverse_cdf_sampling_matches_probs():
    sizes = (5, 4, 5)
    z = tuple(x[:1] for x in _logits(jax.random.PRNGKey(1), n=1))
    n = 200_000
    zz = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n, x.shape[-1])), z)
    s = P.sample(jax.random.PRNGKey(2), zz, sizes)
    freq = np.bincount(np.asarray(s), minlength=100) / n
    p = np.asarray(P.config_probs(z))[0]
    assert np.abs(freq - p).max() < 4 * np.sqrt(p.max() / n) + 1e-3
    assert freq[p < 1e-6].sum() == 0


def test_exact_kl_equals_expected_k3():
    sizes = (5, 4, 5)
    zp = _logits(jax.random.PRNGKey(3))
    zq = _logits(jax.random.PRNGKey(4))
    p, q = P.config_probs(zp), P.config_probs(zq)
    ratio = q / p
    k3 = (ratio - 1) - jnp.log(ratio)  # Schulman's k3 estimator of KL(p || q), sampled under p
    np.testing.assert_allclose(P.kl(zp, zq), (p * k3).sum(-1), rtol=1e-4)
    np.testing.assert_allclose(P.kl(zp, zq), (p * jnp.log(p / q)).sum(-1), rtol=1e-4)
    np.testing.assert_allclose(P.kl(zp, zp), 0.0, atol=1e-6)


def test_supervised_ce_gradient():
    z = _logits(jax.random.PRNGKey(5), n=3)
    target = jnp.array([0, 57, 99])
    g = jax.grad(lambda zz: supervised.ce_loss(zz, target, (5, 4, 5)))(z)
    heads = jnp.unravel_index(target, (5, 4, 5))
    for gh, zh, th in zip(g, z, heads):
        want = (jax.nn.softmax(zh) - jax.nn.one_hot(th, zh.shape[-1])) / 3  # softmax - onehot, mean over batch
        np.testing.assert_allclose(gh, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("sizes", [(5, 4, 5), (12,)])
def test_supervised_set_loss_is_minus_log_of_the_optimal_sets_probability(sizes):
    """set_loss = -log sum_{c in set} pi(c), against numpy (softmax per head, outer product over heads)."""
    n = 6
    z = _logits(jax.random.PRNGKey(6), n=n, sizes=sizes)
    C = int(np.prod(sizes))
    rng = np.random.default_rng(0)
    optimal = rng.random((n, C)) < 0.3
    optimal[np.arange(n), rng.integers(0, C, n)] = True  # never empty
    optimal[0] = True  # a request whose every config is optimal: loss 0
    probs = np.ones((n, 1))
    for zh in z:
        e = np.exp(np.asarray(zh, np.float64) - np.asarray(zh).max(-1, keepdims=True))
        probs = (probs[:, :, None] * (e / e.sum(-1, keepdims=True))[:, None, :]).reshape(n, -1)
    want = -np.log((probs * optimal).sum(-1))
    assert want[0] == pytest.approx(0.0, abs=1e-12) and np.all(want[1:] > 0)
    np.testing.assert_allclose(supervised.set_loss(z, jnp.asarray(optimal)), want.mean(), rtol=1e-5)
    # gradient wrt the joint log-probs: pi(c) - pi(c) 1[c in set] / pi(set), mean over the batch (checked through a
    # joint head, whose logits are the joint log-probs up to a constant)
    if len(sizes) == 1:
        g = np.asarray(jax.grad(lambda zz: supervised.set_loss(zz, jnp.asarray(optimal)))(z)[0])
        p_set = (probs * optimal).sum(-1, keepdims=True)
        np.testing.assert_allclose(g, (probs - probs * optimal / p_set) / n, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_supervised_set_loss_with_one_member_is_the_cross_entropy(eps):
    sizes = (5, 4, 5)
    z = _logits(jax.random.PRNGKey(7), n=4)
    target = jnp.array([0, 57, 99, 13])
    one = jax.nn.one_hot(target, 100) > 0
    np.testing.assert_allclose(supervised.set_loss(z, one, eps), supervised.ce_loss(z, target, sizes, eps), rtol=1e-6)
    g_set = jax.grad(lambda zz: supervised.set_loss(zz, one, eps))(z)
    g_ce = jax.grad(lambda zz: supervised.ce_loss(zz, target, sizes, eps))(z)
    for a, b in zip(g_set, g_ce):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # label smoothing still pulls toward uniform: the smoothed loss differs from the plain one
    if eps:
        assert float(supervised.set_loss(z, one, eps)) != pytest.approx(float(supervised.set_loss(z, one)))
