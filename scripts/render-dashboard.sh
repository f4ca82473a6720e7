#!/usr/bin/env bash
# Renders docs/grafana-dashboard.png: runs a scripted workload through the engine (fake backend,
# every monitor on) that prints metrics snapshots over virtual time, then draws the dashboard's
# panels from them with matplotlib, installed into a throw-away venv from PyPI.
#
#   bash scripts/render-dashboard.sh [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/grafana-dashboard.png}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo run -q --release -p vana-sandbox-monitor --example metrics_series > "$work/series.json"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q matplotlib
"$work/venv/bin/python" scripts/render-dashboard.py docs/grafana-dashboard.json "$work/series.json" "$out"
