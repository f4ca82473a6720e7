#!/bin/sh
# A DevOps-style script an agent might write for a test environment.
set -e
APP_DIR="${APP_DIR:-/tmp/app}"
mkdir -p "$APP_DIR/logs"
echo "config for $APP_DIR" > "$APP_DIR/app.conf"
for svc in web worker; do
  echo "[$svc] starting" | tee -a "$APP_DIR/logs/$svc.log"
done
ls -1 "$APP_DIR" | while read -r entry; do echo "- $entry"; done
du -sh "$APP_DIR" | cut -f1
env | grep -c '^PATH=' || true
df -h /tmp | tail -n 1 | awk '{print $5}'
uname -s
id -u
echo "ssh-style key names are just text here: deploy_key_id"
