"""Statistics behind the E5 outputs: pure numpy/scipy functions on per-seed arrays (no JAX, no files).

Conventions: ``NaN`` is "no value" (JSON ``null``); per-seed arrays are ``[S, E]`` (seeds x eval points) or
``[S]``; every function with randomness takes a fixed ``seed`` so a report rebuilt from JSON is identical.

- ``normalized_utility``: (U - U_random) / (U_oracle - U_random), the y-axis of every normalized curve.
- ``auc_log_steps``: area under a per-seed curve over log env steps, scaled to [0, 1] over a fixed range (the
  sample-efficiency scalar: the curve's mean over log env steps).
- ``first_crossing`` / ``crossings``: the first eval point where a metric meets a threshold (eval-point
  resolution, no interpolation); ``None`` where it never does.
- ``t_ci``: mean and Student-t 95% CI across seeds (frontier metrics).
- ``iqm`` / ``bootstrap_ci`` / ``iqm_ci``: interquartile mean (``scipy.stats.trim_mean(x, 0.25)``) with a
  percentile bootstrap CI (rliable, Agarwal et al. 2021, arXiv 2108.13264).
- ``probability_of_improvement``: P(X > Y) + 0.5 P(X = Y) = Mann-Whitney U / (n_x n_y), with a bootstrap CI
  that resamples each method's seeds independently (stratified by method).
- ``pareto_front``: non-dominated points (minimise latency, maximise quality).
- ``within_run_std``: per-seed std over the last third of eval points ("after convergence").
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 5000
BOOT_SEED = 0

_OPS = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less}


def arr(x) -> np.ndarray:
    """JSON lists (None = missing) -> float64 array with NaN."""
    if x is None:
        return np.array(np.nan)
    a = np.asarray(x, dtype=object)
    if a.dtype == object:
        a = np.vectorize(lambda v: np.nan if v is None else float(v), otypes=[np.float64])(a) if a.size else a.astype(np.float64)
    return np.asarray(a, dtype=np.float64)


def num(x):
    """A float, or None when it is not finite (what JSON gets)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


GAP_TOL = 1e-5  # reward units: an oracle-vs-random gap this small is float32 rounding, not a gap to close


def normalized_utility(u, u_random, u_oracle):
    """(U - U_random) / (U_oracle - U_random): the fraction of the oracle gap closed (1 = oracle, 0 = a uniformly
    random config), elementwise on numpy arrays. NaN where the gap is at most ``GAP_TOL`` (a budget at which every
    config is as good as the oracle, e.g. a table whose quality is constant at b = 1: nothing to close); averages
    over budgets leave those out (``mean_over_budgets``)."""
    u, u_random, u_oracle = (np.asarray(x) for x in (u, u_random, u_oracle))  # their own dtype: same arithmetic
    gap = u_oracle - u_random
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.abs(gap) > GAP_TOL, (u - u_random) / gap, np.nan)


def mean_over_budgets(x, axis: int = -1):
    """Mean over the budget axis ignoring NaN budgets (no gap to close); NaN when every budget is NaN."""
    x = np.asarray(x)  # its own dtype: without NaN budgets the same arithmetic as x.mean(axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


# --------------------------------------------------------------------------------------------- thresholds


def first_crossing(values, threshold: float, op: str = ">=") -> int | None:
    """Index of the first eval point whose value satisfies ``value <op> threshold``; None if none does.

    NaN values never satisfy the threshold.
    """
    if op not in _OPS:
        raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
    v = arr(values).reshape(-1)
    with np.errstate(invalid="ignore"):
        ok = _OPS[op](v, threshold) & np.isfinite(v)
    idx = np.flatnonzero(ok)
    return int(idx[0]) if idx.size else None


def first_sustained_crossing(values, threshold: float, op: str = ">=") -> int | None:
    """Index of the first eval point from which every later value satisfies the threshold (reached and held
    to the end of the run); None if the final value does not satisfy it."""
    if op not in _OPS:
        raise ValueError(f"op must be one of {sorted(_OPS)}, got {op!r}")
    v = arr(values).reshape(-1)
    with np.errstate(invalid="ignore"):
        ok = _OPS[op](v, threshold) & np.isfinite(v)
    if not ok.size or not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    return int(bad[-1] + 1) if bad.size else 0


