"""PPO (Schulman et al. 2017) with CleanRL/PureJaxRL details, for a one-step contextual bandit.

Per update: N training requests, one config sampled per request (N env steps). One-step episodes: GAE reduces
to A = r - V(x) and the value target is r. Advantages normalized per minibatch, clipped ratio, clipped value
loss, entropy bonus, epochs x minibatches. The critic is PPO's own network (same trunk shape as the actor).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from e5jax import env as E
from e5jax import policy as P
from e5jax.methods import common as C


@dataclasses.dataclass(frozen=True)
class Config(C.LearnerConfig):
    clip_eps: float = 0.2
    clip_vloss: bool = True
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    norm_adv: bool = True


def ppo_policy_loss(logp, logp_old, adv, clip_eps: float):
    ratio = jnp.exp(logp - logp_old)
    pg = jnp.maximum(-adv * ratio, -adv * jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps))
    return pg.mean(), ratio


def ppo_value_loss(v, v_old, target, clip_eps: float, clip: bool = True):
    unclipped = (v - target) ** 2
    if not clip:
        return 0.5 * unclipped.mean()
    v_clipped = v_old + jnp.clip(v - v_old, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum(unclipped, (v_clipped - target) ** 2).mean()


def _value(cfg, params, obs):
    return P.MLP(cfg.hidden, (1,), head_scale=1.0).apply(params, obs)[0][..., 0]


def init(key, env: E.EnvParams, cfg: Config = Config()):
    def make_params(policy_params, k, sizes):
        critic = P.MLP(cfg.hidden, (1,), head_scale=1.0).init(k, jnp.zeros((1, env.obs_dim)))
        return {"actor": policy_params, "critic": critic}

    return C.init_learner(key, env, cfg, make_params)


def steps_per_update(cfg: Config, env: E.EnvParams) -> int:
    return cfg.env_steps_per_update


def update(state: C.LearnerState, env: E.EnvParams, key):
    cfg: Config = state.cfg
    N = cfg.env_steps_per_update
    k_req, k_act, k_env, k_sgd = jax.random.split(key, 4)
    req, budget, _ = E.sample_requests(k_req, env, N)
    obs = E.observe(env, req, budget)
    logits = C.policy_logits(state, state.params["actor"], obs)
    actions = P.sample(k_act, logits, state.sizes)
    rewards, _, _ = E.step(env, req, budget, actions, k_env)
    values = _value(cfg, state.params["critic"], obs)
    batch = {
        "obs": obs,
        "action": actions,
        "logp_old": P.log_prob(logits, actions, state.sizes),
        "adv": rewards - values,
        "v_old": values,
        "target": rewards,
    }

    def loss_fn(params, mb):
        z = C.policy_logits(state, params["actor"], mb["obs"])
        logp = P.log_prob(z, mb["action"], state.sizes)
        adv = mb["adv"]
        if cfg.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss, ratio = ppo_policy_loss(logp, mb["logp_old"], adv, cfg.clip_eps)
        v = _value(cfg, params["critic"], mb["obs"])
        v_loss = ppo_value_loss(v, mb["v_old"], mb["target"], cfg.clip_eps, cfg.clip_vloss)
        ent = P.entropy(z).mean()
        loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss
        return loss, {
            "pg_loss": pg_loss,
            "value_loss": v_loss,
            "clipfrac": jnp.mean(jnp.abs(ratio - 1) > cfg.clip_eps),
            "approx_kl": jnp.mean((ratio - 1) - jnp.log(ratio)),
        }

    state, sgd = C.sgd_epochs(k_sgd, state, batch, loss_fn, N)
    metrics = C.standard_metrics(state, state.params["actor"], obs, rewards.mean(), N, sgd)
    return state.replace(step=state.step + 1), metrics


def policy(state: C.LearnerState) -> P.MLPPolicy:
    return C.mlp_policy(state, state.params["actor"])
