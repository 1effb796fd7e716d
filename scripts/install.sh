#!/usr/bin/env bash
# Installs everything sandboxd needs on a fresh Debian 12 machine, as root:
# the system packages (apt-get) and a virtual environment in .venv with the
# project and its test tools. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# python-prctl compiles against libcap; pyseccomp loads libseccomp.so.2 with ctypes;
# gcc builds the small probes the security tests run inside containers;
# bubblewrap is the baseline the benchmarks compare against; tests/cluster start their own
# redis-server (the cluster's queue, docs/cluster.md); chromium and its driver run the
# playground page's test in a real browser (tests/http/test_playground.py);
# slirp4netns (a job's user-mode network) and nftables (its allow-list, loaded inside the
# container's namespace) give jobs their egress allow-list (sandboxd/egress.py).
PKGS=(python3 python3-venv python3-dev gcc libc6-dev libcap-dev libseccomp2 bubblewrap iproute2 procps util-linux
      redis-server chromium chromium-driver slirp4netns nftables)
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

# --- Languages (issue 17) ---------------------------------------------------------
# The compilers and runtimes of every shipped profile (profiles/*.toml), from Debian's
# packages: with --languages or SANDBOXD_LANGUAGES=all only (CI passes it, through
# scripts/test.sh), since they are 320 MB to download and 2 GB on disk; without
# them a profile is listed as unavailable and its tests skip. Measured on the
# development VM (which had a JDK and Node.js): 3 s to download, 45 s to set up.
LANGUAGES=${SANDBOXD_LANGUAGES:-}
for arg in "$@"; do
    case "$arg" in
        --languages) LANGUAGES=all ;;
        *) echo "usage: $0 [--languages]   (or SANDBOXD_LANGUAGES=all)" >&2; exit 2 ;;
    esac
done
if [ "$LANGUAGES" = "all" ]; then
    # cpp: g++; java: a JDK; javascript: nodejs; asm: nasm and binutils' ld and nm;
    # csharp: mcs and mono (+ System.Numerics for BigInteger); kotlin pulls a JRE too.
    LANG_PKGS=(g++ openjdk-17-jdk-headless nodejs rustc golang-go pypy3 fp-compiler
               mono-mcs libmono-system-numerics4.0-cil nasm binutils ruby php-cli kotlin ghc
               lua5.4 perl)
    lang_missing=()
    for p in "${LANG_PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || lang_missing+=("$p")
    done
    if [ "${#lang_missing[@]}" -gt 0 ]; then
        echo "install: languages: apt-get install ${lang_missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${lang_missing[@]}" >/dev/null
    fi
elif [ -n "$LANGUAGES" ]; then
    echo "install: SANDBOXD_LANGUAGES=$LANGUAGES: only 'all' is known" >&2
    exit 2
fi
# --- end of languages ---------------------------------------------------------------

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
