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

import functools
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

    @property
    def job_uid(self) -> int:
        """The job user's uid inside the container."""
        return JOB_UID

    @property
    def job_gid(self) -> int:
        return JOB_GID

    def uid_map(self) -> str:
        return f"0 {self.host_root} 1\n{JOB_UID} {self.host_job} 1\n"

    def gid_map(self) -> str:
        return f"0 {self.host_root} 1\n{JOB_GID} {self.host_job} 1\n"



# ------------------------------------------------------------------ rootless (docs/rootless.md)
#
# A daemon that is not root may map into a user namespace only what the kernel lets an
# ordinary user map: its own uid and gid, written by itself into the child's
# ``uid_map``/``gid_map`` (``setgroups`` must be denied first, or any process of the
# namespace could drop a group that was keeping it out of a file), or the subordinate
# ranges ``/etc/subuid`` and ``/etc/subgid`` give it, written by the setuid helpers
# ``newuidmap``/``newgidmap``.


@dataclass(frozen=True, slots=True)
class SubIds:
    """This user's first subordinate uid and gid and how many of each it may use."""

    uid_start: int
    gid_start: int
    count: int


def _parse_subid(text: str, names: set[str]) -> tuple[int, int] | None:
    """The first ``NAME:START:COUNT`` range of ``/etc/subuid``-style text for one of
    ``names`` (the user's name or its uid in decimal), as ``(start, count)``."""
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in names:
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start > 0 and count > 0:
            return start, count
    return None


def read_subids(uid: int, *, subuid: str = "/etc/subuid",
                subgid: str = "/etc/subgid") -> SubIds | None:
    """The subordinate ranges of ``uid`` (None when it has none in either file), as
    ``newuidmap`` reads them: by user name or by uid."""
    import pwd

    names = {str(uid)}
    try:
        names.add(pwd.getpwuid(uid).pw_name)
    except KeyError:
        pass
    found = []
    for path in (subuid, subgid):
        try:
            with open(path) as f:
                r = _parse_subid(f.read(), names)
        except OSError:
            return None
        if r is None:
            return None
        found.append(r)
    (us, uc), (gs, gc) = found
    return SubIds(us, gs, min(uc, gc))


@dataclass(frozen=True, slots=True)
class RootlessMap:
    """What an ordinary user's daemon maps into a slot's container.

    The container's root is always the daemon's own uid/gid (the init must be able to
    create files it owns; only a uid mapped in the namespace can own one). With
    subordinate ids, the job user is ``subids.uid_start + slot``, a host uid of its own
    per slot as under a root daemon, and the maps go through ``newuidmap``/``newgidmap``
    (``helper_args``). Without them only the daemon's uid exists in the namespace:
    ``job_uid`` is then 0 (the job stays the namespace's root, with every capability
    dropped, ``no_new_privs`` and seccomp, as it would be as uid 1000), and the maps are
    written by the daemon's own process, after ``setgroups`` is set to ``deny``.
    """

    slot: int
    own_uid: int
    own_gid: int
    subids: SubIds | None = None

    def __post_init__(self) -> None:
        limit = self.slots()
        if not 0 <= self.slot < limit:
            raise ValueError(f"slot {self.slot} outside [0, {limit})")

    def slots(self) -> int:
        """How many slots this user can have: its subordinate range bounds them."""
        return MAX_SLOTS if self.subids is None else min(MAX_SLOTS, self.subids.count)

    @property
    def one_uid(self) -> bool:
        return self.subids is None

    @property
    def job_uid(self) -> int:
        """The job user's uid inside the container."""
        return 0 if self.one_uid else JOB_UID

    @property
    def job_gid(self) -> int:
        return 0 if self.one_uid else JOB_GID

    @property
    def host_job(self) -> int:
        """The host uid the job runs as (the daemon's own with one uid)."""
        return self.own_uid if self.subids is None else self.subids.uid_start + self.slot

    def uid_map(self) -> str:
        if self.subids is None:
            return f"0 {self.own_uid} 1\n"
        return f"0 {self.own_uid} 1\n{JOB_UID} {self.host_job} 1\n"

    def gid_map(self) -> str:
        if self.subids is None:
            return f"0 {self.own_gid} 1\n"
        return f"0 {self.own_gid} 1\n{JOB_GID} {self.subids.gid_start + self.slot} 1\n"

    def setgroups(self) -> str:
        """What ``/proc/PID/setgroups`` must say before the gid map: an unprivileged
        writer of its own gid map must deny it; ``newgidmap`` checks the range instead."""
        return "deny" if self.subids is None else "allow"

    def helper_args(self, pid: int) -> tuple[list[str], list[str]] | None:
        """``newuidmap``/``newgidmap`` command lines for the child ``pid`` (None: write
        the maps directly)."""
        if self.subids is None:
            return None

        def args(tool: str, text: str) -> list[str]:
            return [tool, str(pid), *(n for line in text.splitlines() for n in line.split())]

        return args("newuidmap", self.uid_map()), args("newgidmap", self.gid_map())


def apply_rootless_map(pid: int, ids: RootlessMap) -> None:
    """Give the child ``pid`` (a new user namespace, waiting for its maps) ``ids``'s maps
    as the daemon's own process: what the fork server does for a root daemon, done the
    way an ordinary user may. Raises ``OSError`` with the file or helper that refused."""
    import subprocess

    helpers = ids.helper_args(pid)
    if helpers is not None:
        for argv in helpers:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise OSError(f"{argv[0]} for pid {pid} failed ({proc.returncode}): "
                              f"{proc.stderr.strip()}")
        return
    for name, text in (("setgroups", ids.setgroups()), ("uid_map", ids.uid_map()),
                       ("gid_map", ids.gid_map())):
        path = f"/proc/{pid}/{name}"
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as e:
            raise OSError(e.errno, f"writing {text.strip()!r} to {path}: {e.strerror}") from e


@functools.cache
def rootless() -> bool:
    """Whether this process makes containers as an ordinary user (docs/rootless.md).
    Asked once: sandboxd never changes its own uid, and every job asked it twice."""
    import os

    return os.geteuid() != 0


def slot_map(slot: int) -> IdMap | RootlessMap:
    """The maps of ``slot`` for this process: a root daemon's two uids of the slot, or an
    ordinary user's one uid (its own). A rootless daemon does not use ``/etc/subuid``
    ranges yet: the fork server would have to run ``newuidmap`` (docs/rootless.md)."""
    import os

    if not rootless():
        return IdMap(slot)
    return RootlessMap(slot=slot, own_uid=os.geteuid(), own_gid=os.getegid())


def job_ids() -> tuple[int, int]:
    """The job user's uid and gid inside this process's containers (the plans need it)."""
    return (0, 0) if rootless() else (JOB_UID, JOB_GID)
