"""Accounting from the kernel's counters: memory peak, OOM kills, CPU time, quota, pids peak.

Workloads have a known cost (a size in bytes, an amount of CPU time measured
by the kernel itself), so the tolerances stay tight even under emulation.
"""

from __future__ import annotations

import os
import time

import pytest
from cgroup_helpers import SLOW, MiB, Workload, py

from sandboxd.cgroups import CgroupLimits, JobCgroup

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]

# Burns ``sys.argv[1]`` seconds of CPU (measured by the kernel), almost all of it in user mode.
BURN = """
import sys, time
end = time.process_time() + float(sys.argv[1])
n = 0
while time.process_time() < end:
    for i in range(20000):
        n += i
"""


def test_memory_peak_of_a_known_workload(job: JobCgroup) -> None:
    w = Workload(job, py("b = b'x' * (100 << 20); print(len(b))"))
    assert w.readline() == str(100 * MiB)
    assert w.wait(60 * SLOW)[0] == 0
    peak = job.stats().memory_peak
    assert 100 * MiB <= peak <= 115 * MiB, peak / MiB


def test_memory_limit_kills_and_counts_the_oom(job: JobCgroup) -> None:
    job.set_limits(CgroupLimits(memory=64 * MiB))
    # Bounded: at most 320 MiB, and it exits by itself if nothing stops it.
    w = Workload(job, py("c = [b'x' * (8 << 20) for _ in range(40)]; print('survived')"))
    code, _ = w.wait(60 * SLOW)
    assert code == -9
    assert w.readline() == ""
    stats = job.stats()
    assert stats.oom_kills >= 1
    assert 50 * MiB < stats.memory_peak <= 64 * MiB


def test_cpu_time_of_a_known_workload(job: JobCgroup) -> None:
    """Within 5 % of what wait4 says the process used; the busy loop shows as user time."""
    w = Workload(job, [*py(BURN), "0.3"])
    os.waitid(os.P_PID, w.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
    with open(f"/proc/{w.pid}/schedstat") as f:  # the scheduler's own ns total
        ran_ns = int(f.read().split()[0]) - w.before_join_ns
    code, usage = w.wait(120 * SLOW)
    assert code == 0
    assert abs(job.cpu_usage_ns() - ran_ns) < 1_000_000  # same clock: exact, even in a VM
    rusage_ns = round((usage.ru_utime + usage.ru_stime) * 1e9) - w.before_join_ns
    stats = job.stats()
    assert stats.cpu_usage_ns == job.cpu_usage_ns()
    assert stats.cpu_usage_ns >= 0.3e9
    assert abs(stats.cpu_usage_ns - rusage_ns) <= 0.05 * rusage_ns, (stats, usage)
    assert stats.cpu_user_ns + stats.cpu_system_ns == stats.cpu_usage_ns
    assert stats.cpu_user_ns >= 0.25e9, stats
    # The user/system split is sampled at ticks on both sides (rusage's is then scaled
    # to the exact total, the cgroup's is not), and rusage's user time also holds the
    # user part of the start-up before the join (at most before_join_ns: under the v2
    # VM's emulation, tens of ms): a range, not a point. Failed once in CI as a point
    # (cgroup 547 ms of user time against rusage's 645, 81 ms allowed).
    user_ns = usage.ru_utime * 1e9
    slack = 0.1 * rusage_ns + 20e6
    assert user_ns - w.before_join_ns - slack <= stats.cpu_user_ns <= user_ns + slack, (
        stats, usage, w.before_join_ns)


def test_a_jobs_cpu_counts_from_its_baseline(job: JobCgroup) -> None:
    """What ran before ``baseline`` (a job process's start, an earlier workload) is not the
    job's: the deltas from it are exactly the second workload's (on v1 the baseline zeroes
    the counters, on v2 it reads them)."""
    first = Workload(job, [*py(BURN), "0.2"])
    assert first.wait(120 * SLOW)[0] == 0
    base = job.baseline()
    w = Workload(job, [*py(BURN), "0.3"])
    os.waitid(os.P_PID, w.pid, os.WEXITED | os.WNOWAIT)
    with open(f"/proc/{w.pid}/schedstat") as f:
        ran_ns = int(f.read().split()[0]) - w.before_join_ns
    assert w.wait(120 * SLOW)[0] == 0
    stats = job.stats()
    used = stats.cpu_usage_ns - base.cpu_usage_ns
    assert abs(used - ran_ns) < 1_000_000, (used, ran_ns)
    assert job.cpu_usage_ns() - base.cpu_usage_ns == used
    user = stats.cpu_user_ns - base.cpu_user_ns
    system = stats.cpu_system_ns - base.cpu_system_ns
    assert user >= 0 and system >= 0 and abs(user + system - used) <= 2_000, (user, system, used)
    assert user >= 0.2e9, (user, system)


def test_cpu_usage_is_live_and_monotonic(job: JobCgroup) -> None:
    w = Workload(job, [*py(BURN), "0.5"])
    seen = [job.cpu_usage_ns()]
    while w.proc.poll() is None and len(seen) < 10_000:
        seen.append(job.cpu_usage_ns())
        time.sleep(0.01)
    w.reap()
    seen.append(job.cpu_usage_ns())
    assert seen == sorted(seen)
    assert seen[-1] >= 0.5e9


def test_cpu_quota_caps_bandwidth(job: JobCgroup) -> None:
    """At a quarter of a CPU, a spinning process gets at most about a quarter of wall time."""
    job.set_limits(CgroupLimits(cpu_quota=0.25))
    start = time.monotonic()
    spin = "import time\nend = time.monotonic() + 1.0\nwhile time.monotonic() < end: pass"
    w = Workload(job, py(spin))
    assert w.wait(60 * SLOW)[0] == 0
    wall = time.monotonic() - start
    used = job.cpu_usage_ns() / 1e9
    assert used <= 0.25 * wall + 0.05, (used, wall)


def test_pids_peak_counts_children(job: JobCgroup) -> None:
    code = (
        "import os, time\n"
        "kids = []\n"
        "for _ in range(5):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        time.sleep(1); os._exit(0)\n"
        "    kids.append(pid)\n"
        "for pid in kids: os.waitpid(pid, 0)\n"
    )
    w = Workload(job, py(code))
    assert w.wait(60 * SLOW)[0] == 0
    peak = job.stats().pids_peak
    assert peak is None or peak == 6
