#!/usr/bin/env bash
# Everything the Docker backend's tests need, on a fresh Debian machine, as root:
# docker.io, runsc (gVisor) registered with `--network=none`, debootstrap; a running dockerd;
# and the runtime image, built locally (no registry) and kept once built.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v runsc >/dev/null || missing+=(runsc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v gcc >/dev/null || missing+=(gcc)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

# Register runsc. gVisor's own network stack must stay off here: `--network=none`.
mkdir -p /etc/docker
want='{
  "runtimes": {
    "runsc": { "path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"] }
  }
}'
changed=0
if ! grep -q '"runsc"' /etc/docker/daemon.json 2>/dev/null; then
  if [ -s /etc/docker/daemon.json ]; then
    cp /etc/docker/daemon.json "/etc/docker/daemon.json.vana-backup.$(date +%s)"
    python3 - <<'PY'
import json
p = "/etc/docker/daemon.json"
d = json.load(open(p))
d.setdefault("runtimes", {})["runsc"] = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}
json.dump(d, open(p, "w"), indent=2)
PY
  else
    echo "$want" > /etc/docker/daemon.json
  fi
  changed=1
fi

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

echo "== runtime image"
cargo run -q --release -p vana-sandbox -- image build
