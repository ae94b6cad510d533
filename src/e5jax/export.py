"""Deployable controllers: a trained (vmapped) state -> one small NumPy object per seed, and its eager ``decide``.

A deployed controller decides one request at a time, so the eager path is plain NumPy (no JAX, no batching):

* ``MLPController`` (a ``policy.MLPPolicy``, the learned methods'): the policy MLP's weights as numpy float32 arrays, the feature
  standardization (train-split mean/std, std 0 -> 1), the sorted task names (one-hot order), the training-budget
  mean/std (budget standardization) and the knob grid. ``decide`` rebuilds exactly the observation of
  ``env.observe`` from raw request features + task_type string + budget fraction, runs the ReLU trunk and the
  heads, and takes the greedy action (per-head argmax for factored heads, argmax over configs for a joint head).
* ``KNNController`` (a ``policy.KNNPolicy``): the profiled requests (standardized features ++ task one-hot, quality, normalized
  latency); decide = the k nearest, mean reward per config at the budget, argmax.
* ``LookupController`` (a ``policy.LookupPolicy``): the [task, evaluation budget] table of chosen configs, as knob levels.
  Budgets: an evaluation budget (to 1e-6) selects its column; any other budget b uses the largest evaluation
  budget <= b (a config chosen for a tighter budget, so it never plans to spend more than b); a budget below the
  smallest evaluation budget uses the smallest one (``strict_budget=True`` raises ``ValueError`` instead).

Both return the knob levels ``(vision_tokens, top_k, active_blocks)`` (knob order of the table) from ``decide``
and the row-major config index from ``decide_index``; ``to_controller`` turns a policy into its controller
(one converter per policy kind). ``save``/``load`` use one ``.npz`` per controller (arrays
plus a ``meta_json`` string) and a human-readable sidecar ``.json`` with the same metadata.
"""

from __future__ import annotations

import bisect
import functools
import json
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import log_softmax

from e5jax import env as E
from e5jax import policy as P
from e5jax.io import atomic_write, write_json

FORMAT = "e5jax/controller/v1"


# ----------------------------------------------------------------------------- shared spec
def observation_spec(table, env: E.EnvParams) -> dict:
    """Everything needed to rebuild ``env.observe`` from raw inputs (the standardization make_env_params applies)."""
    mu, sd = E.feature_standardization(table)
    # the budget statistics as JAX computes them (float32), so the eager standardization is bit-identical
    b_mean = np.float32(jax.device_get(env.train_budgets.mean()))
    b_std = np.float32(jax.device_get(jnp.maximum(env.train_budgets.std(), 1e-6)))
    return {
        "feature_names": list(table.feature_names),
        "feature_mean": np.asarray(mu, np.float64),
        "feature_std": np.asarray(sd, np.float64),
        "task_names": list(table.task_names),
        "budget_mean": b_mean,
        "budget_std": b_std,
        "knob_names": list(table.knob_names),
        "knob_levels": [np.asarray(v).tolist() for v in table.knobs.values()],
        "eval_budgets": [round(float(b), 6) for b in np.asarray(env.budgets)],
    }


class _Base:
    kind = ""

    def __init__(self, spec: dict, method: str = "", seed: int = 0, extra_meta: dict | None = None):
        self.method, self.seed = method, int(seed)
        self.knob_names = tuple(spec["knob_names"])
        self.knob_levels = tuple(tuple(int(x) if float(x).is_integer() else float(x) for x in lv) for lv in spec["knob_levels"])
        self.knob_sizes = tuple(len(lv) for lv in self.knob_levels)
        self.num_configs = int(np.prod(self.knob_sizes))
        self.task_names = tuple(spec["task_names"])
        self.task_index = {t: i for i, t in enumerate(self.task_names)}
        self.eval_budgets = tuple(float(b) for b in spec["eval_budgets"])
        self.spec = spec
        self.extra_meta = dict(extra_meta or {})
        # config index -> level tuple (row-major), precomputed: decide() returns a ready tuple
        idx = np.stack(np.unravel_index(np.arange(self.num_configs), self.knob_sizes), -1)
        self.config_levels = tuple(tuple(self.knob_levels[k][i] for k, i in enumerate(row)) for row in idx)

    def _task(self, task_type: str) -> int:
        try:
            return self.task_index[task_type]
        except KeyError:
            raise ValueError(f"unknown task_type {task_type!r} (known: {', '.join(self.task_names)})") from None

    def decide(self, request_features, task_type: str, budget: float) -> tuple:
        return self.config_levels[self.decide_index(request_features, task_type, budget)]

    # ------------------------------------------------------------------ persistence
    def meta(self) -> dict:
        s = self.spec
        return {
            "format": FORMAT,
            "kind": self.kind,
            "method": self.method,
            "seed": self.seed,
            "knob_names": list(self.knob_names),
            "knob_levels": [list(lv) for lv in self.knob_levels],
            "config_order": "row-major over knob_names (last knob fastest)",
            "task_names": list(self.task_names),
            "eval_budgets": list(self.eval_budgets),
            "feature_names": list(s.get("feature_names", [])),
            "budget_mean": float(s.get("budget_mean", 0.0)),
            "budget_std": float(s.get("budget_std", 1.0)),
            **self.extra_meta,
        }

    def arrays(self) -> dict:
        raise NotImplementedError

    def save(self, path) -> list[Path]:
        """``path`` (.npz) plus its sidecar ``.json``; both written atomically. Returns the two paths."""
        path = Path(path)
        meta = self.meta()
        arrays = {**self.arrays(), "meta_json": np.array(json.dumps(meta))}
        atomic_write(path, lambda f: np.savez(f, **arrays), binary=True)
        side = path.with_suffix(".json")
        write_json(side, meta)
        return [path, side]


