"""cgroups: limits, accounting and "kill everything" for one job, on v1 or v2.

Strategy: ``open_backend(tag)`` looks at the mounts once, picks the version
that holds the memory controller (on a hybrid host, where a ``unified``
cgroup2 mount exists beside the v1 hierarchies, that is v1), and returns a
``CgroupBackend``. Nothing outside this package needs to know which version
it got; ``backend.version`` is there for logs and check-environment.

Typical use (the supervisor, and the daemon's start-up cleanup)::

    backend = open_backend("main")      # root: <own cgroup>/sandboxd-main
    backend.remove_stale()              # what a crashed run left behind
    job = backend.create("sandboxd-job-1")
    job.set_limits(CgroupLimits(memory=256 << 20, pids=64))
    job.add_pid(pid)
    ...
    job.kill_all(); stats = job.stats(); job.reset()  # or job.remove()
    backend.close()

On v2 (when the cgroup we were started in is not the root), opening moves
this process into ``<own>/sandboxd.supervisor``: processes it starts later
are born there. See ``v2``.

This package must not know about jobs, sockets or trio.
"""

from __future__ import annotations

import os

from . import _fs
from ._base import (
    CgroupBackend,
    CgroupError,
    CgroupLimits,
    CgroupStats,
    JobCgroup,
    MemoryInUse,
    RunFiles,
    keepable,
)
from ._dynmods import favor as favor_dynmods
from ._dynmods import favoured as dynmods_favoured

__all__ = [
    "CgroupBackend",
    "CgroupError",
    "CgroupLimits",
    "CgroupStats",
    "JobCgroup",
    "MemoryInUse",
    "RunFiles",
    "detect_version",
    "dynmods_favoured",
    "favor_dynmods",
    "keepable",
    "open_backend",
]


def detect_version() -> int:
    """1 or 2: which cgroup version holds the memory controller (else pids, else cpu).

    A controller is bound to one hierarchy at a time, so at most one answer
    fits; a cgroup2 mount's root lists the controllers it holds.
    """
    mounts = _fs.mounts()
    if not mounts:
        raise CgroupError("no cgroup filesystem is mounted (mount cgroup2 on /sys/fs/cgroup)")
    v2 = set()
    for m in mounts:
        if m.fstype == "cgroup2":
            try:
                v2.update(_fs.read(os.path.join(m.point, "cgroup.controllers")).split())
            except CgroupError:
                pass
    for controller in ("memory", "pids", "cpu"):
        if any(m.fstype == "cgroup" and controller in m.options for m in mounts):
            return 1
        if controller in v2:
            return 2
    return 2 if any(m.fstype == "cgroup2" for m in mounts) else 1


def open_backend(tag: str) -> CgroupBackend:
    """Open the backend for this host, with its root ``sandboxd-<tag>`` under our own cgroup.

    ``tag`` names this sandboxd instance (1-64 of ``[A-Za-z0-9_-]``); the same
    tag after a crash finds the same root, for ``remove_stale``.
    """
    if detect_version() == 1:
        from .v1 import V1Backend

        return V1Backend(tag)
    from .v2 import V2Backend

    return V2Backend(tag)
