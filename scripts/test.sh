#!/usr/bin/env bash
# Installs everything (scripts/install.sh; in CI with every profile's compiler too) and
# runs the whole test suite, as root.
# Extra arguments go to pytest. In CI (CI=true) the cgroup v2 subset also runs in a
# real cgroup v2 VM when scripts/test-v2vm.sh exists and SANDBOXD_SKIP_V2VM is unset.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI installs every profile's compiler too, so that no language test skips there.
if [ "${CI:-}" = "true" ]; then ./scripts/install.sh --languages; else ./scripts/install.sh; fi
.venv/bin/ruff check sandboxd sandboxd_protocol sandboxd_client sandboxd_testing tests bench fuzz
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
if [ "$status" -eq 0 ] && [ "${CI:-}" = "true" ] && [ -z "${SANDBOXD_SKIP_V2VM:-}" ] \
   && [ -x scripts/test-v2vm.sh ]; then
    ./scripts/test-v2vm.sh --timeout 1200 || status=$?
fi
exit "$status"
