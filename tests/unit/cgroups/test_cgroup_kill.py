"""pids.max and kill_all: bombs bounded in count and time, started only once limits are in place."""

from __future__ import annotations

import os
import signal
import time

import pytest
from cgroup_helpers import SLOW, Workload, py, wait_until

from sandboxd.cgroups import CgroupLimits, JobCgroup

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]

LIVE = 10 * SLOW  # seconds every bomb process lives at most


def test_pids_limit_is_enforced(job: JobCgroup) -> None:
    """With pids.max 8, a process that tries 40 forks gets exactly 7 children."""
    job.set_limits(CgroupLimits(pids=8))
    code = (
        "import os, sys, time\n"
        "n = 0\n"
        "for _ in range(40):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        f"        time.sleep({LIVE}); os._exit(0)\n"
        "    n += 1\n"
        "print(n, flush=True)\n"
        f"time.sleep({LIVE})\n"
    )
    w = Workload(job, py(code))
    assert w.readline() == "7"
    assert len(job.pids()) == 8
    job.kill_all(timeout=5 * SLOW)
    w.reap()
    assert job.pids() == []
    assert job.stats().pids_peak in (None, 8)


# Each process forks at most 3 times and then lives LIVE seconds: at most 121
# processes even without a limit; pids.max, set before it starts, caps it at 32.
BOMB = (
    "exec 2>/dev/null\n"  # "Cannot fork" is the point, not news
    'b() { [ "$1" -gt 0 ] && for i in 1 2 3; do b $(($1 - 1)) "$2" & done; exec sleep "$2"; }\n'
    'b 4 "$0"'
)


def test_kill_all_empties_a_fork_bomb(job: JobCgroup) -> None:
    job.set_limits(CgroupLimits(pids=32))
    w = Workload(job, ["/bin/sh", "-c", BOMB, str(LIVE)])
    # A shell whose fork fails exits, so the count settles below the limit: wait
    # for the kernel's peak to reach the limit (or, without pids.peak, for a crowd).
    wait_until(
        lambda: job.stats().pids_peak == 32 or len(job.pids()) >= 16, 5 * SLOW, "the bomb to grow"
    )
    assert len(job.pids()) >= 8
    job.kill_all(timeout=10 * SLOW)
    assert job.pids() == []
    w.reap()
    # Killed, or already gone: the top shell exits 2 when one of its own three forks
    # finds pids.max reached (its children fork too, and may fill the 32 first: CI).
    assert w.proc.returncode in (-9, 2), w.proc.returncode
    peak = job.stats().pids_peak
    assert peak is None or 8 <= peak <= 32


def test_kill_all_ignores_sigterm_handlers(job: JobCgroup) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        f"time.sleep({LIVE})\n"
    )
    w = Workload(job, py(code))
    assert w.readline() == "ready"
    job.kill_all(timeout=5 * SLOW)
    assert job.pids() == []
    w.reap()
    assert w.proc.returncode == -9


def stat_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_kill_all_kills_a_stopped_process(job: JobCgroup) -> None:
    w = Workload(job, ["/bin/sleep", str(LIVE)])
    wait_until(lambda: os.readlink(f"/proc/{w.pid}/exe").endswith("sleep"), 5 * SLOW, "exec")
    os.kill(w.pid, signal.SIGSTOP)
    wait_until(lambda: stat_state(w.pid) == "T", 5 * SLOW, "SIGSTOP")
    job.kill_all(timeout=5 * SLOW)
    assert job.pids() == []
    w.reap()
    assert w.proc.returncode == -9


def test_kill_all_on_an_empty_cgroup_returns_at_once(job: JobCgroup) -> None:
    start = time.monotonic()
    job.kill_all()
    assert time.monotonic() - start < 1 * SLOW
