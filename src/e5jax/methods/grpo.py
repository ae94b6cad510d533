"""GRPO (Shao et al. 2024, DeepSeekMath eq. 3): critic-free, group-relative advantages.

Per update: N/G training requests (each with a sampled budget), G configs sampled per request from the current
policy (every sample is an env step), A_i = (r_i - mean_group r) / max(std, floor) with ``scale`` in
{group, batch, none} (none = Dr. GRPO), then mu epochs x minibatches of the clipped-ratio loss plus
beta * KL(pi || pi_ref) computed exactly over the discrete action space.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from e5jax import env as E
from e5jax import policy as P
from e5jax.methods import common as C


@dataclasses.dataclass(frozen=True)
class Config(C.LearnerConfig):
    group_size: int = 8
    clip_eps: float = 0.2
    beta: float = 0.0  # TRL default; KL is still logged
    scale: str = "group"  # group | batch | none
    std_floor: float = 1e-3
    TRACED: ClassVar[tuple] = C.LearnerConfig.TRACED + ("clip_eps", "beta")

    def with_traced(self, settings: list[dict]) -> "Config":
        """The static config for rows with these traced settings: the KL term (and its reference forward) is
        compiled in only when the static beta is > 0, so rows with any beta > 0 need it on."""
        if self.beta == 0.0 and any(s.get("beta", 0.0) > 0 for s in settings):
            return dataclasses.replace(self, beta=1.0)
        return self

    def compiled_out(self) -> tuple:
        """Traced names absent from this config's program: with a static beta of 0 there is no KL term, so a traced
        beta would be ignored and is not offered."""
        return ("beta",) if self.beta == 0.0 else ()


def group_advantages(rewards: jax.Array, scale: str = "group", std_floor: float = 1e-3):
    """rewards [n_groups, G] -> advantages [n_groups, G] and the fraction of zero-spread groups."""
    centred = rewards - rewards.mean(-1, keepdims=True)
    if scale == "group":
        std = jnp.std(rewards, axis=-1, ddof=1, keepdims=True)
    elif scale == "batch":
        std = jnp.std(rewards, ddof=1)
    elif scale == "none":
        std = jnp.ones(())
        std_floor = 0.0
    else:
        raise ValueError(f"grpo scale must be group, batch or none, got {scale!r}")
    adv = centred / jnp.maximum(std, std_floor)
    zero_spread = jnp.mean(jnp.ptp(rewards, axis=-1) == 0)
    return adv, zero_spread


def grpo_loss(logp, logp_old, adv, kl_ref, clip_eps: float, beta: float):
    ratio = jnp.exp(logp - logp_old)
    clipped = jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps)
    pg = -jnp.minimum(ratio * adv, clipped * adv)
    return pg.mean() + beta * kl_ref.mean(), ratio


def init(key, env: E.EnvParams, cfg: Config = Config()):
    return C.init_learner(key, env, cfg)


def steps_per_update(cfg: Config, env: E.EnvParams) -> int:
    return (cfg.env_steps_per_update // cfg.group_size) * cfg.group_size


def collect(state: C.LearnerState, env: E.EnvParams, key) -> dict:
    """N/G requests x G sampled configs (env steps), group-relative advantages, old log-probs (flattened)."""
    cfg: Config = state.cfg
    G = cfg.group_size
    k_req, k_act, k_env, _ = jax.random.split(key, 4)
    obs, logits_g, actions, rewards = C.sample_groups(state, env, (k_req, k_act, k_env), cfg.env_steps_per_update // G, G)
    adv, zero_spread = group_advantages(rewards, cfg.scale, cfg.std_floor)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    return {"obs": flat(jnp.repeat(obs[:, None], G, axis=1)), "action": flat(actions), "adv": flat(adv),
            "logp_old": flat(P.log_prob(logits_g, actions, state.sizes)),
            "group_obs": obs, "train_utility": rewards.mean(), "zero_spread_groups": zero_spread}


def learn(state: C.LearnerState, env: E.EnvParams, batch: dict, key):
    """epochs x minibatches SGD on the clipped GRPO loss + beta x exact KL to the reference."""
    cfg: Config = state.cfg
    hp = state.hp
    n = steps_per_update(cfg, env)
    *_, k_sgd = jax.random.split(key, 4)
    samples = {k: batch[k] for k in ("obs", "action", "adv", "logp_old")}

    def loss_fn(params, mb):
        z = C.policy_logits(state, params, mb["obs"])
        logp = P.log_prob(z, mb["action"], state.sizes)
        if cfg.beta == 0.0:  # static: no reference forward at all (Config.with_traced switches it on for a sweep)
            kl_ref = jnp.zeros(logp.shape, logp.dtype)
        else:
            kl_ref = P.kl(z, C.policy_logits(state, state.ref_params, mb["obs"]))
        loss, ratio = grpo_loss(logp, mb["logp_old"], mb["adv"], kl_ref, hp["clip_eps"], hp.get("beta", 0.0))
        return loss, {
            "clipfrac": jnp.mean(jnp.abs(ratio - 1) > hp["clip_eps"]),
            "approx_kl": jnp.mean((ratio - 1) - jnp.log(ratio)),
        }

    state, sgd = C.sgd_epochs(k_sgd, state, samples, loss_fn, n)
    metrics = C.standard_metrics(state, state.params, batch["group_obs"], batch["train_utility"], n, sgd)
    metrics["zero_spread_groups"] = batch["zero_spread_groups"]
    return state.replace(step=state.step + 1), metrics


update = C.compose(collect, learn)


def policy(state: C.LearnerState) -> P.MLPPolicy:
    return C.mlp_policy(state, state.params)