# ----------------------------------------------------------------------------- MLP controllers
class MLPController(_Base):
    """Eager NumPy forward of the policy MLP (ReLU trunk, linear heads), greedy action."""

    kind = "mlp"

    def __init__(self, spec: dict, trunk: Sequence, heads: Sequence, method: str = "", seed: int = 0,
                 extra_meta: dict | None = None):
        super().__init__(spec, method, seed, extra_meta)
        f32 = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))  # noqa: E731
        self.trunk = [(f32(w), f32(b)) for w, b in trunk]
        self.heads = [(f32(w), f32(b)) for w, b in heads]
        # autoregressive head (policy.ARHead): heads = knob_0, then (cond_j, knob_j) for every later knob
        self.ar = (self.extra_meta or {}).get("head") == "autoregressive"
        if self.ar:
            if len(self.heads) != 2 * len(self.knob_sizes) - 1:
                raise ValueError(f"autoregressive head: expected {2 * len(self.knob_sizes) - 1} layers, got {len(self.heads)}")
            self.head_sizes = (int(self.heads[0][1].shape[0]),) + tuple(int(b.shape[0]) for _, b in self.heads[2::2])
        else:
            self.head_sizes = tuple(int(b.shape[0]) for _, b in self.heads)
        self.joint = (not self.ar and len(self.heads) == 1 and self.head_sizes[0] == self.num_configs
                      and len(self.knob_sizes) > 1)
        if not self.joint and self.head_sizes != self.knob_sizes and not (len(self.knob_sizes) == 1):
            raise ValueError(f"head sizes {self.head_sizes} match neither the knob grid {self.knob_sizes} nor a joint head")
        self.feature_mean = np.asarray(spec["feature_mean"], np.float64)
        self.feature_std = np.asarray(spec["feature_std"], np.float64)
        self.budget_mean = np.float32(spec["budget_mean"])
        self.budget_std = np.float32(spec["budget_std"])
        F, T = self.feature_mean.shape[0], len(self.task_names)
        self.obs_dim = F + T + 1
        if self.trunk and self.trunk[0][0].shape[0] != self.obs_dim:
            raise ValueError(f"first layer expects {self.trunk[0][0].shape[0]} inputs, observation has {self.obs_dim}")
        self._F, self._T = F, T
        # all heads in one matrix: one matmul per decision, argmax per head segment
        if not self.ar:
            self._w_heads = np.ascontiguousarray(np.concatenate([w for w, _ in self.heads], 1))
            self._b_heads = np.concatenate([b for _, b in self.heads])
        else:  # the one-hot codes of every prefix of earlier choices, per later knob (the ones ARHead uses)
            self._prefixes = P.ar_prefix_codes(self.knob_sizes)
        self._bounds = np.cumsum((0,) + self.head_sizes)
        self._strides = tuple(int(np.prod(self.knob_sizes[k + 1:])) for k in range(len(self.knob_sizes)))

    @classmethod
    def from_params(cls, params, spec: dict, method: str = "", seed: int = 0, extra_meta: dict | None = None):
        """From a flax params tree of ``policy.MLP``: Dense_0..Dense_{H-1} trunk, then one Dense per head."""
        p = params["params"] if "params" in params else params
        if "ARHead_0" in p:  # autoregressive head: Dense_* trunk, then ARHead_0/{knob_0, cond_1, knob_1, ...}
            ar = p["ARHead_0"]
            trunk = [(np.asarray(p[n]["kernel"]), np.asarray(p[n]["bias"]))
                     for n in sorted((n for n in p if n.startswith("Dense_")), key=lambda n: int(n.rsplit("_", 1)[1]))]
            order = ["knob_0"] + [f"{x}_{j}" for j in range(1, len(spec["knob_levels"])) for x in ("cond", "knob")]
            heads = [(np.asarray(ar[n]["kernel"]), np.asarray(ar[n]["bias"])) for n in order]
            return cls(spec, trunk, heads, method, seed, {**(extra_meta or {}), "head": "autoregressive"})
        names = sorted(p, key=lambda n: int(n.rsplit("_", 1)[1]))
        layers = [(np.asarray(p[n]["kernel"]), np.asarray(p[n]["bias"])) for n in names]
        hidden = extra_meta.get("hidden") if extra_meta else None
        H = len(hidden) if hidden is not None else len(layers) - len(spec["knob_levels"])
        return cls(spec, layers[:H], layers[H:], method, seed, extra_meta)

    def observe(self, request_features, task_type: str, budget: float) -> np.ndarray:
        """The observation of ``env.observe`` (its NumPy twin ``env.observation_np``)."""
        point = E.request_point_np(request_features, self.feature_mean, self.feature_std, self._task(task_type), self._T)
        return E.observation_np(point, budget, self.budget_mean, self.budget_std)

    def logits(self, obs: np.ndarray) -> np.ndarray:
        h = obs
        for w, b in self.trunk:
            h = np.maximum(h @ w + b, 0.0)
        if self.ar:
            return self._ar_joint(h)
        return h @ self._w_heads + self._b_heads

    def _ar_joint(self, h: np.ndarray) -> np.ndarray:
        """[C] joint log-probs of an autoregressive head (policy.ARHead, eager NumPy)."""
        w, b = self.heads[0]
        joint = log_softmax(h @ w + b)
        for j, prefix in enumerate(self._prefixes):
            (wc, bc), (wk, bk) = self.heads[1 + 2 * j], self.heads[2 + 2 * j]
            x = np.concatenate([np.broadcast_to(h, (prefix.shape[0], h.shape[-1])), prefix], 1)
            lp = log_softmax(np.maximum(x @ wc + bc, 0.0) @ wk + bk, axis=-1)  # [P, k]
            joint = (joint[:, None] + lp).reshape(-1)
        return joint

    def decide_index(self, request_features, task_type: str, budget: float) -> int:
        z = self.logits(self.observe(request_features, task_type, budget))
        if self.joint or self.ar or len(self.heads) == 1:
            return int(np.argmax(z))
        c, bd = 0, self._bounds
        for k, s in enumerate(self._strides):
            c += int(np.argmax(z[bd[k]: bd[k + 1]])) * s
        return c

    def arrays(self) -> dict:
        out = {"feature_mean": self.feature_mean, "feature_std": self.feature_std}
        for i, (w, b) in enumerate(self.trunk):
            out[f"trunk_{i}_w"], out[f"trunk_{i}_b"] = w, b
        for i, (w, b) in enumerate(self.heads):
            out[f"head_{i}_w"], out[f"head_{i}_b"] = w, b
        return out

    def meta(self) -> dict:
        m = super().meta()
        m.update({"feature_mean": self.feature_mean.tolist(), "feature_std": self.feature_std.tolist(),
                  "head_sizes": list(self.head_sizes), "joint": bool(self.joint),
                  "head": "autoregressive" if self.ar else ("joint" if self.joint else "factored"),
                  "hidden": [int(w.shape[1]) for w, _ in self.trunk], "activation": "relu",
                  "num_params": P.count_params(self.trunk + self.heads),
                  "greedy": ("argmax of the joint log-probs (autoregressive head)" if self.ar else
                             "argmax over configs (joint head)" if self.joint else "per-head argmax -> levels")})
        return m

    def jax_batch1(self):
        """A jitted batch-1 JAX decision from the eager observation (to show the dispatch cost)."""
        if self.ar:
            p = {f"Dense_{i}": {"kernel": w, "bias": b} for i, (w, b) in enumerate(self.trunk)}
            names = ["knob_0"] + [f"{x}_{j}" for j in range(1, len(self.knob_sizes)) for x in ("cond", "knob")]
            p["ARHead_0"] = {n: {"kernel": w, "bias": b} for n, (w, b) in zip(names, self.heads)}
            params = jax.device_put({"params": p})
            net = P.MLP(tuple(int(w.shape[1]) for w, _ in self.trunk), (self.num_configs,), ar=self.knob_sizes)
            fn = jax.jit(lambda prm, obs: jnp.argmax(net.apply(prm, obs[None])[0][0]))
            return lambda feats, task, budget: int(fn(params, self.observe(feats, task, budget)))
        w = jax.device_put(([(w, b) for w, b in self.trunk], [(w, b) for w, b in self.heads]))
        sizes = (self.num_configs,) if self.joint else self.head_sizes
        return lambda feats, task, budget: int(_jax_mlp_greedy(w, self.observe(feats, task, budget), sizes))


