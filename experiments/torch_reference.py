"""A sequential PyTorch reference for PPO and GRPO on the lab's table: what a user would otherwise write.

CleanRL style: a plain Python training loop, one seed after the other, ``torch.nn`` modules, ``torch.optim.Adam``
and ``clip_grad_norm_``. Batched tensor ops only (no per-sample Python loop inside an update). It reproduces the
lab's problem and hyperparameters exactly, so that a throughput comparison with the vmapped JAX lab is fair:

* same table and observation (``e5jax.env.make_env_params`` -> tensors: standardized features, task one-hot,
  standardized budget), same reward ``quality - lam * max(0, latency/baseline - b)``;
* same network: ReLU MLP 128-64 (orthogonal init sqrt(2), zero bias), one linear head per knob (orthogonal
  init 0.01; the critic's single head 1.0), ``log pi(config|x) = sum_heads log softmax(z_h)[a_h]``;
* same optimizer: Adam(lr 3e-4, eps 1e-5; torch's fused CPU kernel) on all trainable parameters, global
  grad-norm clip 0.5;
* same work per update: 256 env steps, epochs x minibatches = 4 x 4 gradient steps on minibatches of 64;
* PPO: A = r - V(x) (one-step episodes; value target r), advantages normalized per minibatch (ddof 0, +1e-8,
  as the lab), clipped ratio 0.2, clipped value loss (vf 0.5), entropy bonus 0.01;
* GRPO: 32 requests x G = 8 samples, A = (r - mean_group) / max(std_group (Bessel), 1e-3), clipped ratio 0.2,
  beta * exact KL(pi || pi_ref) (beta = 0 by default: the reference forward pass is then skipped, as TRL does).

Differences from the lab, none of which changes the learning problem: no ``apply_if_finite`` (CleanRL has
none), and no per-update diagnostics (entropy / KL to the initial policy / clip fraction) are computed, which
only makes this reference faster. Written for this project; no code copied from CleanRL or TRL.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np
import torch
from torch import nn

# The hyperparameters are read from the lab's own config dataclasses so both sides use the same numbers.
from e5jax import env as E
from e5jax.methods import METHODS

torch.distributions.Distribution.set_default_validate_args(False)  # no per-call argument validation


ADAM_IMPLS = ("fused", "foreach", "loop")


def make_adam(params, cfg, impl: str = "fused") -> torch.optim.Adam:
    """torch.optim.Adam(lr, eps=1e-5). ``fused`` (torch's fused CPU kernel) was the fastest of torch's three
    implementations here (~2x the default per-parameter loop on PPO's 16 small tensors); all three compute the
    same update."""
    kw = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[impl]
    return torch.optim.Adam(params, lr=cfg.lr, eps=cfg.adam_eps, **kw)


def set_threads(n: int | None = None) -> int:
    """torch intra-op threads = the machine's core count (unless told otherwise)."""
    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


# ----------------------------------------------------------------------------- environment (tensors)
@dataclasses.dataclass
class TorchEnv:
    features: torch.Tensor  # [R, F] standardized (train-split statistics)
    task: torch.Tensor  # [R] int64
    quality: torch.Tensor  # [R, C]
    latency_norm: torch.Tensor  # [R, C]
    train_idx: torch.Tensor  # [Rt]
    val_idx: torch.Tensor  # [Rv]
    budgets: torch.Tensor  # [B] evaluation budgets
    train_budgets: torch.Tensor  # [Bt]
    lam: float
    knob_sizes: tuple
    num_tasks: int

    @property
    def obs_dim(self) -> int:
        return self.features.shape[1] + self.num_tasks + 1

    @property
    def budget_mean(self) -> float:
        return float(self.train_budgets.mean())

    @property
    def budget_std(self) -> float:
        return max(float(self.train_budgets.std(correction=0)), 1e-6)


def torch_env(env) -> TorchEnv:
    """The lab's ``EnvParams`` -> the same arrays as torch tensors (float32 / int64)."""
    f = lambda x: torch.from_numpy(np.array(x, dtype=np.float32))  # noqa: E731
    i = lambda x: torch.from_numpy(np.array(x, dtype=np.int64))  # noqa: E731
    if float(env.latency_noise) != 0.0:
        raise ValueError("the torch reference implements the default environment without latency noise")
    return TorchEnv(
        features=f(env.features), task=i(env.task), quality=f(env.quality), latency_norm=f(env.latency_norm),
        train_idx=i(env.train_idx), val_idx=i(env.val_idx), budgets=f(env.budgets),
        train_budgets=f(env.train_budgets), lam=float(env.lam), knob_sizes=tuple(env.knob_sizes),
        num_tasks=int(env.num_tasks),
    )


def observe(tenv: TorchEnv, req: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    onehot = nn.functional.one_hot(tenv.task[req], tenv.num_tasks).float()
    b = ((budget - tenv.budget_mean) / tenv.budget_std).unsqueeze(-1)
    return torch.cat([tenv.features[req], onehot, b], dim=-1)


def sample_requests(tenv: TorchEnv, n: int):
    req = tenv.train_idx[torch.randint(0, tenv.train_idx.shape[0], (n,))]
    budget = tenv.train_budgets[torch.randint(0, tenv.train_budgets.shape[0], (n,))]
    return req, budget


def reward(tenv: TorchEnv, req, budget, config):
    """One profiling call per element (table mean latency), rewarded by the lab's own formula (``env.reward_np``, on
    the tensors' NumPy views: no copy)."""
    q = tenv.quality[req, config]
    lat = tenv.latency_norm[req, config]
    return torch.from_numpy(E.reward_np(q.numpy(), lat.numpy(), budget.numpy(), tenv.lam))


def heads_to_config(acts, sizes) -> torch.Tensor:
    """Per-knob level indices -> row-major config index."""
    config = torch.zeros_like(acts[0])
    for a, s in zip(acts, sizes):
        config = config * s + a
    return config


def config_to_heads(config, sizes):
    acts = []
    for s in reversed(sizes):
        acts.append(config % s)
        config = config // s
    return acts[::-1]


# ----------------------------------------------------------------------------- networks
def layer_init(layer: nn.Linear, std: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class Actor(nn.Module):
    """Trunk 128-64 ReLU + one categorical head per knob (factored policy)."""

    def __init__(self, obs_dim: int, sizes, hidden=(128, 64)):
        super().__init__()
        layers, d = [], obs_dim
        for h in hidden:
            layers += [layer_init(nn.Linear(d, h), math.sqrt(2)), nn.ReLU()]
            d = h
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(layer_init(nn.Linear(d, s), 0.01) for s in sizes)
        self.sizes = tuple(sizes)

    def forward(self, obs):
        x = self.trunk(obs)
        return [h(x) for h in self.heads]


class Critic(nn.Module):
    def __init__(self, obs_dim: int, hidden=(128, 64)):
        super().__init__()
        layers, d = [], obs_dim
        for h in hidden:
            layers += [layer_init(nn.Linear(d, h), math.sqrt(2)), nn.ReLU()]
            d = h
        layers.append(layer_init(nn.Linear(d, 1), 1.0))
        self.net = nn.Sequential(*layers)

    def forward(self, obs):
        return self.net(obs).squeeze(-1)


def log_prob(logits, acts) -> torch.Tensor:
    return sum(torch.log_softmax(z, -1).gather(-1, a.unsqueeze(-1)).squeeze(-1) for z, a in zip(logits, acts))


def entropy(logits) -> torch.Tensor:
    ent = 0.0
    for z in logits:
        lp = torch.log_softmax(z, -1)
        ent = ent - (lp.exp() * lp).sum(-1)
    return ent


def kl(logits_p, logits_q) -> torch.Tensor:
    out = 0.0
    for zp, zq in zip(logits_p, logits_q):
        lp, lq = torch.log_softmax(zp, -1), torch.log_softmax(zq, -1)
        out = out + (lp.exp() * (lp - lq)).sum(-1)
    return out


def sample_heads(logits, num_samples: int | None = None):
    """One categorical draw per head (``num_samples`` draws per row: shape [rows, num_samples])."""
    acts = []
    for z in logits:
        d = torch.distributions.Categorical(logits=z)
        a = d.sample() if num_samples is None else d.sample((num_samples,)).T
        acts.append(a)
    return acts


# ----------------------------------------------------------------------------- PPO
def train_ppo(tenv: TorchEnv, cfg: METHODS["ppo"].Config, num_updates: int, seed: int, adam_impl: str = "fused"):
    torch.manual_seed(seed)
    actor = Actor(tenv.obs_dim, tenv.knob_sizes, cfg.hidden)
    critic = Critic(tenv.obs_dim, cfg.hidden)
    params = list(actor.parameters()) + list(critic.parameters())
    opt = make_adam(params, cfg, adam_impl)
    N = cfg.env_steps_per_update
    mb = N // cfg.minibatches
    for _ in range(num_updates):
        # rollout: N requests, one sampled config each (N env steps)
        with torch.no_grad():
            req, budget = sample_requests(tenv, N)
            obs = observe(tenv, req, budget)
            logits = actor(obs)
            acts = sample_heads(logits)
            logp_old = log_prob(logits, acts)
            values = critic(obs)
            r = reward(tenv, req, budget, heads_to_config(acts, tenv.knob_sizes))
            adv_all = r - values  # one-step episodes: GAE = r - V(x); value target = r
        acts = torch.stack(acts, -1)
        for _epoch in range(cfg.epochs):
            perm = torch.randperm(N)
            for k in range(cfg.minibatches):
                idx = perm[k * mb : (k + 1) * mb]
                o, a = obs[idx], acts[idx]
                z = actor(o)
                logp = log_prob(z, a.unbind(-1))
                ratio = (logp - logp_old[idx]).exp()
                adv = adv_all[idx]
                if cfg.norm_adv:
                    adv = (adv - adv.mean()) / (adv.std(correction=0) + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps)).mean()
                v = critic(o)
                v_old, target = values[idx], r[idx]
                v_loss_unclipped = (v - target) ** 2
                if cfg.clip_vloss:
                    v_clipped = v_old + (v - v_old).clamp(-cfg.clip_eps, cfg.clip_eps)
                    v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - target) ** 2).mean()
                else:
                    v_loss = 0.5 * v_loss_unclipped.mean()
                loss = pg_loss - cfg.ent_coef * entropy(z).mean() + cfg.vf_coef * v_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
    return actor


# ----------------------------------------------------------------------------- GRPO
def train_grpo(tenv: TorchEnv, cfg: METHODS["grpo"].Config, num_updates: int, seed: int, adam_impl: str = "fused"):
    torch.manual_seed(seed)
    actor = Actor(tenv.obs_dim, tenv.knob_sizes, cfg.hidden)
    ref = None
    if cfg.beta > 0:
        ref = Actor(tenv.obs_dim, tenv.knob_sizes, cfg.hidden)
        ref.load_state_dict(actor.state_dict())
        ref.requires_grad_(False)
    opt = make_adam(list(actor.parameters()), cfg, adam_impl)
    G = cfg.group_size
    n = cfg.env_steps_per_update // G
    N = n * G
    mb = N // cfg.minibatches
    for _ in range(num_updates):
        with torch.no_grad():
            req, budget = sample_requests(tenv, n)
            obs = observe(tenv, req, budget)  # [n, D]
            logits = actor(obs)
            acts = sample_heads(logits, G)  # per head [n, G]
            logp_old = log_prob([z.unsqueeze(1).expand(-1, G, -1) for z in logits], acts)  # [n, G]
            r = reward(tenv, req[:, None], budget[:, None], heads_to_config(acts, tenv.knob_sizes))  # [n, G]
            centred = r - r.mean(-1, keepdim=True)
            if cfg.scale == "group":
                adv = centred / r.std(-1, keepdim=True).clamp(min=cfg.std_floor)
            elif cfg.scale == "batch":
                adv = centred / r.std().clamp(min=cfg.std_floor)
            else:
                adv = centred
            obs_f = obs.repeat_interleave(G, 0)
            acts_f = torch.stack([a.reshape(-1) for a in acts], -1)
            adv_f, logp_old_f = adv.reshape(-1), logp_old.reshape(-1)
        for _epoch in range(cfg.epochs):
            perm = torch.randperm(N)
            for k in range(cfg.minibatches):
                idx = perm[k * mb : (k + 1) * mb]
                o = obs_f[idx]
                z = actor(o)
                ratio = (log_prob(z, acts_f[idx].unbind(-1)) - logp_old_f[idx]).exp()
                a = adv_f[idx]
                loss = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a).mean()
                if ref is not None:
                    with torch.no_grad():
                        z_ref = ref(o)
                    loss = loss + cfg.beta * kl(z, z_ref).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(actor.parameters(), cfg.max_grad_norm)
                opt.step()
    return actor


