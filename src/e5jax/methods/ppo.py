"""PPO (Schulman et al. 2017) with CleanRL/PureJaxRL details, for a one-step contextual bandit.

Per update: N training requests, one config sampled per request (N env steps). One-step episodes: GAE reduces
to A = r - V(x) and the value target is r. Advantages normalized per minibatch, clipped ratio, clipped value
loss, entropy bonus, epochs x minibatches. The critic is PPO's own network (same trunk shape as the actor).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

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
    TRACED: ClassVar[tuple] = C.LearnerConfig.TRACED + ("clip_eps", "vf_coef", "ent_coef")


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


def collect(state: C.LearnerState, env: E.EnvParams, key) -> dict:
    """Rollout: N requests, one sampled config each (N env steps), old log-probs, and the critic's values."""
    cfg: Config = state.cfg
    k_req, k_act, k_env, _ = jax.random.split(key, 4)
    req, budget, _ = E.sample_requests(k_req, env, cfg.env_steps_per_update)
    obs = E.observe(env, req, budget)
    logits = C.policy_logits(state, state.params["actor"], obs)
    actions = P.sample(k_act, logits, state.sizes)
    rewards, _, _ = E.step(env, req, budget, actions, k_env)
    return {"obs": obs, "action": actions, "logp_old": P.log_prob(logits, actions, state.sizes),
            **estimate_values(state, obs, rewards)}


def estimate_values(state: C.LearnerState, obs, rewards) -> dict:
    """The critic's part of the rollout: V(x), advantages A = r - V(x) (one-step episodes), value targets r."""
    values = _value(state.cfg, state.params["critic"], obs)
    return {"adv": rewards - values, "v_old": values, "target": rewards}


def learn(state: C.LearnerState, env: E.EnvParams, batch: dict, key, critic: bool = True):
    """epochs x minibatches SGD on the clipped policy loss - entropy bonus + vf_coef x clipped value loss.
    ``critic=False`` (the overhead analysis' actor-only part): the value loss is left out."""
    cfg: Config = state.cfg
    hp = state.hp
    *_, k_sgd = jax.random.split(key, 4)

    def loss_fn(params, mb):
        z = C.policy_logits(state, params["actor"], mb["obs"])
        logp = P.log_prob(z, mb["action"], state.sizes)
        adv = mb["adv"]
        if cfg.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss, ratio = ppo_policy_loss(logp, mb["logp_old"], adv, hp["clip_eps"])
        ent = P.entropy(z).mean()
        loss = pg_loss - hp["ent_coef"] * ent
        aux = {"pg_loss": pg_loss, "clipfrac": jnp.mean(jnp.abs(ratio - 1) > hp["clip_eps"]),
               "approx_kl": jnp.mean((ratio - 1) - jnp.log(ratio))}
        if critic:
            v = _value(cfg, params["critic"], mb["obs"])
            v_loss = ppo_value_loss(v, mb["v_old"], mb["target"], hp["clip_eps"], cfg.clip_vloss)
            loss = loss + hp["vf_coef"] * v_loss
            aux["value_loss"] = v_loss
        return loss, aux

    N = cfg.env_steps_per_update
    state, sgd = C.sgd_epochs(k_sgd, state, batch, loss_fn, N)
    metrics = C.standard_metrics(state, state.params["actor"], batch["obs"], batch["target"].mean(), N, sgd)
    return state.replace(step=state.step + 1), metrics


update = C.compose(collect, learn)
# the overhead analysis times learn() without the critic: the critic's cost is the difference
LEARN_WITHOUT = {"critic": functools.partial(learn, critic=False)}


def policy(state: C.LearnerState) -> P.MLPPolicy:
    return C.mlp_policy(state, state.params["actor"])
