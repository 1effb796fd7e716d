"""Creating, removing, detecting, pinning and stale cleanup: nothing may be left behind."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from cgroup_helpers import MARK_ENV, SLOW, TOKEN, Workload, leftovers, own_cgroup_dirs, py

from sandboxd.cgroups import (
    CgroupBackend,
    CgroupError,
    CgroupLimits,
    JobCgroup,
    detect_version,
    open_backend,
)

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]


def job_dirs(backend: CgroupBackend, job: JobCgroup) -> list[str]:
    """Where the job's directories are, found from our own cgroups, not the backend."""
    return [
        f"{d}/{backend.root_name}/{job.name}"
        for d in own_cgroup_dirs()
        if os.path.isdir(f"{d}/{backend.root_name}/{job.name}")
    ]


def test_version_detected_from_the_mounts(backend: CgroupBackend) -> None:
    assert backend.version == detect_version()
    if os.environ.get("V2VM"):
        assert backend.version == 2
    assert backend.root_name.startswith("sandboxd-")
    assert all(isinstance(p, str) and p for p in backend.problems())


def test_create_then_remove_leaves_nothing(backend: CgroupBackend) -> None:
    job = backend.create("sandboxd-lifecycle")
    dirs = job_dirs(backend, job)
    expected = {1: 6, 2: 1}[backend.version]  # one per v1 hierarchy we use
    assert len(dirs) == expected, dirs
    assert job.pids() == []
    job.remove()
    job.remove()  # idempotent
    assert [d for d in dirs if os.path.exists(d)] == []


def test_names_must_be_ours_and_plain(backend: CgroupBackend) -> None:
    for bad in ("job1", "../sandboxd", "sandboxd/x", ".sandboxd", "sandboxd x", ""):
        with pytest.raises(ValueError):
            backend.create(bad)
    backend.create("sandboxd-dup")
    with pytest.raises(CgroupError):
        backend.create("sandboxd-dup")
    with pytest.raises(ValueError):
        open_backend("has.dot")


def test_remove_kills_what_is_left(backend: CgroupBackend, job: JobCgroup) -> None:
    w = Workload(job, ["/bin/sleep", str(30 * SLOW)])
    assert job.pids() == [w.pid]
    job.remove()
    w.reap()
    assert w.proc.returncode == -9


def test_close_removes_every_job(backend: CgroupBackend) -> None:
    jobs = [backend.create(f"sandboxd-close{i}") for i in range(3)]
    work = [Workload(j, ["/bin/sleep", str(30 * SLOW)]) for j in jobs]
    dirs = [d for j in jobs for d in job_dirs(backend, j)]
    backend.close()
    for w in work:
        w.reap()
        assert w.proc.returncode == -9
    assert [d for d in dirs if os.path.exists(d)] == []
    with pytest.raises(CgroupError):
        backend.create("sandboxd-after-close")


def test_cpuset_pins_or_says_why_not(backend: CgroupBackend, job: JobCgroup) -> None:
    """Pinning to CPU 0 shows in the job's affinity; where cpuset is not delegated, it says so."""
    if problem := [p for p in backend.problems() if "'cpuset'" in p]:
        assert "subtree_control" in problem[0] or "mount" in problem[0]  # says how to fix it
        with pytest.raises(CgroupError, match="cpuset"):
            job.set_limits(CgroupLimits(cpuset="0"))
        return
    job.set_limits(CgroupLimits(cpuset="0"))
    w = Workload(job, py("import os; print(sorted(os.sched_getaffinity(0)))"))
    assert w.readline() == "[0]"
    assert w.wait(30 * SLOW)[0] == 0
    job.set_limits(CgroupLimits())  # unpinned again: the parent's cpus
    w = Workload(job, py("import os; print(len(os.sched_getaffinity(0)))"))
    assert int(w.readline()) == len(os.sched_getaffinity(0))
    w.wait(30 * SLOW)


CRASH = """
import os, subprocess, sys
from sandboxd.cgroups import open_backend
backend = open_backend(sys.argv[1])
job = backend.create("sandboxd-crashed")
child = subprocess.Popen(["/bin/sleep", sys.argv[2]], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
job.add_pid(child.pid)
print(child.pid, flush=True)
os._exit(0)  # crash: no close(), no kill
"""


def test_remove_stale_cleans_up_after_a_crashed_run(backend: CgroupBackend) -> None:
    """A separate process creates a job with a process in it and dies; a new run cleans up."""
    tag = f"crash{secrets.token_hex(3)}"
    env = dict(os.environ, **{MARK_ENV: TOKEN})
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, tag, str(60 * SLOW)],
        env=env,
        capture_output=True,
        timeout=120 * SLOW,
        check=True,
    )
    orphan = int(crashed.stdout)
    assert os.path.exists(f"/proc/{orphan}/environ")
    assert leftovers(f"sandboxd-{tag}"), "the crashed run left no root?"
    second = open_backend(tag)
    try:
        live = second.create("sandboxd-live")  # a live job of ours is never stale
        removed = second.remove_stale()
        assert removed and all(p.endswith("/sandboxd-crashed") for p in removed)
        assert second.remove_stale() == []
        assert job_dirs(second, live)
    finally:
        second.close()
    assert leftovers(f"sandboxd-{tag}") == []
    try:  # killed; as an orphan it is reaped by init, or waits there as a zombie
        with open(f"/proc/{orphan}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        pass


def test_v2_delegation_moves_only_us_and_moves_back() -> None:
    """v2, non-root: we live in <own>/sandboxd.supervisor while a backend is open, and our
    children are born there; closing the last backend puts us back where we started."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if detect_version() != 2:
        pytest.skip("cgroup v2 only")

    def where(pid: int | str = "self") -> str:
        with open(f"/proc/{pid}/cgroup") as f:
            return f.read().strip().split("::", 1)[1]

    before = where()
    backend = open_backend(f"t{os.getpid()}-{secrets.token_hex(3)}")
    try:
        if before == "/":  # the real root may hold processes: nothing to move
            assert where() == "/"
        else:
            # the suite's session fixture may already have put us in the leaf
            leaf = before if before.endswith("/sandboxd.supervisor") else (
                before.rstrip("/") + "/sandboxd.supervisor")
            assert where() == leaf
            child = subprocess.Popen(["/bin/sleep", str(30 * SLOW)], env={MARK_ENV: TOKEN})
            try:
                assert where(child.pid) == where()
            finally:
                child.kill()
                child.wait()
        job = backend.create("sandboxd-delegated")
        w = Workload(job, ["/bin/true"])
        assert w.wait(30 * SLOW)[0] == 0
    finally:
        backend.close()
    assert leftovers(backend.root_name) == []
    assert where() == before