def crossings(steps, values, threshold: float, op: str = ">=", wall=None) -> dict:
    """Per seed: first eval point meeting the threshold and the env steps (and wall time) spent to get there.

    Also: from which eval point on it holds to the end of the run (``held_*``, ``seeds_holding``).

    steps: [S, E] env steps per seed (or [E], shared); values: [S, E]; wall: optional [E] cumulative wall time
    shared by all seeds (they train together, vmapped). Seeds that never reach it get None. Means and medians
    are over the seeds that reached it (None when none did); ``seeds_reached`` says how many that is.
    """
    v = arr(values)
    if v.ndim == 1:
        v = v[None]
    S, E = v.shape
    st = arr(steps)
    st = np.broadcast_to(st if st.ndim == 2 else st[None], (S, E))
    w = None if wall is None else arr(wall).reshape(-1)
    idx = [first_crossing(v[s], threshold, op) for s in range(S)]
    steps_s = [None if i is None else float(st[s, i]) for s, i in enumerate(idx)]
    wall_s = [None if (i is None or w is None or i >= w.size) else num(w[i]) for i in idx]
    held = [first_sustained_crossing(v[s], threshold, op) for s in range(S)]
    reached = [x for x in steps_s if x is not None]
    reached_w = [x for x in wall_s if x is not None]
    return {
        "eval_index_per_seed": idx,
        "env_steps_per_seed": steps_s,
        "env_steps_mean": float(np.mean(reached)) if reached else None,
        "env_steps_median": float(np.median(reached)) if reached else None,
        "env_steps_min": float(np.min(reached)) if reached else None,
        "env_steps_max": float(np.max(reached)) if reached else None,
        "wall_time_s_per_seed": wall_s,
        "wall_time_s_mean": float(np.mean(reached_w)) if reached_w else None,
        "seeds_reached": len(reached),
        "seeds_total": S,
        "fraction_reached": len(reached) / S if S else None,
        "held_eval_index_per_seed": held,
        "env_steps_held_per_seed": [None if i is None else float(st[s, i]) for s, i in enumerate(held)],
        "seeds_holding": sum(i is not None for i in held),
        "env_steps_held_mean": (float(np.mean([float(st[s, i]) for s, i in enumerate(held) if i is not None]))
                                if any(i is not None for i in held) else None),
    }


# --------------------------------------------------------------------------------------- CIs across seeds


