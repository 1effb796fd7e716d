#!/usr/bin/env bash
# Installs everything sandboxd needs on a fresh Debian 12 machine, as root:
# the system packages (apt-get) and a virtual environment in .venv with the
# project and its test tools. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# python-prctl compiles against libcap; pyseccomp loads libseccomp.so.2 with ctypes;
# gcc builds the small probes the security tests run inside containers;
# bubblewrap is the baseline the benchmarks compare against; chromium and its driver run
# the playground page's test in a real browser (tests/http/test_playground.py).
PKGS=(python3 python3-venv python3-dev gcc libc6-dev libcap-dev libseccomp2 bubblewrap iproute2 procps util-linux
      chromium chromium-driver)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv uses Debian's own interpreter: the sandbox binds the host's /usr
# read-only, so the interpreter the daemon runs on is the one jobs can run too.
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# pip's build chatter goes to a log, shown only when something fails.
PIPLOG=$(mktemp /tmp/sandboxd-pip.XXXXXX.log)
if ! { .venv/bin/python -m pip install -q --upgrade pip \
       && .venv/bin/python -m pip install -q -e '.[test]'; } >"$PIPLOG" 2>&1; then
    cat "$PIPLOG" >&2
    echo "install: pip failed (log above)" >&2
    exit 1
fi
rm -f "$PIPLOG"
# The native helper (sandboxd-init, from the C files in sandboxd/native/), built once here.
.venv/bin/python -m sandboxd.native >/dev/null
echo "install: ok ($(.venv/bin/python --version))" >&2
