#!/usr/bin/env bash
# Packages, first request against the cached one: the plan's request
#   {"language":"python","code":"import requests, numpy; ...","packages":["requests","numpy"]}
# through the CLI (`exec --json`, native backend), each round with a fresh package cache
# (VANA_SANDBOX_PACKAGE_DIR): the first run resolves and downloads the wheels from PyPI, the
# second is served from the cache with no network. Prints every run and the medians: wall time
# of the CLI, the time spent preparing packages (`packages.prepare_time` of the result) and the
# program's own time. Run as root (the native backend); needs PyPI.
#
#   scripts/bench-packages.sh                  # 5 rounds, release build
#   BENCH_ROUNDS=3 BENCH_PROFILE=debug scripts/bench-packages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${BENCH_ROUNDS:-5}"
profile="${BENCH_PROFILE:-release}"

if [ "$profile" = release ]; then
  cargo build -q --release -p vana-sandbox
else
  cargo build -q -p vana-sandbox
fi
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
cli="$target/$profile/vana-sandbox"

work=$(mktemp -d /var/tmp/vana-bench-packages.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat > "$work/plan.json" <<'JSON'
{"language":"python","code":"import requests, numpy; print(numpy.arange(3).sum())","packages":["requests","numpy"]}
JSON

for i in $(seq "$rounds"); do
  cache="$work/cache-$i"
  for run in first cached; do
    begun=$(date +%s.%N)
    VANA_SANDBOX_PACKAGE_DIR="$cache" "$cli" exec --json "$work/plan.json" > "$work/out.json"
    ended=$(date +%s.%N)
    python3 - "$run" "$begun" "$ended" "$work/out.json" <<'PY' | tee -a "$work/runs"
import json, sys
run, begun, ended, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
r = json.load(open(path))
p = r.get("packages") or {}
assert r["status"] == "success" and r["output"] == "3\n", r
assert p.get("cached") == (run == "cached"), p
print(f"{run} wall={ended - begun:.2f} prepare={p['prepare_time']:.2f} program={r['execution_time']:.2f} "
      f"packages={len(p['installed'])} size_mb={p['size_bytes'] / 2**20:.0f}")
PY
  done
  rm -rf "$cache"
done

python3 - "$work/runs" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for run in ("first", "cached"):
    vals = [dict(kv.split("=") for kv in r[1:]) for r in rows if r[0] == run]
    med = {k: statistics.median(float(v[k]) for v in vals) for k in ("wall", "prepare", "program")}
    print(f"median {run:6} ({len(vals)} runs): wall {med['wall']:.2f} s, preparing packages "
          f"{med['prepare']:.2f} s, the program {med['program']:.2f} s")
PY
