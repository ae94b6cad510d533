"""The methods under comparison: one ``common.Method`` record each (``METHOD`` in its module), registered here.

A new method is a module with a ``Config`` (frozen dataclass; ``common.traced`` fields are its traced
hyperparameters), ``init``, ``collect``, ``learn``, ``policy`` and ``steps_per_update``, bundled in a
``common.Method``, and one ``register`` call. Nothing else in the lab names a method.
"""

from e5jax.methods import dpo, grpo, heuristic, knn_lut, lut, ppo, supervised
from e5jax.methods.common import Method

METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (a run config's ``methods``, a sweep's ``[space.<name>]``, every report);
    a name already registered to another record is refused."""
    old = METHODS.get(method.name)
    if old is not None and old is not method:
        raise ValueError(f"a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


for _m in (lut, knn_lut, heuristic, supervised, ppo, dpo, grpo):
    register(_m.METHOD)
