"""The test harness's own promise: a test run killed outright leaves nothing running.

A test run stopped with SIGKILL (a CI timeout, an impatient developer) cannot tear its
fixtures down; the daemons and redis-servers it started must then end by themselves and
clean up as on any SIGTERM (``sandboxd_testing.daemon.tied_to_caller``). Here a child
process plays the test run: it starts a daemon and a redis-server the way the fixtures
do, and is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandboxd_testing import leftovers

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]

RUN = """
import sys, time
from pathlib import Path
from sandboxd_testing.daemon import Daemon
from sandboxd_testing.redis_server import RedisServer
tmp = Path(sys.argv[1])
d = Daemon(tmp, pool_profiles=["bash"]).start()
r = RedisServer(tmp).start()
print(d.pid, r.pid, d.instance, flush=True)
time.sleep(600)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has ended; its reaper is elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_test_run_leaves_no_daemon_or_redis(tmp_path: Path) -> None:
    run = subprocess.Popen([sys.executable, "-c", RUN, str(tmp_path)], cwd=ROOT,
                           stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert run.stdout is not None
        line = run.stdout.readline().decode()
        daemon_pid, redis_pid, instance = line.split()
        pids = [int(daemon_pid), int(redis_pid)]
        assert all(running(p) for p in pids), line
        # The daemon's warm container exists: there is something for it to clean up.
        assert any(instance in c for c in leftovers.sandboxd_cgroups())
    finally:
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    deadline = time.monotonic() + 60
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [p for p in pids if running(p)]
    for pid in survivors:  # ours, by pid: the check failed, nothing else may be left
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "a daemon or redis-server outlived its test run"
    assert not any(instance in c for c in leftovers.sandboxd_cgroups())


def test_a_daemon_that_changes_its_user_keeps_its_parent_death_signal(tmp_path: Path) -> None:
    """The kernel clears a parent-death signal when a process changes its user: a
    rootless daemon (``Daemon.prefix``, a ``setpriv`` to nobody) would outlive a killed
    test run. Its ``setpriv`` sets it again: what runs as nobody still has SIGTERM."""
    from sandboxd_testing.daemon import _tied_prefix, tied_to_caller

    probe = ("import ctypes; s = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s));"
             " import os; print(os.getuid(), s.value)")
    prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    argv = tied_to_caller([*_tied_prefix(prefix), "/usr/bin/python3", "-c", probe])
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd="/",
                         timeout=60).stdout.split()
    assert out == ["65534", str(int(signal.SIGTERM))], out
