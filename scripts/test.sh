#!/usr/bin/env bash
# Installs what the test suite needs and runs all of it: rustfmt, clippy, every test, the examples.
# Run as root (the native backend creates namespaces, cgroups and mounts): sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# One build per run: no incremental state (2.5 GB of a fresh run's disk).
export CARGO_INCREMENTAL=0

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
command -v openssl >/dev/null || missing+=(openssl)   # the network tests' local CA
# Packages: the trusted host-side installers (pip for wheels, npm with --ignore-scripts). A
# Node.js from elsewhere (NodeSource) brings its own npm; Debian's `npm` package only when none.
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
[ -x /usr/bin/npm ] || missing+=(npm)
# Session charts: Debian's matplotlib for the system python3 the sandbox runs.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null || missing+=(python3-matplotlib)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

command -v rustc >/dev/null || { echo "scripts/test.sh: rustc not found (the Rust language tests use the host's toolchain)" >&2; exit 1; }

echo "== docker (engine, runsc, runtime image)"
bash scripts/docker-setup.sh

echo "== host"
uname -r
nproc

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
log=$(mktemp)
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"

echo "== bench smoke (every criterion bench once, in test mode: no timings asserted)"
cargo test --workspace --bench '*' 2>&1 | tee -a "$log"

echo "== unit tests of core, policy and languages as an unprivileged user"
bash scripts/unprivileged-unit-tests.sh | tee -a "$log"

echo "== python bindings (pip install ./bindings-python into a fresh venv, then pytest)"
venv_dir=$(mktemp -d)
trap 'rm -f "$log" "${pylog:-}"; rm -rf "$venv_dir"' EXIT
if ! python3 -m venv "$venv_dir/venv" 2>/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq python3-venv
  /usr/bin/python3 -m venv "$venv_dir/venv"
fi
py="$venv_dir/venv/bin/python"
"$py" -m pip install -q --upgrade pip
CARGO_TARGET_DIR="$PWD/target" "$py" -m pip install -q ./bindings-python pytest
if ! "$py" -m pip install -q google-adk; then
  echo "google-adk did not install here: the through-ADK test will be skipped, loudly"
  export VANA_SANDBOX_NO_ADK=1
fi
pylog=$(mktemp)
"$py" -m pytest -q -rs bindings-python/tests 2>&1 | tee "$pylog"

echo "== python examples (the README's session and ADK agent)"
"$py" bindings-python/examples/session.py
if [ "${VANA_SANDBOX_NO_ADK:-}" != 1 ]; then
  "$py" bindings-python/examples/adk_agent.py
fi

echo "== python throughput smoke (bindings-python/benches/throughput.py; no figure asserted)"
"$py" bindings-python/benches/throughput.py 24 4

echo "== fuzz (every target, ${FUZZ_SECONDS:-30}s each)"
bash scripts/fuzz.sh

echo "== deploy/kubernetes (every manifest against the API schemas, offline)"
bash scripts/validate-deploy.sh

echo "== examples"
cargo run -q -p vana-sandbox --example hello
cargo run -q -p vana-sandbox --example session
cargo run -q -p vana-sandbox-benches --example memory -- 2

echo "== the README's snippet"
cargo run -q --release -p vana-sandbox -- run --lang python --code 'print("Hello from the sandbox")'

# One closing line for the whole suite (cargo prints one per test binary, the last often a
# doc-test binary with nothing in it).
summary=$(awk '/^test result:/ || / passed.* in [0-9.]+s/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { printf "%d passed, %d failed", p, f }' "$log" "$pylog")
echo "tests: ${summary}"
