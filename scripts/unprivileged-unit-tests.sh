#!/usr/bin/env bash
# Runs the unit tests of the crates that need no privilege (core, policy, languages, monitoring) as an
# unprivileged user, to show they do not depend on root. Run as root (it drops to `nobody`).
set -euo pipefail
cd "$(dirname "$0")/.."
bins=$(cargo test -q -p vana-sandbox-core -p vana-sandbox-policy -p vana-sandbox-lang -p vana-sandbox-monitor --no-run \
         --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
[ -n "$bins" ] || { echo "no unit-test binaries found" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
total=0
for b in $bins; do
  cp "$b" "$dir/"
  name=$(basename "$b")
  # A fresh TMPDIR the test user owns; HOME likewise (nothing of root's is reachable).
  tmp="$dir/tmp-$name"; mkdir -m 700 "$tmp"; chown 65534:65534 "$tmp"
  out=$(cd "$dir" && setpriv --reuid=65534 --regid=65534 --clear-groups --reset-env \
          env TMPDIR="$tmp" HOME="$tmp" "./$name" -q 2>&1) || { echo "$out"; exit 1; }
  n=$(echo "$out" | sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p')
  total=$((total + ${n:-0}))
  echo "  $name as uid $(setpriv --reuid=65534 id -u): ${n:-0} passed"
done
echo "unit tests as an unprivileged user: $total passed"
