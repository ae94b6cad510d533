"""The one decision rule behind every ordering the lab states, and the two-level bootstrap it rests on.

Pure numpy on host arrays (no JAX, no files). Used by the run summary (``e5jax.report``), the sweep's compare and
lambda phases (``e5jax.sweep``) and the cross-table report (``e5jax.robustness``).

**Data.** A method's result on a metric is a ``Metric``: per seed s, budget b and val request r a contribution
``num[s, b, r]``, with a per-(budget, request) denominator ``den[b, r]`` shared by every method. Under request
weights w (a bootstrap resample of the val requests: multinomial counts) seed s scores

    value_s(w) = mean_b  sum_r w_r num[s, b, r] / sum_r w_r den[b, r]

which covers every metric the lab reports: normalized utility (num = u - u_random, den = u_oracle - u_random: the
references are re-weighted with the requests), SLO violation and quality (den = 1: a mean over requests) and the
sample-efficiency AUC (num = the AUC's weighted sum over eval points of u - u_random, which is linear in the
curve). Seed-only data (a sweep trial's per-seed score) is a Metric with one "request" (``Metric.per_seed``).

**Bootstrap.** ``N_BOOT`` replicates. Each replicate draws one request resample w, shared by every method (they are
evaluated on the same requests: paired over requests), and, per method, its own resample of seeds (independent
seeds: unpaired over seeds). The statistic is the **mean over seeds** of value_s(w): the IQM of 3-5 seeds drops
the best and the worst seed, so a seed that failed would not count against its method. Two levels of uncertainty
are reported side by side: ``seeds`` (w = 1: the val set held fixed, as the lab reported before) and
``two_level`` (seeds, then val requests). A percentile CI at ``CONFIDENCE``.

**Rule.** For methods a, b: the CI of the difference (a - b, two-level) excludes 0 -> ``">"`` or ``"<"`` (a's value
is greater / smaller); otherwise ``"unresolved"``. The winner of a metric is the *set* of methods not separated
from the best point estimate (``"higher"`` or ``"lower"`` is better). Across conditions (lambda values, tables) an
ordering *holds* when it is resolved the same way under every condition, *flips* when it is resolved in opposite
directions under two conditions, and is *unresolved* otherwise. No correction for multiple comparisons is made:
each pair's CI is a 95% CI on its own.

A method is **deterministic** when its contributions are identical for every seed (its final policy does not
depend on the seed): its seed-only CI is a point, and its stability is measured by its sensitivity to the request
resample (``request_sd``: std of its statistic over request resamples with its seeds held fixed).
"""

from __future__ import annotations

import dataclasses
import itertools
import zlib

import numpy as np

from e5jax.analysis import GAP_TOL, auc_widths

CONFIDENCE = 0.95
N_BOOT = 2000
SEED = 0
LEVELS = ("seeds", "two_level")
DECISIONS = (">", "<", "unresolved")


class DecisionError(ValueError):
    """A decision asked for between methods that were not both run (one line)."""


