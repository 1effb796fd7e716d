#!/usr/bin/env bash
# Runs the cgroup v2 test subset (pytest -m cgroup_v2) in a throw-away QEMU VM whose kernel
# has only cgroup v2 (booted by `run-in-v2vm`, a QEMU runner the test machines provide), twice:
#   1. in the VM's root cgroup (exempt from v2's "no internal processes" rule);
#   2. in a delegated cgroup, as systemd's Delegate=yes gives one (--cgroup), where the
#      backend has to move itself into a leaf before it can hand controllers to jobs.
# The VM is emulated (10-100x slower than the host): the tests scale their deadlines
# when V2VM=1, not their accounting tolerances.
#
# usage: scripts/test-v2vm.sh [--timeout SECS] [PYTEST_ARG...]
#   --timeout SECS  wall-clock limit of each VM run, boot included (default 2400)
#   PYTEST_ARG      paths or options for pytest (default: tests)
# env: V2VM_RUNNER  path of run-in-v2vm (default: run-in-v2vm on PATH, else the first
#                   one found in the folders beside this checkout)
# exit: 0 if both runs pass; otherwise the first failing run's status (124: timeout,
#       125: the VM itself failed).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
timeout=2400
while [ $# -gt 0 ]; do
    case "$1" in
        --timeout) timeout=${2:?--timeout needs a number of seconds}; shift 2 ;;
        --timeout=*) timeout=${1#--timeout=}; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) break ;;
    esac
done
case "$timeout" in ''|*[!0-9]*) echo "test-v2vm: bad --timeout: $timeout" >&2; exit 2 ;; esac
[ $# -gt 0 ] || set -- tests
runner=${V2VM_RUNNER:-$(command -v run-in-v2vm || true)}
if [ -z "$runner" ]; then
    runner=$(find "$repo/.." -maxdepth 4 -type f -name run-in-v2vm -perm -u+x 2>/dev/null | sort | head -n 1)
fi
runner=${runner:-run-in-v2vm}
[ -x "$runner" ] || { echo "test-v2vm: $runner not found (set V2VM_RUNNER)" >&2; exit 125; }

status=0
run() {  # run LABEL [run-in-v2vm options...]
    local label=$1 start rc=0
    shift
    start=$(date +%s)
    echo "== test-v2vm: $label"
    # The venv's python by absolute path: a pyenv shim costs ~8 s per start in the VM.
    "$runner" --workdir "$repo" --timeout "$timeout" "$@" -- \
        "$repo/.venv/bin/python" -m pytest -q -p no:cacheprovider -m cgroup_v2 "${pytest_args[@]}" \
        || rc=$?
    echo "== test-v2vm: $label: exit $rc after $(( $(date +%s) - start )) s"
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}
pytest_args=("$@")
run "root cgroup"
run "delegated cgroup ci.slice/test.scope" --cgroup ci.slice/test.scope
exit "$status"
