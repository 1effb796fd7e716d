"""The one cgroup interface the rest of sandboxd sees.

Strategy: a backend (v1 or v2) owns a *root* beneath the cgroup this process
was started in (never a hierarchy's root), and creates one *job cgroup* per
container beneath that root. Everything above this module speaks only of
limits, counters and "kill everything in it"; which files carry them, and
which cgroup version is mounted, is known only to the sibling modules.

This module must not know about jobs, sockets, protocols or trio.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


class CgroupError(Exception):
    """A cgroup operation failed: always our fault or the host's, never the job's."""


class MemoryInUse(CgroupError):
    """A memory limit below what the cgroup already holds and cannot give back.

    cgroup v1 refuses such a limit (EBUSY) where v2 takes it and OOM-kills: the
    job's process, waiting for its job, already uses more than a tiny limit
    allows. That is the job's ``memory_limit``, not the sandbox's failure
    (``Container.run``).
    """


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    """Limits written before a job starts. ``None`` means: leave unlimited."""

    memory: int | None = None  # bytes, RAM + swap together (swap cannot stretch it)
    pids: int | None = None  # processes + threads
    cpuset: str | None = None  # e.g. "1" to pin on CPU 1 (judges), None: inherit
    cpu_quota: float | None = None  # CPUs' worth of bandwidth (1.5 = 150 % of one core)


#: The least memory and pids limits ``keepable`` leaves on a recycled cgroup: room for the
#: next container's job process while it waits (a few hundred KiB, one process), so that a
#: tiny limit of the last job's never fails the next container's set-up.
KEEP_MIN_MEMORY = 16 << 20
KEEP_MIN_PIDS = 8


def keepable(limits: CgroupLimits | None) -> CgroupLimits | None:
    """The memory and pids limits of ``limits`` that may stay on a recycled cgroup (None:
    lift them all); pinning and a CPU quota are lifted as before."""
    if limits is None or (limits.memory is not None and limits.memory < KEEP_MIN_MEMORY) \
            or (limits.pids is not None and limits.pids < KEEP_MIN_PIDS):
        return None
    return CgroupLimits(memory=limits.memory, pids=limits.pids)


@dataclass(frozen=True, slots=True)
class CgroupStats:
    """Counters read after (or during) a job. Times in nanoseconds, memory in bytes.

    On both versions ``cpu_user_ns + cpu_system_ns == cpu_usage_ns``: the split
    is the kernel's tick-sampled ratio, scaled to the exact total.
    """

    cpu_usage_ns: int
    cpu_user_ns: int
    cpu_system_ns: int
    memory_peak: int
    oom_kills: int
    pids_peak: int | None  # None where the kernel does not keep it


@dataclass(slots=True)
class RunFiles:
    """What a job cgroup lends the engine for a run (``JobCgroup.run_files``; the RUN of
    sandboxd/engine.py): descriptors it keeps open, and the memory limit's text to write
    back after a drain (empty: no drain there)."""

    freezer_state: int
    freezer_dir: int
    memory_usage: int
    memory_limit: int
    counters: tuple[int, ...]  # cpuacct.usage first (the watchdog's)
    zero: tuple[int, ...]  # zeroed at a recycle
    restore: bytes
    leftover_ok: int
    caches: int


class JobCgroup(abc.ABC):
    """One job's cgroup (in every hierarchy that the backend uses)."""

    name: str

    @abc.abstractmethod
    def set_limits(self, limits: CgroupLimits) -> None:
        """Write limits; called while the cgroup holds no running job process."""

    @abc.abstractmethod
    def add_pid(self, pid: int) -> None:
        """Move a process (host pid) into this cgroup."""

    def procs_files(self) -> list[int]:
        """Descriptors of this cgroup's ``cgroup.procs`` files, open for writing, in the
        order ``add_pid`` writes them, for a container's init to move its job process
        itself (spawn.ForkServer): the write's permission is the opener's, its pid is
        read in the writer's PID namespace. Empty where the backend does not lend them
        (``add_pid`` then moves it from here). The cgroup keeps them open."""
        return []

    def run_files(self) -> RunFiles | None:
        """What the engine needs to watch a run of this cgroup and reset it after (its RUN),
        or None where it cannot (then the supervisor watches the run itself)."""
        return None

    def stats_from(self, texts: list[bytes], ended: bool = False) -> CgroupStats:
        """``stats`` from the texts of ``run_files``' counters, read by the engine."""
        raise CgroupError(f"{self.name}: lends no counters")

    def engine_reset(self, limit_lost: bool) -> None:
        """The engine reset this cgroup after a run (``stats_from(ended=True)`` first)."""
        raise CgroupError(f"{self.name}: lends no counters")

    @abc.abstractmethod
    def pids(self) -> list[int]:
        """Host pids of every process currently in the cgroup."""

    @abc.abstractmethod
    def cpu_usage_ns(self) -> int:
        """Total CPU time of everything that ran in the cgroup: the cheap, hot-path read."""

    @abc.abstractmethod
    def stats(self, ended: bool = False) -> CgroupStats:
        """Every counter at once (after the job, or for ``ps``). ``ended``: the caller has
        just proven the cgroup empty (its job's processes killed and gone), so nothing can
        enter it again but a move of ours or a container's init it is lent to: a backend
        may keep what it read for the next ``reset`` instead of reading it again."""

    def baseline(self) -> CgroupStats:
        """The counters a job's figures are taken from, read just before its hand-over:
        what ``stats`` would subtract (its CPU so far, the OOM kills counted so far)."""
        return self.stats()

    @abc.abstractmethod
    def kill_all(self, timeout: float = 5.0) -> None:
        """Freeze, SIGKILL every process, thaw, and wait until the cgroup is empty.

        Freezing first means a fork bomb cannot create processes faster than
        they are killed. Raises CgroupError if processes remain after timeout.
        """

    @abc.abstractmethod
    def reset(self) -> None:
        """Make an empty cgroup fit for the next job: limits lifted, peaks reset.

        Raises CgroupError if the cgroup is not empty (a recycled cgroup must be
        proven empty).
        """

    def reset_quick(self, keep: CgroupLimits | None = None) -> bool:
        """``reset`` now if it cannot block (no reclaim, no directory to remake): True;
        False, having done nothing, if the caller should run ``reset`` in a thread.

        A job's used cgroup is reset on the event loop when it takes a few syscalls:
        a hand-off to a worker thread costs the supervisor more CPU than they do.
        ``keep``: limits to leave in place instead of lifting them (the pool's recycle of
        a container of the same shape, whose next job most likely has the same ones:
        ``keepable``), so that neither the reset nor that job writes them.
        """
        return False

    @abc.abstractmethod
    def remove(self) -> None:
        """Kill what is left and delete the cgroup directories. Idempotent."""


class CgroupBackend(abc.ABC):
    """A cgroup hierarchy layout (v1 or v2) with our root beneath our own cgroup."""

    version: int
    root_name: str

    @abc.abstractmethod
    def create(self, name: str) -> JobCgroup:
        """Create a job cgroup ``name`` beneath our root (name must contain 'sandboxd')."""

    @abc.abstractmethod
    def remove_stale(self) -> list[str]:
        """Remove job cgroups left by a crashed run (killing their processes); return paths."""

    @abc.abstractmethod
    def close(self) -> None:
        """Remove every job cgroup and the root. Idempotent."""

    @abc.abstractmethod
    def problems(self) -> list[str]:
        """Missing controllers or features, each with how to fix it (check-environment)."""
