#!/usr/bin/env bash
# Everything the Docker backend's tests need, on a fresh Debian machine, as root:
# docker.io, runsc (gVisor) registered with `--network=none --oci-seccomp`, debootstrap; a running
# dockerd; and the runtime images (the default one, and the full one with Go and gcc), built
# locally (no registry) and kept once built (rebuilt when their layout is older than the code's).
# libc6-dev: vana-init, bound into every container, is linked statically.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v runsc >/dev/null || missing+=(runsc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v gcc >/dev/null || missing+=(gcc)
command -v python3 >/dev/null || missing+=(python3)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || missing+=(libc6-dev)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

# Register runsc. gVisor's own network stack stays off (`--network=none`), and gVisor applies the
# container's seccomp profile (our allow-list) to the sandboxed program only with `--oci-seccomp`
# (without it, runsc ignores the profile). The backend refuses a runsc registered without it.
mkdir -p /etc/docker
changed=$(python3 - <<'PY'
import json, os, shutil, time
p = "/etc/docker/daemon.json"
d = {}
if os.path.exists(p) and os.path.getsize(p) > 0:
    d = json.load(open(p))
want = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--oci-seccomp"]}
rt = d.setdefault("runtimes", {})
if rt.get("runsc") == want:
    print(0)
else:
    if os.path.exists(p):
        shutil.copy(p, f"{p}.vana-backup.{int(time.time())}")
    rt["runsc"] = want
    json.dump(d, open(p, "w"), indent=2)
    print(1)
PY
)

if docker info >/dev/null 2>&1; then
  if [ "$changed" = 1 ]; then
    kill -HUP "$(pidof dockerd)"   # dockerd reloads its runtimes on SIGHUP
    sleep 1
  fi
else
  echo "== starting dockerd"
  (dockerd > /var/log/vana-dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -30 /var/log/vana-dockerd.log; exit 1; }
fi
docker info --format 'docker {{.ServerVersion}}, cgroup v{{.CgroupVersion}}, runtimes: {{range $k, $v := .Runtimes}}{{$k}} {{end}}'
docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' || { echo "runsc is not registered with dockerd"; exit 1; }

echo "== runtime images"
cargo run -q --release -p vana-sandbox -- image build
cargo run -q --release -p vana-sandbox -- image build --full
