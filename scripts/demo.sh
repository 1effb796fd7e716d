#!/usr/bin/env bash
# The main job, from nothing: install everything, start the daemon on its default
# socket, run a sample job through the client, and stop the daemon. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh

SOCKET=${SANDBOXD_SOCKET:-/run/sandboxd/sandboxd.sock}
LOG=$(mktemp /tmp/sandboxd-demo.XXXXXX.log)
.venv/bin/sandboxd serve --socket "$SOCKET" >"$LOG" 2>&1 &
DAEMON=$!
stop() {
    kill -TERM "$DAEMON" 2>/dev/null || true
    wait "$DAEMON" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 1 300); do
    grep -q "event=ready" "$LOG" && break
    if ! kill -0 "$DAEMON" 2>/dev/null; then cat "$LOG" >&2; exit 1; fi
    sleep 0.1
done
grep -q "event=ready" "$LOG" || { echo "demo: the daemon did not start" >&2; cat "$LOG" >&2; exit 1; }
echo "demo: daemon ready on $SOCKET (log: $LOG)" >&2

echo "demo: sandboxctl run examples/hello.py" >&2
.venv/bin/sandboxctl --socket "$SOCKET" run examples/hello.py

echo "demo: a C program, compiled once in its own container, then run on a test input" >&2
echo "20 22" | .venv/bin/sandboxctl --socket "$SOCKET" run --stdin - examples/sum.c
