"""Outputs derived from a finished run's e5_training_curves.json (placeholder until the outputs issue lands)."""

from __future__ import annotations

from pathlib import Path


def write_outputs(out: Path) -> list[Path]:
    return []


def report_from_args(args) -> int:
    from e5jax.cli import UsageError

    d = Path(args.dir)
    if not (d / "e5_training_curves.json").is_file():
        raise UsageError(f"{d}: no e5_training_curves.json (not a finished e5jax run directory)")
    write_outputs(d)
    return 0
