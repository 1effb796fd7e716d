"""reset(): a recycled cgroup must be proven empty, and then count from zero."""

from __future__ import annotations

from pathlib import Path

import pytest
from cgroup_helpers import SLOW, MiB, Workload, py

from sandboxd.cgroups import CgroupError, CgroupLimits, JobCgroup

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]


def test_reset_refuses_a_cgroup_with_processes(job: JobCgroup) -> None:
    w = Workload(job, ["/bin/sleep", str(30 * SLOW)])
    with pytest.raises(CgroupError, match="cannot reset"):
        job.reset()
    job.kill_all(timeout=5 * SLOW)
    w.reap()
    job.reset()


def test_reset_restarts_every_counter_and_lifts_limits(job: JobCgroup) -> None:
    job.set_limits(CgroupLimits(memory=64 * MiB, pids=16))
    w = Workload(job, py("c = [b'x' * (8 << 20) for _ in range(40)]"))  # OOM, bounded
    assert w.wait(60 * SLOW)[0] == -9
    first = job.stats()
    assert first.oom_kills >= 1 and first.memory_peak > 50 * MiB and first.cpu_usage_ns > 0

    job.reset()
    zero = job.stats()
    assert zero.oom_kills == 0
    assert zero.cpu_usage_ns == zero.cpu_user_ns == zero.cpu_system_ns == 0
    assert zero.memory_peak < 8 * MiB
    assert job.cpu_usage_ns() == 0

    # No memory limit any more: 100 MiB fits; the peak is this job's alone.
    w = Workload(job, py("b = b'x' * (100 << 20)"))
    assert w.wait(60 * SLOW)[0] == 0
    second = job.stats()
    assert second.oom_kills == 0
    assert 100 * MiB <= second.memory_peak <= 115 * MiB

    # And a smaller job after another reset is not hidden behind the earlier peak.
    job.reset()
    w = Workload(job, py("b = b'x' * (20 << 20)"))
    assert w.wait(60 * SLOW)[0] == 0
    third = job.stats()
    assert 20 * MiB <= third.memory_peak <= 35 * MiB
    assert third.pids_peak in (None, 1)


def test_reset_keeps_the_cgroup_usable_for_limits(job: JobCgroup) -> None:
    job.reset()
    job.set_limits(CgroupLimits(memory=32 * MiB))
    w = Workload(job, py("b = b'x' * (100 << 20)"))
    assert w.wait(60 * SLOW)[0] == -9
    assert job.stats().oom_kills >= 1


def test_reset_quick_resets_a_clean_cgroup_and_leaves_one_with_page_cache(
        job: JobCgroup, tmp_path: Path) -> None:
    """The pool resets a used cgroup on its event loop only when no reclaim is needed."""
    job.set_limits(CgroupLimits(memory=64 * MiB, pids=16))
    w = Workload(job, py("b = b'x' * (20 << 20)"))
    assert w.wait(60 * SLOW)[0] == 0
    assert job.stats().memory_peak >= 20 * MiB
    if not job.reset_quick():  # the interpreter's own page cache may still be charged
        job.reset()
    assert job.stats().memory_peak < 8 * MiB
    # No limit any more: 100 MiB fits.
    w = Workload(job, py("b = b'x' * (100 << 20)"))
    assert w.wait(60 * SLOW)[0] == 0

    # 4 MiB of page cache charged here (a file written by the job): reclaim is needed,
    # so nothing is done and the caller is told to run reset() in a thread.
    job.set_limits(CgroupLimits(pids=16))
    target = tmp_path / "sandboxd-cache"
    w = Workload(job, py(f"open({str(target)!r}, 'wb').write(b'y' * (4 << 20))"))
    assert w.wait(60 * SLOW)[0] == 0
    peak = job.stats().memory_peak
    if type(job).reset_quick is JobCgroup.reset_quick:
        assert not job.reset_quick()  # v2: always in a thread
    else:
        assert not job.reset_quick()
        assert job.stats().memory_peak == peak  # untouched
    job.reset()
    assert job.stats().memory_peak < peak
