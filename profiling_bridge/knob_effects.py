"""Per-knob effects of a profile table: each level of one knob with the other knobs at their full level.

For every knob and level: mean quality over the requests, and mean latency relative to the request's full-config
latency; and the same quality per task type (``by_task``: whether a knob costs every kind of request the same). ``e5jax-bridge knob-effects --table A.npz [--table B.npz ...]`` prints them side by side (and writes JSON
with ``--out``); docs/measured_table.md compares the measured easy-vqa table with the synthetic default this way.
"""

from __future__ import annotations

import numpy as np

from e5jax.table import ProfileTable


def level_configs(table: ProfileTable) -> dict[str, dict[int, int]]:
    """{knob: {level: config index}}: each level of one knob with the other knobs at their full level."""
    values = table.config_levels()  # [C, K] knob values of every config
    out = {}
    for j, name in enumerate(table.knobs):
        out[name] = {}
        for level in table.knobs[name]:
            want = values[table.full_config].copy()
            want[j] = level
            out[name][int(level)] = int(np.flatnonzero((values == want).all(-1))[0])
    return out


def knob_effects(table: ProfileTable) -> dict:
    rel = table.latency_ms / table.latency_ms[:, [table.full_config]]
    tasks = np.asarray(table.task_types)
    out, by_task = {}, {t: {"requests": int((tasks == t).sum()), "knobs": {}} for t in table.task_names}
    for name, levels in level_configs(table).items():
        rows = {}
        for level, c in levels.items():
            rows[str(int(level))] = dict(quality=round(float(table.quality[:, c].mean()), 4),
                                         latency_over_full=round(float(rel[:, c].mean()), 4))
            for t in table.task_names:
                by_task[t]["knobs"].setdefault(name, {})[str(int(level))] = round(
                    float(table.quality[tasks == t, c].mean()), 4)
        out[name] = rows
    for t in table.task_names:
        by_task[t]["full_quality"] = round(float(table.quality[tasks == t, table.full_config].mean()), 4)
        by_task[t]["smallest_quality"] = round(float(table.quality[tasks == t, 0].mean()), 4)
    return dict(full_config=table.config_label(table.full_config),
                full_quality=round(float(table.quality[:, table.full_config].mean()), 4),
                smallest_over_full_latency=round(float(rel[:, 0].mean()), 4),
                smallest_quality=round(float(table.quality[:, 0].mean()), 4), knobs=out, by_task=by_task)


def format_effects(path: str, e: dict) -> str:
    lines = [f"{path}: full {e['full_config']} quality {e['full_quality']:.3f}; smallest config: quality "
             f"{e['smallest_quality']:.3f}, latency/full {e['smallest_over_full_latency']:.3f}"]
    for name, rows in e["knobs"].items():
        cells = "  ".join(f"{lv}: q {r['quality']:.3f} lat {r['latency_over_full']:.3f}" for lv, r in rows.items())
        lines.append(f"  {name:<14} {cells}")
    if e.get("by_task"):
        lines.append("  quality per task type (each knob level with the others at full):")
        for t, d in e["by_task"].items():
            knobs = "  ".join(f"{name} " + "/".join(f"{q:.2f}" for q in rows.values()) for name, rows in d["knobs"].items())
            lines.append(f"    {t:<12} n={d['requests']:<5} full {d['full_quality']:.3f} smallest {d['smallest_quality']:.3f}  "
                         f"{knobs}")
    return "\n".join(lines)