@dataclasses.dataclass(frozen=True)
class Metric:
    """One method's per-seed, per-request contributions to a metric (see the module docstring)."""

    num: np.ndarray  # [S, B, R]
    den: np.ndarray  # [B, R]

    def __post_init__(self):
        num, den = np.asarray(self.num, np.float64), np.asarray(self.den, np.float64)
        if num.ndim != 3 or den.shape != num.shape[1:]:
            raise ValueError(f"Metric: num must be [S, B, R] and den [B, R], got {num.shape} and {den.shape}")
        keep = np.isfinite(num).all((1, 2))  # a seed without a value (e.g. an AUC with no eval point) is dropped
        # a budget with no gap to close (oracle no better than random: mean denominator <= GAP_TOL) is left out,
        # as in analysis.normalized_utility's averages
        bud = np.abs(den.mean(1)) > GAP_TOL
        if not bud.any():
            bud[:] = True
        object.__setattr__(self, "num", num[keep][:, bud])
        object.__setattr__(self, "den", den[bud])

    @classmethod
    def per_seed(cls, x) -> "Metric":
        """Seed-only data: one value per seed (no request axis to resample)."""
        x = np.asarray(x, np.float64).reshape(-1)
        return cls(x[:, None, None], np.ones((1, 1)))

    @property
    def seeds(self) -> int:
        return self.num.shape[0]

    @property
    def requests(self) -> int:
        return self.num.shape[2]

    @property
    def deterministic(self) -> bool:
        """Identical contributions for every seed (needs >= 2 seeds to say)."""
        return self.seeds >= 2 and bool(np.all(self.num == self.num[:1]))

    def values(self, w=None) -> np.ndarray:
        """[N, S] per-seed values under request weights ``w`` [N, R] (None: every request once -> [1, S])."""
        if w is None:
            w = np.ones((1, self.requests))
        num = np.einsum("nr,sbr->nsb", w, self.num, optimize=True)
        den = w @ self.den.T  # [N, B]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (num / den[:, None, :]).mean(-1)


