#!/bin/bash
# The lab-level hang check (docs/hangs.md): the sweep of tests/test_sweep.py's tune spec (3 PPO trials x 2 seeds,
# 2 lambdas x lut/ppo, the known-oracle table of 60 requests) on 4 fake CPU devices, N times in a row, each under
# `timeout 400`; prints a line per run and the counts.   bash experiments/fake_device_loop.sh [N=20] [DIR]
set -u
N=${1:-20}; DIR=${2:-$(mktemp -d)}; mkdir -p "$DIR"; ROOT=$(cd "$(dirname "$0")/.." && pwd); PY=${PY:-$ROOT/.venv/bin/python}
(cd "$ROOT/tests" && "$PY" - "$DIR" <<'PYEOF'
import sys
from pathlib import Path
import test_sweep as T
from conftest import make_known_oracle_table
d = Path(sys.argv[1])
make_known_oracle_table(R=60).save(d / "t.npz")
(d / "base.toml").write_text(T.BASE)
(d / "tune.toml").write_text(T.SPEC.format(base=d / "base.toml", phases='["tune", "lambda"]')
                             .replace("[1e-4, 1e-2]", "[1e-4, 1e-3]").replace("phases =", "widen_rounds = 0\nphases ="))
PYEOF
)
ok=0; hung=0; fail=0
for i in $(seq 1 "$N"); do
  rm -rf "$DIR/out"; s=$(date +%s.%N)
  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu E5JAX_OVERHEAD=off timeout 400 \
    "$PY" -m e5jax sweep --config "$DIR/tune.toml" --table "$DIR/t.npz" --out "$DIR/out" --no-progress > "$DIR/run.log" 2>&1
  rc=$?; e=$(date +%s.%N)
  if [ $rc -eq 0 ]; then ok=$((ok+1)); elif [ $rc -eq 124 ]; then hung=$((hung+1)); else fail=$((fail+1)); fi
  echo "run $i rc=$rc $(echo "$e - $s" | bc) s load $(cut -d' ' -f1 /proc/loadavg)"
done
echo "runs=$N ok=$ok timeouts=$hung failures=$fail ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), jax $("$PY" -c 'import jax; print(jax.__version__)'))"
