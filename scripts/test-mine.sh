#!/usr/bin/env bash
# Runs pytest (arguments as given) on a shared development machine where other test runs
# of sandboxd are going on: the run gets a cgroup of its own in every v1 hierarchy
# (sandboxd-run-PID beneath the current one, removed at the end), and the leftovers check
# counts only what this run made (SANDBOXD_LEFTOVERS=mine, sandboxd_testing/leftovers.py).
# CI does not use it: there the check is host-wide.
set -euo pipefail
cd "$(dirname "$0")/.."
made=()
# Read once: the file changes as this loop moves the shell from cgroup to cgroup.
mine=$(cat /proc/self/cgroup)
while IFS=: read -r _ ctrls path; do
    [ -n "$ctrls" ] || continue
    first=${ctrls%%,*}; first=${first#name=}
    dir=/sys/fs/cgroup/$first$path/sandboxd-run-$$
    [ -d "/sys/fs/cgroup/$first" ] || continue
    mkdir -p "$dir" && made+=("$dir")
    [ -f "$dir/cpuset.cpus" ] && cat "/sys/fs/cgroup/$first$path/cpuset.cpus" >"$dir/cpuset.cpus" \
        && cat "/sys/fs/cgroup/$first$path/cpuset.mems" >"$dir/cpuset.mems"
    echo $$ >"$dir/cgroup.procs"
done <<<"$mine"
cleanup() {
    for d in "${made[@]}"; do
        parent=$(dirname "$d")
        echo $$ >"$parent/cgroup.procs" 2>/dev/null || true
        # the run's last processes may still be exiting: give them a moment. What a test
        # left inside (its failure already reported by the leftovers check) goes too,
        # deepest first, said on stderr, so that a failed run leaves nothing on the host.
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            find "$d" -mindepth 1 -depth -type d -name '*sandboxd*' 2>/dev/null |
                while read -r left; do
                    rmdir "$left" 2>/dev/null && echo "test-mine: removed leftover $left" >&2
                done
            rmdir "$d" 2>/dev/null && break
            sleep 0.2
        done
    done
}
trap cleanup EXIT
status=0
SANDBOXD_LEFTOVERS=mine .venv/bin/python -m pytest "$@" || status=$?
exit "$status"