TRAINERS = {"ppo": train_ppo, "grpo": train_grpo}


# ----------------------------------------------------------------------------- evaluation
def greedy_actions(tenv: TorchEnv, actor: Actor) -> np.ndarray:
    """Greedy config per (evaluation budget, val request): [B, Rv], the lab's evaluation grid."""
    B, Rv = tenv.budgets.shape[0], tenv.val_idx.shape[0]
    req = tenv.val_idx[None, :].expand(B, Rv).reshape(-1)
    budget = tenv.budgets[:, None].expand(B, Rv).reshape(-1)
    with torch.inference_mode():
        logits = actor(observe(tenv, req, budget))
        config = heads_to_config([z.argmax(-1) for z in logits], tenv.knob_sizes)
    return config.reshape(B, Rv).numpy().astype(np.int32)


def train_seeds(method: str, tenv: TorchEnv, cfg, num_updates: int, seeds, progress=None, adam_impl: str = "fused"):
    """Seed after seed (CleanRL style). Returns greedy val actions per seed and the wall time of each seed."""
    actions, times = [], []
    for s in seeds:
        t = time.perf_counter()
        actor = TRAINERS[method](tenv, cfg, num_updates, int(s), adam_impl)
        actions.append(greedy_actions(tenv, actor))
        times.append(time.perf_counter() - t)
        if progress is not None:
            progress.update(1)
    return np.stack(actions), np.asarray(times)
