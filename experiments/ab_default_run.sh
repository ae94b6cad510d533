#!/usr/bin/env bash
# Default run, old code vs this checkout, interleaved on the same machine: per round, for each code, a cold run
# (empty compile cache) then a warm one (the cache it filled). Prints one line per run (process wall, user, sys,
# the run's own total, training, process / training, init + compile phase and overhead-analysis seconds, load before) and checks that old and new wrote the
# same curves, per-budget values and references. Other jobs on a shared machine move single runs by +-3-5 s:
# compare rounds, not one pair.
#
#   bash experiments/ab_default_run.sh OLD_REV [ROUNDS] [WORKDIR]     # e.g. OLD_REV=HEAD~3, ROUNDS=2
set -euo pipefail
old_rev=${1:?usage: ab_default_run.sh OLD_REV [ROUNDS] [WORKDIR]}
rounds=${2:-2}
work=${3:-$(mktemp -d /tmp/e5ab.XXXXXX)}
repo=$(cd "$(dirname "$0")/.." && pwd)
py="$repo/.venv/bin/python"
git -C "$repo" worktree add -f --detach "$work/old" "$old_rev" >/dev/null
trap 'git -C "$repo" worktree remove --force "$work/old"' EXIT
for round in $(seq "$rounds"); do
  for v in old new; do
    src="$repo/src"; [ "$v" = old ] && src="$work/old/src"
    rm -rf "$work/cache_$v"
    for kind in cold warm; do
      out="$work/${v}_$kind"
      load=$(cut -d' ' -f1-3 /proc/loadavg)
      PYTHONPATH="$src" E5JAX_JAX_CACHE="$work/cache_$v" /usr/bin/time -f "%e %U %S" -o "$work/time.txt" \
        "$py" -m e5jax run --out "$out" --overwrite --no-progress > "$work/${v}_${kind}_$round.log" 2>&1
      "$py" - "$out" "$round $v $kind" "$(cat "$work/time.txt")" "$load" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1] + "/e5_training_curves.json"))
wall, user, sys_ = sys.argv[3].split()
train = sum(m["train_time_s"] or 0.0 for m in d["methods"].values())  # None: below resolution
ph = d["meta"].get("phases_s") or {}  # recorded by runs from 2026-12-04 on
print(f"{sys.argv[2]:16s} process {wall:>7s} s (user {user}, sys {sys_})  run {d['meta']['total_wall_time_s']:6.1f} s  "
      f"training {train:5.1f} s  process/training {float(wall) / train if train else float('nan'):.2f}x  "
      f"init+compile {ph.get('init_and_compile_s', float('nan')):5.1f} s  "
      f"overhead analysis {d['meta'].get('overhead_analysis_s', float('nan')):4.1f} s  load before {sys.argv[4]}")
EOF
    done
  done
done
"$py" - "$work/old_cold" "$work/new_cold" <<'EOF'
import json, sys
a, b = (json.load(open(p + "/e5_training_curves.json")) for p in sys.argv[1:3])
diff = [f"{n}.{k}" for n in a["methods"] for k in ("curves", "per_budget", "env_steps", "updates")
        if json.dumps(a["methods"][n][k], sort_keys=True) != json.dumps(b["methods"].get(n, {}).get(k), sort_keys=True)]
diff += ["references"] if json.dumps(a["references"], sort_keys=True) != json.dumps(b["references"], sort_keys=True) else []
print("results: identical" if not diff else "results differ: " + ", ".join(diff))
EOF
echo "outputs in $work"