@functools.partial(jax.jit, static_argnums=2)
def _jax_mlp_greedy(weights, obs, sizes):
    trunk, heads = weights
    h = obs[None]
    for w, b in trunk:
        h = jax.nn.relu(h @ w + b)
    return P.greedy(tuple(h @ w + b for w, b in heads), sizes)[0]


@jax.jit
def _jax_lookup(choice, t, b):
    return choice[t, b]


# ----------------------------------------------------------------------------- lookup controllers
class LookupController(_Base):
    """A [task, evaluation budget] table of configs; decide = two dict/list lookups."""

    kind = "lookup"

    def __init__(self, spec: dict, choice, method: str = "", seed: int = 0, extra_meta: dict | None = None,
                 strict_budget: bool = False):
        super().__init__(spec, method, seed, extra_meta)
        self.choice = np.asarray(choice, np.int64)
        T, B = len(self.task_names), len(self.eval_budgets)
        if self.choice.shape != (T, B):
            raise ValueError(f"choice table has shape {self.choice.shape}, expected (tasks {T}, budgets {B})")
        self.strict_budget = strict_budget
        self._sorted = sorted((b, i) for i, b in enumerate(self.eval_budgets))
        self._sorted_b = [b for b, _ in self._sorted]
        self._exact = {b: i for i, b in enumerate(self.eval_budgets)}
        self._index_rows = {t: [int(c) for c in self.choice[i]] for t, i in self.task_index.items()}
        self._level_rows = {t: [self.config_levels[c] for c in row] for t, row in self._index_rows.items()}

    def budget_index(self, budget: float) -> int:
        i = self._exact.get(budget)
        if i is not None:
            return i
        b = round(float(budget), 6)
        i = self._exact.get(b)
        if i is not None:
            return i
        j = bisect.bisect_right(self._sorted_b, b) - 1
        if j < 0:
            if self.strict_budget:
                raise ValueError(f"budget {budget} is below the smallest evaluation budget {self._sorted_b[0]}")
            j = 0
        return self._sorted[j][1]

    def decide_index(self, request_features, task_type: str, budget: float) -> int:
        row = self._index_rows.get(task_type)
        if row is None:
            self._task(task_type)
        return row[self.budget_index(budget)]

    def decide(self, request_features, task_type: str, budget: float) -> tuple:
        row = self._level_rows.get(task_type)
        if row is None:
            self._task(task_type)
        return row[self.budget_index(budget)]

    def arrays(self) -> dict:
        return {"choice": self.choice}

    def meta(self) -> dict:
        m = super().meta()
        m.update({"budget_rule": "exact evaluation budget (1e-6); else the largest evaluation budget <= b; "
                                 "below the smallest: the smallest" + (" (strict: error)" if self.strict_budget else ""),
                  "num_params": 0, "table_entries": int(self.choice.size)})
        return m

    def jax_batch1(self):
        choice = jnp.asarray(self.choice, jnp.int32)
        return lambda feats, task, budget: int(_jax_lookup(choice, self._task(task), self.budget_index(budget)))


