#!/usr/bin/env bash
# A bounded load test of `vana-sandbox serve` on loopback, as root (the native backend): starts
# a server on tcp:127.0.0.1 (a free port) with one tenant, runs server/examples/load.rs against
# it — LOAD_REQUESTS mixed operations (executions in Python and Bash, streamed executions,
# refused requests, sessions with a cell and a file round trip, /readyz, /metrics) from
# LOAD_CLIENTS concurrent clients, each retried after 429's Retry-After until answered — for
# LOAD_ROUNDS rounds, then stops the server with SIGTERM and checks that it exits cleanly.
# Prints the JSON summary: answers by status, lost results, 5xx, 429s, p50/p99 latency, runs
# per second, the server's RSS before and after each round.
#
#   scripts/load-server.sh                    # 2,000 operations, 32 clients, 2 rounds (debug build)
#   PROFILE=release scripts/load-server.sh    # against a release build
#   LOAD_REQUESTS=200 LOAD_ROUNDS=1 scripts/load-server.sh   # quick
#   LOAD_TRIVIAL=1 LOAD_CLIENTS=2 scripts/load-server.sh      # only print() in Python, to set beside
#                                                             # `vana-sandbox load` (no HTTP)
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${LOAD_REQUESTS:-2000}"
clients="${LOAD_CLIENTS:-32}"
rounds="${LOAD_ROUNDS:-2}"
concurrency="${LOAD_CONCURRENCY:-$(nproc)}"
queue="${LOAD_QUEUE:-16}"
profile="${PROFILE:-debug}"
flag=()
[ "$profile" = release ] && flag=(--release)

cargo build -q "${flag[@]}" -p vana-sandbox --bin vana-sandbox
cargo build -q "${flag[@]}" -p vana-sandbox-server --example load
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$profile"

dir=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

key=$("$target/vana-sandbox" keygen --tenant load | sed -n 1p)
hash=$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)
cat >"$dir/server.toml" <<EOF
[server]
listen = "tcp:127.0.0.1:0"
shutdown_grace_secs = 10

[[tenant]]
name = "load"
keys = [{ sha256 = "$hash" }]
EOF

"$target/vana-sandbox" serve --config "$dir/server.toml" \
  --max-concurrency "$concurrency" --max-queue "$queue" --max-sessions 64 \
  >"$dir/out" 2>"$dir/err" &
server_pid=$!
for _ in $(seq 1 300); do
  grep -q '^listening on' "$dir/out" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$dir/out" | head -1)
[ -n "$addr" ] || { cat "$dir/err" >&2; exit 1; }
echo "server $server_pid on $addr: max_concurrency=$concurrency max_queue=$queue, $(nproc) cores, $profile build" >&2

status=0
"$target/examples/load" --addr "$addr" --key "$key" --pid "$server_pid" \
  --requests "$requests" --clients "$clients" --rounds "$rounds" ${LOAD_TRIVIAL:+--trivial} || status=$?

kill -TERM "$server_pid"
if wait "$server_pid"; then
  echo "server stopped cleanly: $(tail -1 "$dir/err")" >&2
else
  echo "server exit status $?: $(cat "$dir/err")" >&2
  status=1
fi
server_pid=""
exit "$status"
