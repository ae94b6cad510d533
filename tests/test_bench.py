"""Fast checks of the benchmark scripts' pure parts: the PyTorch reference computes the lab's problem (same
observation, reward, config indexing, network and losses), and the FLOP counting is right."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import bench_op_profile as OP  # noqa: E402
import bench_roofline as BR  # noqa: E402
import torch_reference as T  # noqa: E402
from e5jax import env as E  # noqa: E402
from e5jax import policy as P  # noqa: E402
from e5jax.methods import grpo, ppo  # noqa: E402
from e5jax.methods import common as C  # noqa: E402


@pytest.fixture
def envs(small_table):
    env = E.make_env_params(small_table)
    return env, T.torch_env(env)


def test_observation_and_reward_match_the_lab(envs):
    env, te = envs
    req = jnp.asarray([0, 3, 5, 7])
    budget = jnp.asarray([0.35, 0.5, 0.85, 1.0], jnp.float32)
    config = jnp.asarray([0, 4, 7, env.num_configs - 1])
    obs = T.observe(te, torch.as_tensor(np.array(req)), torch.as_tensor(np.array(budget)))
    np.testing.assert_allclose(obs.numpy(), np.asarray(E.observe(env, req, budget)), rtol=1e-6, atol=1e-6)
    r = T.reward(te, torch.as_tensor(np.array(req)), torch.as_tensor(np.array(budget)), torch.as_tensor(np.array(config)))
    np.testing.assert_allclose(r.numpy(), np.asarray(E.step(env, req, budget, config)[0]), rtol=1e-6)


def test_config_indexing_matches_the_lab(envs):
    env, _ = envs
    sizes = env.knob_sizes
    c = torch.arange(env.num_configs)
    heads = T.config_to_heads(c, sizes)
    lab = P.config_to_heads(jnp.arange(env.num_configs), sizes)
    for a, b in zip(heads, lab):
        np.testing.assert_array_equal(a.numpy(), np.asarray(b))
    np.testing.assert_array_equal(T.heads_to_config(heads, sizes).numpy(), np.arange(env.num_configs))


def copy_flax_to_torch(params, actor: T.Actor) -> None:
    dense = params["params"]
    linears = [m for m in actor.trunk if isinstance(m, torch.nn.Linear)] + list(actor.heads)
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.copy_(torch.as_tensor(np.array(dense[f"Dense_{i}"]["kernel"]).T.copy()))
            lin.bias.copy_(torch.as_tensor(np.array(dense[f"Dense_{i}"]["bias"])))


def test_network_and_policy_losses_match_the_lab(envs):
    env, te = envs
    cfg = ppo.Config()
    params, sizes = C.init_policy_params(jax.random.PRNGKey(0), env, cfg)
    actor = T.Actor(te.obs_dim, te.knob_sizes, cfg.hidden)
    assert sum(p.numel() for p in actor.parameters()) == P.count_params(params)
    copy_flax_to_torch(params, actor)
    obs = jax.random.normal(jax.random.PRNGKey(1), (6, env.obs_dim))
    z_lab = P.MLP(cfg.hidden, sizes).apply(params, obs)
    z_t = actor(torch.as_tensor(np.array(obs)))
    for a, b in zip(z_t, z_lab):
        np.testing.assert_allclose(a.detach().numpy(), np.asarray(b), rtol=1e-5, atol=1e-6)
    config = jnp.asarray([0, 1, 2, 3, 4, env.num_configs - 1])
    lp_lab = P.log_prob(z_lab, config, sizes)
    lp_t = T.log_prob(z_t, T.config_to_heads(torch.as_tensor(np.array(config)), sizes))
    np.testing.assert_allclose(lp_t.detach().numpy(), np.asarray(lp_lab), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(T.entropy(z_t).detach().numpy(), np.asarray(P.entropy(z_lab)), rtol=1e-5)


def test_grpo_advantages_match_the_lab():
    r = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    r[1] = 0.3  # a zero-spread group: the std floor
    adv, _ = grpo.group_advantages(jnp.asarray(r), "group", 1e-3)
    rt = torch.as_tensor(r)
    ours = (rt - rt.mean(-1, keepdim=True)) / rt.std(-1, keepdim=True).clamp(min=1e-3)
    np.testing.assert_allclose(ours.numpy(), np.asarray(adv), rtol=1e-5, atol=1e-6)


def test_reference_trains_and_evaluates(envs):
    env, te = envs
    for name, cfg in (("ppo", ppo.Config()), ("grpo", grpo.Config())):
        actions, times = T.train_seeds(name, te, cfg, 2, [0])
        assert actions.shape == (1, env.budgets.shape[0], env.val_idx.shape[0])
        assert np.all((actions >= 0) & (actions < env.num_configs)) and times.shape == (1,)


def test_flop_counting():
    macs = BR.dense_macs(11, (128, 64), 14)
    assert macs == [11 * 128, 128 * 64, 64 * 14]
    assert BR.fwd(64, macs) == 2 * 64 * sum(macs)
    # backward = weight grads of every layer + input grads of every layer but the first
    assert BR.fwd_bwd(64, macs) == 2 * 64 * (sum(macs) + sum(macs) + 128 * 64 + 64 * 14)


def test_update_variants_are_explicit_programs(envs):
    """Every ablation of bench_roofline is a common.Program the update is traced under (``common.variant``; nothing in
    src/ is replaced and the states carry none): each traces for PPO and GRPO, and the replaced piece is the one
    that runs."""
    env, _ = envs
    assert BR.VARIANTS["full"] == C.Program() and all(isinstance(v, C.Program) for v in BR.VARIANTS.values())
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    for name, cfg in (("ppo", ppo.Config(env_steps_per_update=64)), ("grpo", grpo.Config(env_steps_per_update=64))):
        method = BR.METHODS[name]
        states = jax.vmap(lambda k: method.init(k, env, cfg))(keys)
        for v, program in BR.VARIANTS.items():
            with C.variant(program):
                out, metrics = jax.eval_shape(BR.update_program(method, 1), BR.with_program(states, program), keys, env)
            assert "train_utility" in metrics, (name, v)
        with C.variant(BR.VARIANTS["no sgd phase (rollout + metrics)"]):
            frozen, _ = BR.update_program(method, 1)(
                BR.with_program(states, BR.VARIANTS["no sgd phase (rollout + metrics)"]), keys, env)
        chex_equal = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), frozen.params, states.params)
        assert all(jax.tree_util.tree_leaves(chex_equal))  # no SGD phase: the parameters did not move
    assert C.num_failed_updates(BR.plain_optimizer(ppo.Config()).init({"w": jnp.zeros(2)})) == 0


def test_op_profile_self_time_kinds_and_dot_flops():
    """Self time = duration less the direct children's, per thread; an op's kind comes from the HLO (a library
    fusion is a matmul only when its body holds a dot); a fused dot's FLOPs come from its body's operand shapes."""
    ev = [{"ph": "X", "pid": 1, "tid": 1, "name": "while.3", "ts": 0, "dur": 100},
          {"ph": "X", "pid": 1, "tid": 1, "name": "ynn_fusion.11", "ts": 10, "dur": 30},
          {"ph": "X", "pid": 1, "tid": 1, "name": "copy.2", "ts": 50, "dur": 20},
          {"ph": "X", "pid": 1, "tid": 2, "name": "dot.26", "ts": 20, "dur": 40},  # another thread: not a child
          {"ph": "i", "pid": 1, "tid": 1, "name": "marker", "ts": 5}]
    self_us, calls = OP.self_times(ev)
    assert self_us == {"while.3": 50, "ynn_fusion.11": 30, "copy.2": 20, "dot.26": 40}
    assert calls["while.3"] == 1
    hlo = """
