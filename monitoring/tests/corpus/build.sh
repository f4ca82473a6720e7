#!/usr/bin/env bash
# An ordinary build-and-report script: subprocesses, pipes, background jobs, traps, fifos.
set -euo pipefail
trap 'echo "cleaning up"; rm -rf "$work"' EXIT
work=$(mktemp -d)
cd "$work"
for i in $(seq 1 5); do
  echo "line $i" >> data.txt
done
wc -l < data.txt
grep -c line data.txt | xargs echo "matches:"
sort -r data.txt | uniq -c | head -n 2
awk '{ sum += $2 } END { print "sum", sum }' data.txt
sed -n '2,3p' data.txt | tr 'a-z' 'A-Z'
find . -name '*.txt' -type f | while read -r f; do
  echo "found $f ($(stat -c %s "$f") bytes)"
done
sleep 0.1 &
pid=$!
wait "$pid"
mkfifo pipe
( echo "through a fifo" > pipe ) &
cat pipe
ps -o pid,comm -p $$ | tail -n 1
cat /proc/self/status | grep -E '^(Name|Pid):'
cat /proc/cpuinfo | grep -c processor || true
echo "HOME is $HOME, cache in $HOME/.cache"
tar -czf archive.tgz data.txt && tar -tzf archive.tgz
printf '%s\n' "$(date +%Y)" | cut -c1-2
if command -v nc >/dev/null; then nc -z -w1 127.0.0.1 9 || echo "port closed"; fi
curl --version >/dev/null 2>&1 || echo "no curl"
echo "done: $(basename "$work")"