# ----------------------------------------------------------------------------- nearest-neighbour controllers
class KNNController(_Base):
    """A nearest-neighbour lookup: the profiled requests' standardized features (++ task one-hot), quality and normalized latency;
    decide = distances to all of them, the k nearest, mean reward per config at the budget, argmax (NumPy)."""

    kind = "knn"

    def __init__(self, spec: dict, points, quality, latency, k: int, lam: float, method: str = "", seed: int = 0,
                 extra_meta: dict | None = None):
        super().__init__(spec, method, seed, extra_meta)
        self.points = np.ascontiguousarray(np.asarray(points, np.float32))  # [n, F + T]
        self.quality = np.asarray(quality, np.float32)  # [n, C]
        self.latency = np.asarray(latency, np.float32)
        self.k, self.lam = int(k), np.float32(lam)
        self.feature_mean = np.asarray(spec["feature_mean"], np.float64)
        self.feature_std = np.asarray(spec["feature_std"], np.float64)
        self._F, self._T = self.feature_mean.shape[0], len(self.task_names)
        if self.points.shape[1:] != (self._F + self._T,) or self.quality.shape != (len(self.points), self.num_configs):
            raise ValueError(f"knn controller: points {self.points.shape} / quality {self.quality.shape} do not match "
                             f"{self._F} features + {self._T} tasks and {self.num_configs} configs")

    def point(self, request_features, task_type: str) -> np.ndarray:
        """The request in the neighbours' space (``env.request_point_np``, as ``policy.knn_features``)."""
        return E.request_point_np(request_features, self.feature_mean, self.feature_std, self._task(task_type), self._T)

    def decide_index(self, request_features, task_type: str, budget: float) -> int:
        if len(self.points) == 0:
            return self.num_configs - 1
        d = np.sum(np.square(self.point(request_features, task_type) - self.points), -1)
        nbr = np.argsort(d, kind="stable")[: self.k]  # ties: earlier profiled first (as lax.top_k)
        r = E.reward_np(self.quality[nbr], self.latency[nbr], budget, self.lam)
        return int(np.argmax(r.sum(0) / np.float32(len(nbr))))

    def arrays(self) -> dict:
        return {"feature_mean": self.feature_mean, "feature_std": self.feature_std, "points": self.points,
                "quality": self.quality, "latency": self.latency}

    def meta(self) -> dict:
        m = super().meta()
        m.update({"feature_mean": self.feature_mean.tolist(), "feature_std": self.feature_std.tolist(), "k": self.k,
                  "lam": float(self.lam), "num_profiled": int(len(self.points)),
                  "greedy": "argmax over configs of the mean reward of the k nearest profiled requests"})
        return m

    def jax_batch1(self):
        pts, q, lat = jax.device_put((self.points, self.quality, self.latency))
        return lambda feats, task, budget: int(_jax_knn(pts, q, lat, self.point(feats, task), np.float32(budget),
                                                        self.lam, self.k))


