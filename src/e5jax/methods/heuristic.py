"""Training-free heuristic: the largest config whose estimated normalized latency fits the budget.

Latency profiling only (quality is never looked at): the same random-cell profiling as the LUT, then per
(task_type, budget) the seen config with the highest estimated normalized latency that is still <= b
("spend the whole budget"); if none fits, the seen config with the lowest estimated latency; the full config
while nothing is seen for a task.
"""

from __future__ import annotations

import jax.numpy as jnp

from e5jax import policy as P
from e5jax.methods import common as C
from e5jax.methods import lut


def choose(seen, est_latency, budgets):
    """seen, est_latency [T, C]; budgets [B] -> config [T, B]."""
    fits = seen[:, None, :] & (est_latency[:, None, :] <= budgets[None, :, None])  # [T, B, C]
    largest_fit = jnp.argmax(jnp.where(fits, est_latency[:, None, :], -jnp.inf), -1)
    fastest = jnp.argmin(jnp.where(seen, est_latency, jnp.inf), -1)  # [T]
    choice = jnp.where(fits.any(-1), largest_fit, fastest[:, None])
    return jnp.where(seen.any(-1)[:, None], choice, est_latency.shape[-1] - 1)


def policy(state) -> P.LookupPolicy:
    est = state.latency_sum / jnp.maximum(state.count, 1)
    return P.LookupPolicy(choose(state.count > 0, est, state.budgets))


METHOD = C.Method("heuristic", lut.Config, lut.init, lut.collect, lut.learn, policy, lut.steps_per_update, keys=3,
                  cumulative=lut.CUMULATIVE, color=1)
