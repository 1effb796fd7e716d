"""Identity: the host ids of a slot, which the user namespace maps give a container.

Strategy: the container is a user namespace whose root (the container init)
maps to an unprivileged host uid, and whose job user maps to another, both
unique per pool slot, as isolate gives each box its own uid: two jobs can
never signal or trace each other, and even the container's root is nobody on
the host. The maps are written by the host-side parent (real root, the native
fork server in native/forkserver.c), which may map any host ids; the child
waits until they are in place. The drop to the job's uid inside is the job
process's (native/jobproc.c). Which process of the host may use which slot is
decided by sandboxd/slots.py.

This module knows nothing of jobs, sockets, cgroups or trio.
"""

from __future__ import annotations

from dataclasses import dataclass

# Inside every container: root is 0, the job runs as JOB_UID/JOB_GID.
JOB_UID = 1000
JOB_GID = 1000

# Host ids: slot s maps container root to INIT_BASE + s and the job user to
# JOB_BASE + s. isolate uses 60000 + box id; we keep clear of it.
INIT_BASE = 420000
JOB_BASE = 430000
MAX_SLOTS = 10000


@dataclass(frozen=True, slots=True)
class IdMap:
    """The host ids of one slot."""

    slot: int

    def __post_init__(self) -> None:
        if not 0 <= self.slot < MAX_SLOTS:
            raise ValueError(f"slot {self.slot} outside [0, {MAX_SLOTS})")

    @property
    def host_root(self) -> int:
        return INIT_BASE + self.slot

    @property
    def host_job(self) -> int:
        return JOB_BASE + self.slot

    def uid_map(self) -> str:
        return f"0 {self.host_root} 1\n{JOB_UID} {self.host_job} 1\n"

    def gid_map(self) -> str:
        return f"0 {self.host_root} 1\n{JOB_GID} {self.host_job} 1\n"