def _stat(v: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    """Mean over (resampled) seeds: v [N, S], idx [N, S] seed indices or None (every seed once) -> [N]."""
    if idx is not None:
        v = np.take_along_axis(v, idx, axis=1)
    return v.mean(-1)


def _std_stat(v: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    if idx is not None:
        v = np.take_along_axis(v, idx, axis=1)
    return v.std(-1, ddof=1) if v.shape[1] > 1 else np.full(v.shape[0], np.nan)


STATISTICS = {"mean": _stat, "std": _std_stat}


def _ci(reps: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    r = reps[np.isfinite(reps)]
    if r.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - confidence) / 2
    return float(np.quantile(r, a)), float(np.quantile(r, 1 - a))


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A stream keyed by names (never by position: adding a method leaves the others' draws unchanged)."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def request_weights(R: int, n: int, seed: int = SEED) -> np.ndarray:
    """[n, R] multinomial counts: n bootstrap resamples of R requests."""
    return _rng(seed, "requests").multinomial(R, np.full(R, 1.0 / R), size=n).astype(np.float64)


def decision(lo: float, hi: float) -> str:
    """">" when the CI of a - b lies above 0, "<" when below, "unresolved" when it contains 0 (or is undefined)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "unresolved"
    return ">" if lo > 0 else "<" if hi < 0 else "unresolved"


def bootstrap(metrics: dict, statistic: str = "mean", n: int = N_BOOT, seed: int = SEED) -> dict:
    """Replicates of the statistic per level and method: {"point": {m: x}, "seeds": {m: [n]}, "two_level": {m: [n]},
    "requests": {m: [n]}} (requests: seeds held fixed, val requests resampled)."""
    if not metrics:
        raise DecisionError("no methods to compare")
    Rs = {m.requests for m in metrics.values()}
    if len(Rs) != 1:
        raise DecisionError(f"methods were evaluated on different numbers of requests ({sorted(Rs)})")
    R = Rs.pop()
    f = STATISTICS[statistic]
    w = request_weights(R, n, seed) if R > 1 else np.ones((n, 1))
    out = {"point": {}, "seeds": {}, "two_level": {}, "requests": {}}
    for name, m in metrics.items():
        if m.seeds == 0:
            out["point"][name] = float("nan")
            for lv in ("seeds", "two_level", "requests"):
                out[lv][name] = np.full(n, np.nan)
            continue
        idx = _rng(seed, "seeds", name).integers(0, m.seeds, (n, m.seeds))
        v1 = m.values()  # [1, S]
        vw = m.values(w)  # [n, S]
        out["point"][name] = float(f(v1, None)[0])
        out["seeds"][name] = f(np.broadcast_to(v1, (n, m.seeds)), idx)
        out["two_level"][name] = f(vw, idx)
        out["requests"][name] = f(vw, None)
    return out


def compare(metrics: dict, higher: bool = True, statistic: str = "mean", n: int = N_BOOT, seed: int = SEED,
            confidence: float = CONFIDENCE) -> dict:
    """Every method's statistic with its seed-only and two-level CIs, every pair's decision, and the winner set.

    ``metrics``: {method: Metric}. ``higher``: whether a larger value is better (utility, AUC) or not (SLO
    violation, std). Pairs are keyed "a vs b" in the order of ``metrics``; ``decision`` is about the values
    (a's value ">" b's), ``better`` names the better method or is None when unresolved.
    """
    bs = bootstrap(metrics, statistic, n, seed)
    names = list(metrics)
    methods = {}
    for m in names:
        ci_s, ci_2 = _ci(bs["seeds"][m], confidence), _ci(bs["two_level"][m], confidence)
        req = bs["requests"][m]
        methods[m] = {"value": bs["point"][m], "ci_seeds": list(ci_s), "ci_two_level": list(ci_2),
                      "request_sd": float(np.nanstd(req, ddof=1)) if np.isfinite(req).sum() > 1 else float("nan"),
                      "seeds": metrics[m].seeds, "deterministic": metrics[m].deterministic}
    pairs = {}
    for a, b in itertools.combinations(names, 2):
        row = {"a": a, "b": b, "diff": bs["point"][a] - bs["point"][b]}
        for lv in LEVELS:
            lo, hi = _ci(bs[lv][a] - bs[lv][b], confidence)
            d = decision(lo, hi)
            row[f"ci_{lv}"] = [lo, hi]
            row[f"decision_{lv}" if lv != "two_level" else "decision"] = d
        d = row["decision"]
        row["better"] = None if d == "unresolved" else (a if (d == ">") == higher else b)
        pairs[f"{a} vs {b}"] = row
    return {"statistic": statistic, "higher_is_better": higher, "confidence": confidence, "n_boot": n,
            "methods": methods, "pairs": pairs, **winner_set(methods, pairs, higher)}


def pair(result: dict, a: str, b: str) -> dict:
    """The decision between a and b from a ``compare`` result, oriented as a vs b."""
    for k in (f"{a} vs {b}", f"{b} vs {a}"):
        if k in result["pairs"]:
            row = dict(result["pairs"][k])
            if k.startswith(f"{b} vs "):
                neg = lambda x: None if x is None else -x  # noqa: E731  (None: NaN after a JSON round trip)
                row["diff"] = neg(row["diff"])
                for lv in LEVELS:
                    lo, hi = row[f"ci_{lv}"]
                    row[f"ci_{lv}"] = [neg(hi), neg(lo)]
                flip = {">": "<", "<": ">", "unresolved": "unresolved"}
                row["decision"] = flip[row["decision"]]
                row["decision_seeds"] = flip[row["decision_seeds"]]
                row["a"], row["b"] = a, b
            return row
    missing = [m for m in (a, b) if m not in result["methods"]]
    raise DecisionError(f"no decision between {a} and {b}: {', '.join(missing) or 'the pair'} "
                        f"{'was' if len(missing) == 1 else 'were'} not run")


def winner_set(methods: dict, pairs: dict, higher: bool = True) -> dict:
    """{"best": the best point estimate, "winners": every method not separated from it (best first)}."""
    vals = {m: r["value"] for m, r in methods.items() if r["value"] is not None and np.isfinite(r["value"])}
    if not vals:
        return {"best": None, "winners": []}
    best = max(vals, key=vals.get) if higher else min(vals, key=vals.get)
    res = {"methods": methods, "pairs": pairs}
    winners = [best] + [m for m in vals if m != best and pair(res, best, m)["decision"] == "unresolved"]
    return {"best": best, "winners": winners}


def statement(row: dict, higher: bool = True) -> str:
    """'a > b' / 'b > a' (by value) or 'a ~ b (unresolved)' for one pair."""
    a, b, d = row["a"], row["b"], row["decision"]
    if d == "unresolved":
        return f"{a} ~ {b} (unresolved)"
    return f"{a} {d} {b}"


def across(decisions: dict) -> dict:
    """One pair's decisions under several conditions {condition: ">" | "<" | "unresolved"} ->
    {"verdict": "holds" | "flips" | "unresolved", "direction": ">" | "<" | None, "where": {...}}."""
    ds = list(decisions.values())
    if not ds:
        raise DecisionError("no conditions to compare across")
    resolved = {d for d in ds if d != "unresolved"}
    if resolved == {">", "<"}:
        verdict, direction = "flips", None
    elif len(resolved) == 1 and all(d != "unresolved" for d in ds):
        verdict, direction = "holds", resolved.pop()
    else:
        verdict, direction = "unresolved", (resolved.pop() if resolved else None)
    return {"verdict": verdict, "direction": direction, "where": dict(decisions)}


def fmt_ci(ci, nd: int = 3) -> str:
    lo, hi = ci
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "[—]"
    return f"[{lo:.{nd}f}, {hi:.{nd}f}]"


# ------------------------------------------------------------------------------- per-request metrics of a run
def request_rewards(quality: np.ndarray, latency_norm: np.ndarray, budgets, lam: float) -> np.ndarray:
    """[B, R, C] reward of every config for every (budget, val request): the env's reward on table means."""
    b = np.asarray(budgets, np.float64)[:, None, None]
    return quality[None].astype(np.float64) - lam * np.maximum(0.0, latency_norm[None].astype(np.float64) - b)


def auc_weights(steps, lo: float, hi: float) -> np.ndarray:
    """[E] weights of the eval points in ``analysis.auc_log_steps`` (the curve's mean over log env steps in
    [lo, hi] = sum_e weight_e * value_e); NaN weights when no eval point lies at or before ``lo``."""
    x = np.asarray(steps, np.float64).reshape(-1)
    if x.size == 0 or x[0] > lo:
        return np.full(x.size, np.nan)
    w = auc_widths(x, lo, hi)
    return np.where(w > 0, w, 0.0) / np.log(hi / lo)


def run_metrics(actions: np.ndarray, rewards: np.ndarray, quality: np.ndarray, latency_norm: np.ndarray, budgets,
                steps: np.ndarray, auc_range: tuple[float, float]) -> dict:
    """One method's Metrics from its greedy val actions [S, E, B, R] (every eval point; -1 = not evaluated).

    ``rewards`` [B, R, C] (``request_rewards``), ``quality``/``latency_norm`` [R, C] the val rows, ``steps`` [S, E]
    env steps per eval point. Returns {"final", "auc", "slo", "quality"}: final normalized utility, its AUC over
    log env steps, final SLO violation rate and final quality (greedy policy, val split, mean over budgets).
    """
    a = np.asarray(actions).astype(np.int64)
    S, Ev, B, R = a.shape
    u_rand = rewards.mean(-1)  # [B, R]
    u_orc = rewards.max(-1)
    bi, ri = np.arange(B)[:, None], np.arange(R)[None, :]
    u = rewards[bi, ri, np.maximum(a, 0)]  # [S, E, B, R]
    u = np.where(a >= 0, u, np.nan)
    ones = np.ones((B, R))
    fa = a[:, -1]  # [S, B, R]
    lat = latency_norm[ri, fa]
    w = np.stack([auc_weights(steps[s], *auc_range) for s in range(S)])  # [S, E]
    # forward-fill is not needed: the stored points are exactly the evaluated ones
    auc_num = np.einsum("se,sebr->sbr", w, u - u_rand[None, None])
    return {
        "final": Metric(u[:, -1] - u_rand[None], u_orc - u_rand),
        "auc": Metric(auc_num, u_orc - u_rand),
        "slo": Metric((lat > np.asarray(budgets, np.float64)[None, :, None]).astype(np.float64), ones),
        "quality": Metric(quality[ri, fa].astype(np.float64), ones),
    }
