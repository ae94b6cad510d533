"""Table I/O benchmark: write and load a synthetic table with many requests as .npz and as long-form .csv
(requests x configs rows), the load average recorded; writes JSON.

    python experiments/bench_table_load.py                      # 10^5 requests (10^7 CSV rows, ~1.5 GB on disk)
    python experiments/bench_table_load.py --requests 2000 --out /tmp/tl.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT_DIR, bench_meta  # noqa: E402

from e5jax.synth import generate  # noqa: E402
from e5jax.table import load_table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--out", default=str(OUT_DIR / "table_load.json"))
    args = ap.parse_args()
    doc = {"schema": "e5jax/bench_table_load/v1", "meta": bench_meta(), "requests": args.requests, "formats": {}}
    t = generate(seed=1, num_requests=args.requests)
    doc["configs"] = t.num_configs
    with tempfile.TemporaryDirectory(prefix="bench_table_") as d:
        for ext in ("npz", "csv"):
            p = Path(d) / f"t.{ext}"
            t0 = time.perf_counter()
            t.save(p)
            w = time.perf_counter() - t0
            l0 = os.getloadavg()
            t0 = time.perf_counter()
            u = load_table(p)
            r = time.perf_counter() - t0
            same = all(np.array_equal(getattr(t, f), getattr(u, f)) for f in ("features", "request_ids", "split"))
            same &= bool(np.allclose(u.latency_ms, t.latency_ms, rtol=1e-6) and np.allclose(u.quality, t.quality, rtol=1e-6))
            doc["formats"][ext] = {"write_s": w, "load_s": r, "bytes": p.stat().st_size, "rows": t.num_requests * (
                t.num_configs if ext == "csv" else 1), "round_trip_equal": same, "load_average_before_load": l0}
            print(ext, {k: v for k, v in doc["formats"][ext].items() if k != "load_average_before_load"}, flush=True)
            p.unlink()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