@functools.partial(jax.jit, static_argnums=6)
def _jax_knn(points, quality, latency, x, budget, lam, k):
    _, nbr = jax.lax.top_k(-jnp.sum(jnp.square(x - points), -1), min(k, points.shape[0]))
    return jnp.argmax(E.reward(quality[nbr], latency[nbr], budget, lam).mean(0))


# ----------------------------------------------------------------------------- export / load
def unstack(tree, i: int):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


@functools.singledispatch
def to_controller(pol, spec: dict, name: str, seed: int, env: E.EnvParams, cache: dict):
    """One seed's policy (a ``policy`` dataclass, unstacked) -> its deployable controller. A policy kind registers
    its converter with ``@to_controller.register``; ``env`` is the row's environment (its own lambda); ``cache``
    is shared by the seeds of one export."""
    raise TypeError(f"{name}: cannot export a controller of type {type(pol).__name__} (register a to_controller)")


@to_controller.register
def _(pol: P.LookupPolicy, spec, name, seed, env, cache):
    return LookupController(spec, np.asarray(pol.choice), name, seed)


@to_controller.register
def _(pol: P.KNNPolicy, spec, name, seed, env, cache):
    n = int(pol.n)
    if "knn_space" not in cache:  # P.knn_features of every request, computed once (rows are picked on the host)
        cache["knn_space"] = np.asarray(P.knn_features(env, jnp.arange(env.task.shape[0], dtype=jnp.int32)))
    pts = cache["knn_space"][np.asarray(pol.order)[:n]]
    return KNNController(spec, pts, np.asarray(pol.quality)[:n], np.asarray(pol.latency)[:n], pol.k, float(env.lam),
                         name, seed)


@to_controller.register
def _(pol: P.MLPPolicy, spec, name, seed, env, cache):
    return MLPController.from_params(pol.params, spec, name, seed, {"hidden": [int(h) for h in pol.hidden]})


def host_policies(method, states):
    """Every row's ``method.policy`` from one compiled program, on the host (NumPy leaves, leading row axis): sliced
    there, not op by op on the device (the per-row slicing and policy ops compiled dozens of small programs)."""
    return jax.device_get(jax.jit(jax.vmap(method.policy))(states))


