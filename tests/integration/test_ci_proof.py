"""The proof with a project nobody here wrote (issue 19): more-itertools' own test suite,
run bare and inside sandboxd, must report the same number of tests.

Outside the sandbox, pip downloads the project's sdist and the wheels its suite needs
(pytest and its dependencies). The sdist goes in as the job's workspace, the wheels as
a read-only cache; inside, with no network, pip installs pytest from the cache only
and pytest writes a JUnit report, which comes back as an artifact. The oracle is the
same suite run bare on the host, from the same files. Skipped (not failed) only when
PyPI cannot be reached. The times of both runs are printed (``-s``) for the report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd_client import Client
from sandboxd_testing.daemon import Daemon

pytestmark = [pytest.mark.root, pytest.mark.slow]

PROJECT = "more-itertools==10.5.0"
PYTHON = "/usr/bin/python3"  # the interpreter the sandbox has (the host's /usr)


@pytest.fixture(scope="module")
def downloads() -> Iterator[Path]:
    # Not under /tmp: a cache there is hidden by the container's root (docs/ci.md).
    d = Path(tempfile.mkdtemp(prefix="sandboxd-proof-", dir="/var/tmp"))
    try:
        wheels = d / "wheels"
        got = subprocess.run(
            [PYTHON, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             PROJECT, "-d", str(d / "sdist")], capture_output=True, timeout=300)
        if got.returncode == 0:
            got = subprocess.run(
                [PYTHON, "-m", "pip", "download", "--quiet", "--only-binary", ":all:",
                 "pytest", "-d", str(wheels)], capture_output=True, timeout=300)
        if got.returncode != 0:
            err = got.stderr.decode(errors="replace")
            if any(m in err for m in ("Network is unreachable", "Temporary failure",
                                      "Max retries", "NewConnectionError", "timed out")):
                pytest.skip(f"PyPI is unreachable: {err.strip().splitlines()[-1]}")
            raise AssertionError(f"pip download failed: {err}")
        d.chmod(0o755)
        wheels.chmod(0o755)
        for w in wheels.iterdir():
            w.chmod(0o644)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def junit_count(xml: bytes) -> tuple[int, int]:
    """(tests, failures + errors) of a JUnit report."""
    root = ET.fromstring(xml)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return (sum(int(s.get("tests", 0)) for s in suites),
            sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites))


SCRIPT = """set -e
cd "$(ls -d more-itertools-*)"
python3 -m pip install --quiet --no-index --no-cache-dir --find-links /cache/wheels \\
    --target /box/.deps pytest
mkdir -p /box/reports
PYTHONPATH=/box/.deps python3 -m pytest -q -p no:cacheprovider \\
    --junitxml=/box/reports/junit.xml tests > /box/reports/log.txt 2>&1 || true
tail -3 /box/reports/log.txt
"""


def test_more_itertools_suite_in_sandboxd_matches_bare(downloads: Path,
                                                       tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    sdist = next((downloads / "sdist").iterdir())
    # Bare: the same sdist and wheels, on the host.
    bare = tmp_path / "bare"
    bare.mkdir()
    subprocess.run(["tar", "-xzf", str(sdist), "-C", str(bare)], check=True)
    project = next(bare.iterdir())
    t0 = time.monotonic()
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
                    str(downloads / "wheels"), "--target", str(bare / ".deps"), "pytest"],
                   check=True, timeout=300)
    subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={bare}/junit.xml", "tests"], cwd=project, timeout=900,
                   env={**os.environ, "PYTHONPATH": str(bare / ".deps")},
                   capture_output=True)
    bare_s = time.monotonic() - t0
    bare_tests = junit_count((bare / "junit.xml").read_bytes())
    assert bare_tests[0] > 100, bare_tests

    d = Daemon(tmp_path, pool_size=1, caches=f"wheels={downloads / 'wheels'}").start()
    try:
        with Client(d.socket) as client:
            t0 = time.monotonic()
            r = client.run("bash", {"ci.sh": SCRIPT}, argv=["/bin/bash", "ci.sh"],
                           workspace=sdist, caches=["wheels"],
                           artifacts=["reports/*.xml", "reports/log.txt"],
                           limits={"wall_time": 900, "cpu_time": 600, "memory": "1G",
                                   "pids": 256, "box_size": "256M", "tmp_size": "256M"})
            boxed_s = time.monotonic() - t0
    finally:
        assert d.stop() == 0
    assert r.ok, r
    found = r.steps[0].artifacts or {}
    assert "reports/junit.xml" in found, (r.stdout, r.stderr, found.get("reports/log.txt"))
    boxed_tests = junit_count(found["reports/junit.xml"])
    print(f"\nmore-itertools: bare {bare_tests} in {bare_s:.1f} s, sandboxd {boxed_tests} "
          f"in {boxed_s:.1f} s (pip install + pytest, client to client)")
    assert boxed_tests[0] == bare_tests[0]
