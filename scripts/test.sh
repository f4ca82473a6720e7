#!/usr/bin/env bash
# Installs what the test suite needs and runs all of it: rustfmt, clippy, every test, the examples.
# Run as root (the native backend creates namespaces, cgroups and mounts): sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the sandbox tests need root; run it as root (CI does)." >&2
  exit 1
fi

# Toolchains the language tests run: the system python3 and node, bash.
missing=()
[ -x /usr/bin/python3 ] || missing+=(python3)
{ [ -x /usr/bin/node ] || [ -x /usr/bin/nodejs ] || [ -x /usr/local/bin/node ]; } || missing+=(nodejs)
[ -x /usr/bin/bash ] || [ -x /bin/bash ] || missing+=(bash)
[ -x /usr/bin/go ] || missing+=(golang-go)
command -v cc >/dev/null || missing+=(gcc)   # rustc links through cc
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

command -v rustc >/dev/null || { echo "scripts/test.sh: rustc not found (the Rust language tests use the host's toolchain)" >&2; exit 1; }

echo "== host"
uname -r
nproc

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"

echo "== examples"
cargo run -q -p vana-sandbox --example hello

echo "== the README's snippet"
cargo run -q -p vana-sandbox -- run --lang python --code 'print("Hello from the sandbox")'

# One closing line for the whole suite (cargo prints one per test binary, the last often a
# doc-test binary with nothing in it).
summary=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { printf "%d passed, %d failed", p, f }' "$log")
echo "tests: ${summary}"