def t_ci(x, confidence: float = CONFIDENCE, axis: int = 0) -> dict:
    """Mean, sample std (ddof=1) and Student-t CI of the mean along ``axis`` (NaN entries ignored).

    With fewer than 2 finite values the std and CI are NaN; with zero spread the CI collapses to the mean.
    """
    a = np.moveaxis(arr(x), axis, 0)
    n = np.isfinite(a).sum(0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(a, 0)
        sd = np.where(n >= 2, np.nanstd(a, 0, ddof=1) if a.shape[0] >= 2 else np.nan, np.nan)
        tq = np.where(n >= 2, stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)), np.nan)
        half = tq * sd / np.sqrt(np.maximum(n, 1))
    return {"mean": mean, "std": sd, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def std_ci(x, confidence: float = CONFIDENCE) -> dict:
    """Sample std (ddof=1) of a 1-D sample with its chi-square CI (normal assumption); NaN if n < 2."""
    a = arr(x).reshape(-1)
    a = a[np.isfinite(a)]
    n = a.size
    if n < 2:
        return {"std": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": n}
    sd = float(a.std(ddof=1))
    lo = sd * math.sqrt((n - 1) / stats.chi2.ppf(0.5 + confidence / 2, n - 1))
    hi = sd * math.sqrt((n - 1) / stats.chi2.ppf(0.5 - confidence / 2, n - 1))
    return {"std": sd, "ci_low": lo, "ci_high": hi, "n": n}


# ------------------------------------------------------------------------------------------------- AUC


def auc_log_steps(steps, values, lo: float, hi: float) -> float:
    """Area under ``values`` over log env steps from ``lo`` to ``hi``, divided by log(hi / lo).

    The curve is a step function: at env step s it is the value of the last eval point at or before s (the policy
    one would deploy then); a NaN value keeps the previous one. The result is the curve's mean over log env steps
    in [lo, hi]: a constant curve c gives c, a curve that jumps from 0 to 1 at sqrt(lo * hi) gives 0.5. Points
    after the last eval point keep its value (a method that stops early, like supervised, holds its final policy).
    NaN if no eval point lies at or before ``lo``.
    """
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    x = arr(steps).reshape(-1)
    v = arr(values).reshape(-1)
    if x.size != v.size or x.size == 0:
        raise ValueError("steps and values must have the same non-zero length")
    if np.any(np.diff(x) < 0):
        raise ValueError("steps must be non-decreasing")
    for i in range(1, v.size):  # forward fill
        if not np.isfinite(v[i]):
            v[i] = v[i - 1]
    if x[0] > lo or not np.isfinite(v[np.searchsorted(x, lo, side="right") - 1]):
        return float("nan")
    w = auc_widths(x, lo, hi)
    return float(np.sum(w[w > 0] * v[w > 0]) / np.log(hi / lo))


def auc_widths(steps, lo: float, hi: float) -> np.ndarray:
    """[E] the log-env-step width over which each eval point's value holds in [lo, hi] (<= 0: none), so that
    ``auc_log_steps`` = sum of width x value over the positive widths / log(hi / lo)."""
    x = arr(steps).reshape(-1)
    return np.diff(np.append(np.log(np.clip(x, lo, hi)), np.log(hi)))


# ------------------------------------------------------------------------------------- IQM and bootstrap


def iqm(x, axis=-1):
    """Interquartile mean: mean of the middle 50% (scipy.stats.trim_mean(x, 0.25))."""
    return stats.trim_mean(x, 0.25, axis=axis)


def bootstrap_ci(samples, statistic, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic(*samples, axis=-1)``; each sample is resampled independently.

    Returns (NaN, NaN) when any sample has fewer than 2 values (no spread to resample); a sample with zero
    spread gives a zero-width CI at the statistic's value. Percentile rather than BCa: BCa needs a jackknife
    that is degenerate with 3-5 seeds.
    """
    data = tuple(np.asarray(s, dtype=np.float64).reshape(-1) for s in samples)
    if any(d.size < 2 for d in data):
        return (np.nan, np.nan)
    if all(np.ptp(d) == 0 for d in data):
        v = float(statistic(*data, axis=-1))
        return (v, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(data, statistic, n_resamples=n_resamples, confidence_level=confidence,
                              method="percentile", vectorized=True, paired=False, axis=-1,
                              rng=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def paired_ratio_ci(a, b, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                    seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile-bootstrap CI of the geometric-mean ratio a / b over paired positive measurements (e.g. two
    methods' per-round timings taken in the same interleaved round): the CI of the mean log ratio, resampled over the
    pairs, exponentiated. (NaN, NaN) with fewer than 2 pairs or a non-positive value."""
    a, b = arr(a).reshape(-1), arr(b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired_ratio_ci: {a.size} vs {b.size} measurements (need pairs)")
    if a.size < 2 or not (np.all(a > 0) and np.all(b > 0)):
        return (np.nan, np.nan)
    lo, hi = bootstrap_ci((np.log(a) - np.log(b),), np.mean, confidence, n_resamples, seed)
    return (float(np.exp(lo)), float(np.exp(hi)))


def overlap_set(values: dict, lowest: bool = True) -> list:
    """The methods not separated from the lowest (``lowest``) or highest value, by the resolution rule of one-off
    timings: ``values`` = {name: (value, resolution)}; two values are separated when their intervals
    value ± resolution do not overlap. The extreme method first, then the others in ``values``' order."""
    if not values:
        return []
    sign = 1.0 if lowest else -1.0
    best = min(values, key=lambda n: sign * values[n][0])
    v0, r0 = values[best]
    return [best] + [n for n, (v, r) in values.items()
                     if n != best and abs(v - v0) <= abs(r) + abs(r0)]


def iqm_ci(x, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES, seed: int = BOOT_SEED) -> dict:
    """IQM of the finite values of ``x`` with its percentile-bootstrap CI over seeds."""
    a = arr(x).reshape(-1)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"iqm": np.nan, "ci_low": np.nan, "ci_high": np.nan, "mean": np.nan, "n": 0}
    lo, hi = bootstrap_ci((a,), iqm, confidence, n_resamples, seed)
    return {"iqm": float(iqm(a)), "ci_low": lo, "ci_high": hi, "mean": float(a.mean()), "n": int(a.size)}


def _poi(x, y, axis=-1):
    x = np.moveaxis(np.asarray(x), axis, -1)[..., :, None]
    y = np.moveaxis(np.asarray(y), axis, -1)[..., None, :]
    return (x > y).mean((-2, -1)) + 0.5 * (x == y).mean((-2, -1))


def probability_of_improvement(x, y) -> float:
    """P(X > Y) + 0.5 P(X = Y) over all seed pairs = Mann-Whitney U_x / (n_x n_y) (rliable's definition)."""
    a, b = arr(x).reshape(-1), arr(y).reshape(-1)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return np.nan
    return float(_poi(a, b))


def probability_of_improvement_ci(x, y, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                                  seed: int = BOOT_SEED) -> dict:
    a, b = arr(x).reshape(-1), arr(y).reshape(-1)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    p = probability_of_improvement(a, b)
    if a.size < 2 or b.size < 2:
        return {"p": p, "ci_low": np.nan, "ci_high": np.nan}
    lo, hi = bootstrap_ci((a, b), _poi, confidence, n_resamples, seed)
    return {"p": p, "ci_low": lo, "ci_high": hi}


# ----------------------------------------------------------------------------------------------- frontier


def pareto_front(latency, quality) -> np.ndarray:
    """Indices of the non-dominated points (lower latency and higher quality are better), by latency.

    A point is dominated if another has latency <= and quality >= with at least one strict. Exact duplicates
    keep the first index. NaN points are ignored.
    """
    lat, q = arr(latency).reshape(-1), arr(quality).reshape(-1)
    ok = np.flatnonzero(np.isfinite(lat) & np.isfinite(q))
    order = ok[np.lexsort((-q[ok], lat[ok]))]  # latency ascending, ties: best quality first
    front, best_q = [], -np.inf
    for i in order:
        if q[i] > best_q:
            front.append(int(i))
            best_q = q[i]
    return np.asarray(front, dtype=np.int64)


def dominated_by(lat: float, q: float, front_lat, front_q) -> bool:
    """True if some point of the front has latency <= lat and quality >= q, one of them strictly."""
    fl, fq = arr(front_lat), arr(front_q)
    return bool(np.any((fl <= lat) & (fq >= q) & ((fl < lat) | (fq > q))))


# ----------------------------------------------------------------------------------------------- stability


def convergence_window(num_evals: int, frac: float = 1 / 3, min_points: int = 2) -> int:
    """First eval index of the "after convergence" window: the last ``frac`` of eval points (>= min_points,
    never including eval point 0, the untrained policy, when there are more points)."""
    k = max(min_points, math.ceil(frac * num_evals))
    k = min(k, max(num_evals - 1, 1))
    return num_evals - k


def within_run_std(values, frac: float = 1 / 3, min_points: int = 2) -> dict:
    """Std over the eval points in each seed's convergence window (ddof=0), and its mean over seeds."""
    v = arr(values)
    if v.ndim == 1:
        v = v[None]
    start = convergence_window(v.shape[1], frac, min_points)
    w = v[:, start:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_seed = np.where(np.isfinite(w).sum(1) >= 2, np.nanstd(w, 1), np.nan)
        mean = np.nanmean(per_seed) if np.isfinite(per_seed).any() else np.nan
    return {"per_seed": per_seed, "mean": mean, "first_eval_index": start, "num_points": v.shape[1] - start}