%ynn_fused_computation.11 (param_0.13: f32[5,64,128], param_1.13: f32[5,128,64]) -> f32[5,64,64] {
  %param_0.13 = f32[5,64,128]{2,1,0} parameter(0)
  %param_1.13 = f32[5,128,64]{2,1,0} parameter(1)
  ROOT %dot.7 = f32[5,64,64]{2,1,0} dot(%param_0.13, %param_1.13), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, rhs_contracting_dims={1}
}

%fused_computation.3 (param_0.5: f32[5,64,128]) -> f32[5,128] {
  %param_0.5 = f32[5,64,128]{2,1,0} parameter(0)
  ROOT %reduce.1 = f32[5,128]{1,0} reduce(%param_0.5, %constant.1), dimensions={1}, to_apply=%add
}

ENTRY %main {
  %x = f32[5,64,128]{2,1,0} parameter(0)
  %ynn_fusion.11 = f32[5,64,64]{2,1,0} fusion(%a, %b), kind=kCustom, calls=%ynn_fused_computation.11
  %dot.26 = f32[5,128,64]{2,1,0} dot(%x, %dy), lhs_batch_dims={0}, lhs_contracting_dims={1}, rhs_batch_dims={0}, rhs_contracting_dims={1}
  %ynn_fusion.3 = f32[5,128]{1,0} fusion(%x), kind=kCustom, calls=%fused_computation.3
  %wrapped_reduce-window.15 = pred[5,4,2]{2,1,0} fusion(%wrapped_is-finite.3, %constant.3731), kind=kLoop, calls=%w
}
"""
    assert [OP.kind(n, hlo) for n in ("ynn_fusion.11", "dot.26", "ynn_fusion.3", "copy.2", "wrapped_is-finite.3",
                                      "wrapped_reduce-window.15", "ThunkExecutor::Execute", "add_select_fusion.6")] == \
        ["matmul", "matmul", "library fusion, no matmul", "copy", "is-finite", "boolean reduce-window",
         "thunk dispatch", "add_select_fusion"]
    shapes, flops = OP.dot_flops(hlo, "ynn_fusion.11")
    assert shapes == "5x64x128 . 5x128x64 -> 5x64x64" and flops == 2.0 * 5 * 64 * 64 * 128
    assert OP.dot_flops(hlo, "dot.26")[1] == 2.0 * 5 * 128 * 64 * 64  # a plain dot: contracting dim of x is 64
    assert OP.dot_flops(hlo, "ynn_fusion.3") is None
