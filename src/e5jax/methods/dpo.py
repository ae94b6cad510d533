"""Online DPO (Rafailov et al. 2023; online variant as in TRL OnlineDPOTrainer / RLHFlow Online-RLHF).

Per update: N/G training requests, G configs sampled per request from the current policy (every sample is an
env step). ``pairing = "ranks"`` (default): the G samples sorted by reward form G//2 disjoint preference pairs,
rank i vs rank G-1-i (the best vs the worst first), so every sample enters one pair and the N samples of an update
are split into ``minibatches`` minibatches of N/minibatches samples, as in PPO and GRPO (REFERENCES: same
minibatch size). ``pairing = "best_worst"``: only the best vs the worst (RLHFlow's online DPO), N/G pairs per
update. Pairs with |delta r| < tau are dropped.
Loss on h = [log pi(w) - log pi_ref(w)] - [log pi(l) - log pi_ref(l)]: ``sigmoid`` -(1-eps) log s(beta h)
- eps log s(-beta h) (eps = label smoothing, cDPO), or ``ipo`` (h - 1/(2 beta))^2. The reference is the initial
policy, optionally an EMA of the policy (``ref_ema`` > 0).
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import optax
from flax import struct

from e5jax import env as E
from e5jax import policy as P
from e5jax.methods import common as C


@dataclasses.dataclass(frozen=True)
class Config(C.LearnerConfig):
    group_size: int = 8
    beta: float = C.traced(0.1, low_open=True, search=(0.02, 1.0), scale="log")
    loss: str = "sigmoid"  # sigmoid | ipo (REFERENCES: with deterministic labels sigmoid-DPO has no KL anchor; ipo keeps one)
    label_smoothing: float = C.traced(0.0, high=0.49, search=(0.0, 0.3), scale="linear")
    tau: float = C.traced(0.01, search=(1e-3, 0.1), scale="log")  # drop pairs whose reward gap is below tau
    pairing: str = "ranks"  # ranks: G//2 disjoint pairs per group (rank i vs G-1-i) | best_worst: one pair per group
    ref_ema: float = 0.0  # 0: reference = initial policy


PAIRINGS = ("ranks", "best_worst")
LOSSES = ("sigmoid", "ipo")


def check(cfg: Config) -> str | None:
    if cfg.pairing not in PAIRINGS:
        return f"pairing must be ranks or best_worst, got {cfg.pairing!r}"
    if cfg.loss not in LOSSES:
        return f"loss must be one of {', '.join(LOSSES)}, got {cfg.loss!r}"
    return C.check_group_size(cfg)


@struct.dataclass
class Pairs:
    obs: jax.Array  # [n_pairs, D]
    win: jax.Array  # [n_pairs] preferred config
    lose: jax.Array  # [n_pairs]
    valid: jax.Array  # [n_pairs] 1 where the reward gap is >= tau


@struct.dataclass
class PairBatch:
    pairs: Pairs
    group_obs: jax.Array  # [N/G, D]
    train_utility: jax.Array


def dpo_loss(h, beta: float, loss: str = "sigmoid", label_smoothing: float = 0.0):
    """Per-pair loss on the log-ratio margin h."""
    if loss == "sigmoid":
        return -(1 - label_smoothing) * jax.nn.log_sigmoid(beta * h) - label_smoothing * jax.nn.log_sigmoid(-beta * h)
    if loss == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    raise ValueError(f"dpo loss must be sigmoid or ipo, got {loss!r}")


def pairs_per_group(cfg: Config) -> int:
    return cfg.group_size // 2 if cfg.pairing == "ranks" else 1


def pair_indices(rewards, pairing: str):
    """[n, P] winner and loser sample indices of each group's pairs. ``ranks``: the samples sorted by reward
    (stable, best first), rank i vs rank G-1-i for i < G//2 (disjoint); ``best_worst``: argmax vs argmin."""
    if pairing == "best_worst":
        return jnp.argmax(rewards, -1)[:, None], jnp.argmin(rewards, -1)[:, None]
    if pairing != "ranks":
        raise ValueError(f"dpo pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    order = jnp.argsort(-rewards, axis=-1, stable=True)
    P_ = rewards.shape[-1] // 2
    return order[:, :P_], order[:, ::-1][:, :P_]


def collect(state: C.LearnerState, env: E.EnvParams, keys) -> PairBatch:
    """N/G requests x G sampled configs (env steps); the preference pairs of each group (``pair_indices``),
    flattened to [N/G * P], each masked when its reward gap is below tau."""
    cfg: Config = state.cfg
    G = cfg.group_size
    obs, _, actions, rewards = C.sample_groups(state, env, keys[:3], cfg.env_steps_per_update // G, G)
    win, lose = pair_indices(rewards, cfg.pairing)
    take = lambda a, i: jnp.take_along_axis(a, i, -1).reshape(-1)  # noqa: E731
    gap = take(rewards, win) - take(rewards, lose)
    pairs = Pairs(jnp.repeat(obs, win.shape[1], axis=0), take(actions, win), take(actions, lose),
                  (gap >= state.hp["tau"]).astype(jnp.float32))
    return PairBatch(pairs, obs, rewards.mean())


def learn(state: C.LearnerState, env: E.EnvParams, batch: PairBatch, key):
    """epochs x minibatches SGD on the DPO loss over the valid pairs (reference forward included)."""
    cfg: Config = state.cfg
    hp = state.hp
    n = (cfg.env_steps_per_update // cfg.group_size) * pairs_per_group(cfg)  # pairs

    def loss_fn(params, mb: Pairs):
        z = C.policy_logits(state, params, mb.obs)
        zr = C.policy_logits(state, state.ref_params, mb.obs)
        lw = P.log_prob(z, mb.win, state.sizes) - P.log_prob(zr, mb.win, state.sizes)
        ll = P.log_prob(z, mb.lose, state.sizes) - P.log_prob(zr, mb.lose, state.sizes)
        h = lw - ll
        per_pair = dpo_loss(h, hp["beta"], cfg.loss, hp["label_smoothing"])
        valid = mb.valid
        loss = jnp.sum(per_pair * valid) / jnp.maximum(valid.sum(), 1.0)
        acc = jnp.sum((h > 0) * valid) / jnp.maximum(valid.sum(), 1.0)
        return loss, {"margin": jnp.sum(h * valid) / jnp.maximum(valid.sum(), 1.0), "pair_accuracy": acc}

    state, sgd = C.sgd_epochs(key, state, batch.pairs, loss_fn, n)
    if cfg.ref_ema > 0:
        state = state.replace(ref_params=optax.incremental_update(state.params, state.ref_params, cfg.ref_ema))
    metrics = C.standard_metrics(state, state.params, batch.group_obs, batch.train_utility, C.group_steps(cfg, env), sgd)
    metrics["valid_pair_fraction"] = batch.pairs.valid.mean()
    return state.replace(step=state.step + 1), metrics


METHOD = C.Method("dpo", Config, C.init_policy, collect, learn, C.policy, C.group_steps, keys=4,
                  seed_columns={"pair_generation_s": ("collect",)}, color=4, check=check,
                  shared_init=C.policy_params_for_rows)
