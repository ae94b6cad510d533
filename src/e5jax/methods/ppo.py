"""PPO (Schulman et al. 2017) with CleanRL/PureJaxRL details, for a one-step contextual bandit.

Per update: N training requests, one config sampled per request (N env steps). One-step episodes: GAE reduces
to A = r - V(x) and the value target is r. Advantages normalized per minibatch, clipped ratio, clipped value
loss, entropy bonus, epochs x minibatches. The critic is PPO's own network (same trunk shape as the actor).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import struct

from e5jax import env as E
from e5jax import policy as P
from e5jax.methods import common as C


@dataclasses.dataclass(frozen=True)
class Config(C.LearnerConfig):
    clip_eps: float = C.traced(0.2, low_open=True, search=(0.05, 0.4), scale="linear")
    clip_vloss: bool = True
    vf_coef: float = C.traced(0.5, search=(0.25, 1.0), scale="linear")
    ent_coef: float = C.traced(0.01, search=(1e-4, 5e-2), scale="log")
    norm_adv: bool = True


@struct.dataclass
class Rollout:
    obs: jax.Array  # [N, D]
    action: jax.Array  # [N] config
    logp_old: jax.Array  # [N]
    adv: jax.Array  # [N] r - V(x)
    v_old: jax.Array  # [N] V(x)
    target: jax.Array  # [N] r


def ppo_value_loss(v, v_old, target, clip_eps: float, clip: bool = True):
    unclipped = (v - target) ** 2
    if not clip:
        return 0.5 * unclipped.mean()
    v_clipped = v_old + jnp.clip(v - v_old, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum(unclipped, (v_clipped - target) ** 2).mean()


def _value(cfg, params, obs):
    return P.MLP(cfg.hidden, (1,), head_scale=1.0).apply(params, obs)[0][..., 0]


def init(key, env: E.EnvParams, cfg: Config = Config(), policy_params=None):
    def make_params(policy_params, k, sizes):
        critic = P.MLP(cfg.hidden, (1,), head_scale=1.0).init(k, jnp.zeros((1, env.obs_dim)))
        return {"actor": policy_params, "critic": critic}

    return C.init_learner(key, env, cfg, make_params, policy_params=policy_params)


def steps_per_update(cfg: Config, env: E.EnvParams) -> int:
    return cfg.env_steps_per_update


def collect(state: C.LearnerState, env: E.EnvParams, keys) -> Rollout:
    """Rollout: N requests, one sampled config each (N env steps), old log-probs, and the critic's values."""
    cfg: Config = state.cfg
    k_req, k_act, k_env, _ = keys
    req, budget, _ = E.sample_requests(k_req, env, cfg.env_steps_per_update)
    obs = E.observe(env, req, budget)
    logits = C.policy_logits(state, state.params["actor"], obs)
    actions = P.sample(k_act, logits, state.sizes)
    rewards, _, _ = E.step(env, req, budget, actions, k_env)
    values = _value(state.cfg, state.params["critic"], obs)  # one-step episodes: A = r - V(x), value target r
    return Rollout(obs, actions, P.log_prob(logits, actions, state.sizes), rewards - values, values, rewards)


def learn(state: C.LearnerState, env: E.EnvParams, batch: Rollout, key, critic: bool = True):
    """epochs x minibatches SGD on the clipped policy loss - entropy bonus + vf_coef x clipped value loss.
    ``critic=False`` (the overhead analysis' actor-only part): the value loss is left out."""
    cfg: Config = state.cfg
    hp = state.hp

    def loss_fn(params, mb: Rollout):
        z = C.policy_logits(state, params["actor"], mb.obs)
        logp = P.log_prob(z, mb.action, state.sizes)
        adv = mb.adv
        if cfg.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg, aux = C.clipped_surrogate(logp, mb.logp_old, adv, hp["clip_eps"])
        pg_loss = pg.mean()
        ent = P.entropy(z).mean()
        loss = pg_loss - hp["ent_coef"] * ent
        aux = {"pg_loss": pg_loss, **aux}
        if critic:
            v = _value(cfg, params["critic"], mb.obs)
            v_loss = ppo_value_loss(v, mb.v_old, mb.target, hp["clip_eps"], cfg.clip_vloss)
            loss = loss + hp["vf_coef"] * v_loss
            aux["value_loss"] = v_loss
        return loss, aux

    N = cfg.env_steps_per_update
    state, sgd = C.sgd_epochs(key, state, batch, loss_fn, N)
    metrics = C.standard_metrics(state, state.params["actor"], batch.obs, batch.target.mean(), N, sgd)
    return state.replace(step=state.step + 1), metrics


def policy(state: C.LearnerState) -> P.MLPPolicy:
    return C.mlp_policy(state, state.params["actor"])


METHOD = C.Method(
    "ppo", Config, init, collect, learn, policy, steps_per_update, keys=4,
    # the overhead analysis times learn() without the critic: the critic's cost is the difference
    learn_without={"critic": functools.partial(learn, critic=False)},
    seed_columns={"critic_training_s": ("critic_update",)}, color=3, shared_init=C.policy_params_for_rows)
