"""GRPO (Shao et al. 2024, DeepSeekMath eq. 3): critic-free, group-relative advantages.

Per update: N/G training requests (each with a sampled budget), G configs sampled per request from the current
policy (every sample is an env step), A_i = (r_i - mean_group r) / max(std, floor) with ``scale`` in
{group, batch, none} (none = Dr. GRPO), then mu epochs x minibatches of the clipped-ratio loss plus
beta * KL(pi || pi_ref) computed exactly over the discrete action space.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
from flax import struct

from e5jax import env as E
from e5jax import policy as P
from e5jax.methods import common as C


@dataclasses.dataclass(frozen=True)
class Config(C.LearnerConfig):
    group_size: int = 8
    clip_eps: float = C.traced(0.2, low_open=True, search=(0.05, 0.4), scale="linear")
    beta: float = C.traced(0.0, search=(1e-3, 0.1), scale="log")  # TRL default; KL is still logged
    scale: str = "group"  # group | batch | none
    std_floor: float = 1e-3

    def compiled_out(self) -> tuple:
        """Traced names absent from this config's program: with a static beta of 0 there is no KL term, so a traced
        beta would be ignored and is not offered."""
        return ("beta",) if self.beta == 0.0 else ()


def static_for(cfg: Config, settings: list[dict]) -> Config:
    """The static config for sweep rows with these traced settings: the KL term (and its reference forward) is
    compiled in only when the static beta is > 0, so rows with any beta > 0 need it on."""
    if cfg.beta == 0.0 and any(s.get("beta", 0.0) > 0 for s in settings):
        return dataclasses.replace(cfg, beta=1.0)
    return cfg


def check(cfg: Config) -> str | None:
    if cfg.scale not in SCALES:
        return f"scale must be one of {', '.join(SCALES)}, got {cfg.scale!r}"
    return C.check_group_size(cfg)


SCALES = ("group", "batch", "none")


@struct.dataclass
class Samples:
    obs: jax.Array  # [N, D] each sample's request (repeated over its group)
    action: jax.Array  # [N]
    adv: jax.Array  # [N] group-relative advantage
    logp_old: jax.Array  # [N]


@struct.dataclass
class Groups:
    samples: Samples
    group_obs: jax.Array  # [N/G, D]
    train_utility: jax.Array
    zero_spread_groups: jax.Array


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
    """The clipped surrogate + beta x KL to the reference, mean over samples; with the ratio's diagnostics."""
    pg, aux = C.clipped_surrogate(logp, logp_old, adv, clip_eps)
    return pg.mean() + beta * kl_ref.mean(), aux


def collect(state: C.LearnerState, env: E.EnvParams, keys) -> Groups:
    """N/G requests x G sampled configs (env steps), group-relative advantages, old log-probs (flattened)."""
    cfg: Config = state.cfg
    G = cfg.group_size
    obs, logits_g, actions, rewards = C.sample_groups(state, env, keys[:3], cfg.env_steps_per_update // G, G)
    adv, zero_spread = group_advantages(rewards, cfg.scale, cfg.std_floor)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    samples = Samples(flat(jnp.repeat(obs[:, None], G, axis=1)), flat(actions), flat(adv),
                      flat(P.log_prob(logits_g, actions, state.sizes)))
    return Groups(samples, obs, rewards.mean(), zero_spread)


def learn(state: C.LearnerState, env: E.EnvParams, batch: Groups, key):
    """epochs x minibatches SGD on the clipped GRPO loss + beta x exact KL to the reference."""
    cfg: Config = state.cfg
    hp = state.hp
    n = C.group_steps(cfg, env)

    def loss_fn(params, mb: Samples):
        z = C.policy_logits(state, params, mb.obs)
        logp = P.log_prob(z, mb.action, state.sizes)
        if cfg.beta == 0.0:  # static: no reference forward at all (static_for switches it on for a sweep)
            kl_ref = jnp.zeros(logp.shape, logp.dtype)
        else:
            kl_ref = P.kl(z, C.policy_logits(state, state.ref_params, mb.obs))
        return grpo_loss(logp, mb.logp_old, mb.adv, kl_ref, hp["clip_eps"], hp.get("beta", 0.0))

    state, sgd = C.sgd_epochs(key, state, batch.samples, loss_fn, n)
    metrics = C.standard_metrics(state, state.params, batch.group_obs, batch.train_utility, n, sgd)
    metrics["zero_spread_groups"] = batch.zero_spread_groups
    return state.replace(step=state.step + 1), metrics


METHOD = C.Method("grpo", Config, C.init_policy, collect, learn, C.policy, C.group_steps, keys=4,
                  seed_columns={"group_generation_s": ("collect",)}, color=5, versus=("ppo", "no critic"),
                  static_for=static_for, check=check, shared_init=C.policy_params_for_rows)
