"""reset(): a recycled cgroup must be proven empty, and then count from zero."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cgroup_helpers import SLOW, MiB, Workload, py

from sandboxd.cgroups import CgroupBackend, CgroupError, CgroupLimits, JobCgroup

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]


@pytest.mark.parametrize("after_stats", [False, True], ids=["fresh", "after-ended-stats"])
def test_reset_refuses_a_cgroup_with_processes(job: JobCgroup, after_stats: bool) -> None:
    """``after_stats``: what an earlier ``stats(ended=True)`` proved (the cgroup empty) is
    forgotten once a process is moved in."""
    if after_stats:
        Workload(job, ["/bin/true"]).wait(30 * SLOW)
        job.stats(ended=True)
    w = Workload(job, ["/bin/sleep", str(30 * SLOW)])
    with pytest.raises(CgroupError, match="cannot reset"):
        job.reset()
    job.kill_all(timeout=5 * SLOW)
    w.reap()
    job.reset()


@pytest.mark.parametrize("ended", [False, True], ids=["read-again", "ended"])
def test_reset_restarts_every_counter_and_lifts_limits(job: JobCgroup, ended: bool) -> None:
    """``ended``: each job's last stats are read as a container reads them, with the cgroup
    proven empty (``stats(ended=True)``), so that the reset takes its bases from them."""
    job.set_limits(CgroupLimits(memory=64 * MiB, pids=16))
    w = Workload(job, py("c = [b'x' * (8 << 20) for _ in range(40)]"))  # OOM, bounded
    assert w.wait(60 * SLOW)[0] == -9
    first = job.stats(ended=ended)
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
    second = job.stats(ended=ended)
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

    # 16 MiB of page cache charged here (a file written by the job): reclaim is needed
    # (more than the per-CPU charge caches of up to 16 CPUs can explain), so nothing is
    # done and the caller is told to run reset() in a thread.
    job.set_limits(CgroupLimits(pids=16))
    target = tmp_path / "sandboxd-cache"
    w = Workload(job, py(f"open({str(target)!r}, 'wb').write(b'y' * (16 << 20))"))
    assert w.wait(60 * SLOW)[0] == 0
    peak = job.stats().memory_peak
    assert not job.reset_quick()
    assert job.stats().memory_peak == peak  # untouched
    job.reset()
    assert job.stats().memory_peak < peak


def test_reset_quick_resets_a_cgroup_a_small_job_used(backend: CgroupBackend) -> None:
    """The pool's common case, /bin/true, on either cgroup version: reset on the event
    loop (no thread hand-off), with every counter from zero and the limits lifted."""
    from sandboxd.cgroups.v2 import V2Job

    quick = 0
    for i in range(6):
        job = backend.create(f"sandboxd-quick{i}")
        try:
            if isinstance(job, V2Job) and job._f.peak and not job._f.peak_reset:
                pytest.skip("memory.peak cannot be reset in place before Linux 6.12: "
                            "the cgroup is remade, in a thread")
            job.set_limits(CgroupLimits(memory=64 * MiB, pids=16))
            assert Workload(job, ["/bin/true"]).wait(60 * SLOW)[0] == 0
            if job.reset_quick():
                quick += 1
                zero = job.stats()
                assert zero.cpu_usage_ns == 0 and zero.oom_kills == 0
                assert zero.memory_peak < 1 * MiB
                # The limits are lifted: 100 MiB fits.
                assert Workload(job, py("b = b'x' * (100 << 20)")).wait(60 * SLOW)[0] == 0
        finally:
            job.remove()
    assert quick >= 3, f"only {quick} of 6 cgroups that ran /bin/true were reset quickly"


# A job that charged memory on two CPUs: each keeps the rest of a 64-page batch in its
# per-CPU charge cache, which the emptied cgroup still shows as usage.
TWO_CPUS = ("import os\n"
            "for c in sorted(os.sched_getaffinity(0))[:2]:\n"
            "    os.sched_setaffinity(0, {c})\n"
            "    b = bytearray(1 << 16)")


def test_reset_quick_gives_back_the_per_cpu_charge_caches(backend: CgroupBackend) -> None:
    """v1: an empty cgroup whose usage is the kernel's per-CPU charge caches, not memory,
    is reset on the event loop (a memory limit below the usage drains them), not sent
    to a thread for force_empty; the next peak then starts within LEFTOVER_OK."""
    from sandboxd.cgroups.v1 import LEFTOVER_OK, V1Job

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to charge on")
    drained = 0
    for i in range(8):
        job = backend.create(f"sandboxd-stock{i}")
        if not isinstance(job, V1Job):
            pytest.skip("cgroup v2 resets in a thread (memory.reclaim)")
        job.set_limits(CgroupLimits(memory=64 * MiB))
        assert Workload(job, py(TWO_CPUS)).wait(60 * SLOW)[0] == 0
        usage = int(job._read("memory", "memory.usage_in_bytes"))  # empty, yet charged
        before = job.stats().memory_peak
        if job.reset_quick():
            assert job.stats().memory_peak <= LEFTOVER_OK
            drained += usage > LEFTOVER_OK
        else:  # a remote CPU's cache not given back yet: nothing was reset
            assert job.stats().memory_peak == before
            job.reset()
        # Whichever way, the limit is lifted: 100 MiB fits.
        assert Workload(job, py("b = b'x' * (100 << 20)")).wait(60 * SLOW)[0] == 0
        job.remove()
        if drained >= 2:
            break
    assert drained >= 2, "no used cgroup above LEFTOVER_OK was reset on the event loop"
