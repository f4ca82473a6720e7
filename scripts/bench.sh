#!/usr/bin/env bash
# The side-by-side comparison, in one run on this machine (as root): Python `print(1)` bare,
# under bubblewrap's bare namespaces, through our CLI (native, every layer), `docker run --rm`,
# `docker exec` into a running container, and our CLI on Docker (runc); then throughput — 1,000
# trivial runs at concurrency 8 through the CLI's `load` (one process, one engine) against bare
# Python and against bubblewrap's bare namespaces (what a fresh set of namespaces per run costs
# on these cores, before any of our layers). Prints hyperfine's medians and the ratios the speed
# issue asks about.
#
#   scripts/bench.sh            # full run (hyperfine --runs 40)
#   BENCH_RUNS=10 BENCH_LOAD=200 scripts/bench.sh   # quick
#
# Installs hyperfine and bubblewrap from Debian if missing; the Docker rows need the engine and
# the runtime image (scripts/docker-setup.sh) and are skipped, loudly, without them.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${BENCH_RUNS:-40}"
load="${BENCH_LOAD:-1000}"

missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v bwrap >/dev/null || missing+=(bubblewrap)
if [ "${#missing[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build -q --release -p vana-sandbox
# The binary just built (wherever the target directory is configured), never a stale one.
cli="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/vana-sandbox"

out=$(mktemp -d)
trap 'rm -rf "$out"; docker rm -f vana-bench-exec >/dev/null 2>&1 || true' EXIT
py=/usr/bin/python3
bwrap=(bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/bin /bin --proc /proc --dev /dev --tmpfs /tmp)
cmds=(
  "bare:$py -c 'print(1)'"
  "bwrap:${bwrap[*]} $py -c 'print(1)'"
  "vana_native:$cli run --lang python --code 'print(1)'"
)
# The default runtime image of the newest layout (not the larger runtime-full).
image=$(docker images vana-sandbox/runtime --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | sort -t: -k2 -V | tail -1 || true)
if [ -n "$image" ] && docker info >/dev/null 2>&1; then
  docker run -d --rm --name vana-bench-exec --network none "$image" sleep 3600 >/dev/null
  cmds+=(
    "docker_run:docker run --rm --network none $image python3 -c 'print(1)'"
    "docker_exec:docker exec vana-bench-exec python3 -c 'print(1)'"
    "vana_docker:$cli run --backend docker --lang python --code 'print(1)'"
  )
else
  echo "!! Docker or the runtime image is missing: the Docker rows are skipped (run scripts/docker-setup.sh)" >&2
fi

names=(); args=()
for c in "${cmds[@]}"; do names+=("${c%%:*}"); args+=(-n "${c%%:*}" "${c#*:}"); done
hyperfine -N --warmup 3 --runs "$runs" --export-json "$out/startup.json" "${args[@]}" >/dev/null

# hyperfine runs each command's runs in one block, so the host's drift between blocks moves the
# ratios by tens of percent here; the native rows are also timed interleaved, one run of each in
# turn, the order rotated every round (the first of a round tends to be the fastest).
echo "== interleaved: bare, bubblewrap and our CLI, $runs rounds"
python3 - "$runs" "$py" "$cli" "${bwrap[@]}" <<'PY'
import os, statistics, subprocess, sys, time
runs, py, cli, bwrap = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
cmds = {
    "bare": [py, "-c", "print(1)"],
    "bwrap": bwrap + [py, "-c", "print(1)"],
    "vana_native": [cli, "run", "--lang", "python", "--code", "print(1)"],
}
times = {k: [] for k in cmds}
names = list(cmds)
with open(os.devnull, "w") as null:
    for i in range(runs + 3):
        order = names[i % len(names):] + names[: i % len(names)]
        for k in order:
            t = time.perf_counter()
            subprocess.run(cmds[k], stdout=null, stderr=null, check=True)
            if i >= 3:
                times[k].append((time.perf_counter() - t) * 1000)
med = {k: statistics.median(v) for k, v in times.items()}
for k, v in med.items():
    print(f"{k:<14}{v:>10.1f}")
print(f"vana_native / bwrap (interleaved): {med['vana_native'] / med['bwrap']:.2f}x")
print(f"vana_native / bare (interleaved): {med['vana_native'] / med['bare']:.2f}x")
PY

echo "== throughput: $load runs of python print(1) at concurrency 8 ($(nproc) cores)"
reqs="$out/load.jsonl"
echo '{"request":{"language":"python","code":"print(1)"}}' > "$reqs"
t0=$(date +%s.%N); "$cli" load --runs "$load" --concurrency 8 "$reqs" > "$out/load.json"; t1=$(date +%s.%N)
t2=$(date +%s.%N); seq "$load" | xargs -P 8 -I{} $py -c 'print(1)' >/dev/null; t3=$(date +%s.%N)
t4=$(date +%s.%N); seq "$load" | xargs -P 8 -I{} "${bwrap[@]}" $py -c 'print(1)' >/dev/null; t5=$(date +%s.%N)

python3 - "$out/startup.json" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" "$load" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
med = {k: sorted(v["times"])[len(v["times"]) // 2] * 1000 for k, v in res.items()}
print("== hyperfine medians (each command's runs in one block)")
print(f"{'command':<14}{'median ms':>10}")
for k, v in med.items():
    print(f"{k:<14}{v:>10.1f}")
def ratio(a, b):
    if a in med and b in med:
        print(f"{a} / {b}: {med[a] / med[b]:.2f}x")
ratio("vana_native", "bwrap")
ratio("vana_native", "bare")
ratio("vana_docker", "docker_run")
ratio("vana_docker", "bare")
t0, t1, t2, t3, t4, t5, n = map(float, sys.argv[2:])
ours, bare, bw = n / (t1 - t0), n / (t3 - t2), n / (t5 - t4)
print(f"throughput: vana load {ours:.1f} runs/s, bare python {bare:.1f} runs/s ({ours / bare:.0%})")
print(f"throughput: bubblewrap --unshare-all {bw:.1f} runs/s ({bw / bare:.0%} of bare; vana {ours / bw:.0%} of it)")
PY