def export_controllers(name: str, method, states, table, env: E.EnvParams, seeds: Sequence[int] | None = None,
                       env_rows: dict | None = None, policies=None) -> list:
    """Trained vmapped ``states`` (leading row axis) -> one controller per row, from ``method.policy``.
    ``env_rows``: the rows' env overrides ({field: [S] values}, ``engine.row_env``): each controller gets its row's.
    ``policies``: :func:`host_policies` of these states, when the caller has them."""
    spec = observation_spec(table, env)
    S = jax.tree_util.tree_leaves(states)[0].shape[0]
    policies = host_policies(method, states) if policies is None else policies
    cache: dict = {}
    out = []
    for i in range(S) if seeds is None else seeds:
        row_env = env.replace(**{k: jnp.asarray(v)[i] for k, v in env_rows.items()}) if env_rows else env
        out.append(to_controller(unstack(policies, i), spec, name, i, row_env, cache))
    return out


def save_controllers(controllers: Sequence, directory) -> list[Path]:
    d = Path(directory)
    paths = []
    for c in controllers:
        paths += c.save(d / f"{c.method}_seed{c.seed}.npz")
    return paths


def load_controller(path, strict_budget: bool = False):
    with np.load(Path(path), allow_pickle=False) as z:
        meta = json.loads(str(z["meta_json"]))
        arrays = {k: np.asarray(z[k]) for k in z.files if k != "meta_json"}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an e5jax controller (format {meta.get('format')!r})")
    spec = {
        "feature_names": meta.get("feature_names", []),
        "task_names": meta["task_names"],
        "knob_names": meta["knob_names"],
        "knob_levels": meta["knob_levels"],
        "eval_budgets": meta["eval_budgets"],
        "budget_mean": np.float32(meta["budget_mean"]),
        "budget_std": np.float32(meta["budget_std"]),
    }
    keep = {k: meta[k] for k in ("hidden", "head") if k in meta}
    if meta["kind"] == "lookup":
        return LookupController(spec, arrays["choice"], meta["method"], meta["seed"], strict_budget=strict_budget)
    spec["feature_mean"], spec["feature_std"] = arrays["feature_mean"], arrays["feature_std"]
    if meta["kind"] == "knn":
        return KNNController(spec, arrays["points"], arrays["quality"], arrays["latency"], meta["k"], meta["lam"],
                             meta["method"], meta["seed"])
    nt = sum(1 for k in arrays if k.startswith("trunk_") and k.endswith("_w"))
    nh = sum(1 for k in arrays if k.startswith("head_") and k.endswith("_w"))
    trunk = [(arrays[f"trunk_{i}_w"], arrays[f"trunk_{i}_b"]) for i in range(nt)]
    heads = [(arrays[f"head_{i}_w"], arrays[f"head_{i}_b"]) for i in range(nh)]
    return MLPController(spec, trunk, heads, meta["method"], meta["seed"], keep)


def load_controllers(directory) -> dict[str, list]:
    """``<dir>/<method>_seed<i>.npz`` -> {method: [controllers sorted by seed]}."""
    out: dict[str, list] = {}
    for p in sorted(Path(directory).glob("*_seed*.npz")):
        c = load_controller(p)
        out.setdefault(c.method, []).append(c)
    return {k: sorted(v, key=lambda c: c.seed) for k, v in out.items()}


# ----------------------------------------------------------------------------- the vmapped reference
def vmapped_greedy(method, states, env: E.EnvParams) -> np.ndarray:
    """Greedy configs [S, B, Rv] of the shared (vmapped) evaluator on the val grid: the reference for ``decide``."""

    def one(state):
        req, budget = E.eval_grid(env)
        bidx = jnp.broadcast_to(jnp.arange(env.budgets.shape[0])[:, None], req.shape)
        return method.policy(state).greedy(env, req, budget, bidx)

    return np.asarray(jax.jit(jax.vmap(one))(states))


def val_requests(table, env: E.EnvParams) -> list[tuple]:
    """(raw features, task_type, budget) for every val request at every evaluation budget, budget-major
    (the order of ``env.eval_grid``)."""
    val = np.asarray(env.val_idx)
    feats = [np.asarray(table.features[i], np.float64) for i in val]
    tasks = [str(table.task_types[i]) for i in val]
    return [(feats[j], tasks[j], round(float(b), 6)) for b in np.asarray(env.budgets) for j in range(len(val))]


def eager_decisions(controller, requests: Sequence[tuple]) -> np.ndarray:
    return np.array([controller.decide_index(*r) for r in requests], np.int64)
