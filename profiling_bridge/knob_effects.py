"""Per-knob effects of a profile table: each level of one knob with the other knobs at their full level.

For every knob and level: mean quality over the requests, and mean latency relative to the request's full-config
latency. ``e5jax-bridge knob-effects --table A.npz [--table B.npz ...]`` prints them side by side (and writes JSON
with ``--out``); docs/measured_table.md compares the measured easy-vqa table with the synthetic default this way.
"""

from __future__ import annotations

import numpy as np

from e5jax.table import ProfileTable


def knob_effects(table: ProfileTable) -> dict:
    names = list(table.knobs)
    sizes = [len(table.knobs[k]) for k in names]
    idx = np.stack(np.unravel_index(np.arange(table.num_configs), sizes), -1)  # [C, K] level indices
    full = np.array(sizes) - 1
    rel = table.latency_ms / table.latency_ms[:, [table.full_config]]
    out = {}
    for j, name in enumerate(names):
        rows = {}
        for lv, level in enumerate(table.knobs[name]):
            want = full.copy()
            want[j] = lv
            c = int(np.flatnonzero((idx == want).all(-1))[0])
            rows[str(int(level))] = dict(quality=round(float(table.quality[:, c].mean()), 4),
                                         latency_over_full=round(float(rel[:, c].mean()), 4))
        out[name] = rows
    return dict(full_config=table.config_label(table.full_config),
                full_quality=round(float(table.quality[:, table.full_config].mean()), 4),
                smallest_over_full_latency=round(float(rel[:, 0].mean()), 4),
                smallest_quality=round(float(table.quality[:, 0].mean()), 4), knobs=out)


def format_effects(path: str, e: dict) -> str:
    lines = [f"{path}: full {e['full_config']} quality {e['full_quality']:.3f}; smallest config: quality "
             f"{e['smallest_quality']:.3f}, latency/full {e['smallest_over_full_latency']:.3f}"]
    for name, rows in e["knobs"].items():
        cells = "  ".join(f"{lv}: q {r['quality']:.3f} lat {r['latency_over_full']:.3f}" for lv, r in rows.items())
        lines.append(f"  {name:<14} {cells}")
    return "\n".join(lines)
