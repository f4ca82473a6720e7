#!/usr/bin/env bash
# Runs every fuzz target for a short budget (default 30 s each; FUZZ_SECONDS to change), from the
# seed corpora in fuzz/corpus (a run's new inputs are kept in a scratch copy, not in the repo).
# A crash fails the script and leaves its input in fuzz/artifacts/<target>/; fix it and add the
# input as a regression test. Needs the nightly toolchain and cargo-fuzz (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$target"
  cp -r corpus/"$target"/. "$scratch/$target"/ 2>/dev/null || true
  echo "== fuzz $target (${seconds}s)"
  cargo +nightly fuzz run -O "$target" "$scratch/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E "^(#[0-9]+\s+DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY|Done)" || true
  test "${PIPESTATUS[0]}" -eq 0 || { echo "fuzz target $target failed"; exit 1; }
done
echo "fuzz: every target ran ${seconds}s clean"
