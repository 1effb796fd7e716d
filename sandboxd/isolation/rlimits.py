"""Resource limits of the job process (setrlimit): the per-process backstops.

Strategy: the cgroup enforces memory, processes and CPU for the whole tree;
rlimits add what a cgroup cannot (file size, open files, stack, no core
dumps) and a CPU-seconds backstop that ends a process even if the
supervisor's watch were late. Limits are only ever lowered here, so an
unprivileged process can apply them to itself just before execve.

This module knows nothing of jobs, sockets, cgroups or trio.
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rlimits:
    cpu_seconds: float | None = None  # backstop; becomes ceil(s) + 1
    file_size: int | None = None  # bytes
    open_files: int | None = None
    stack: int | None = None  # bytes
    address_space: int | None = None  # bytes: RLIMIT_AS, a job's memory_mode "address_space"
    core: int = 0
    # No real-time priority and no raising of priority, whatever the host's defaults:
    # a job must not starve the supervisor or the other jobs' timing (isolate does the
    # same with its scheduling limits; nsjail sets rlimit_rtprio 0).
    rtprio: int = 0
    nice: int = 0

    def pairs(self) -> list[tuple[int, int]]:
        out = [(resource.RLIMIT_CORE, self.core), (resource.RLIMIT_RTPRIO, self.rtprio),
               (resource.RLIMIT_NICE, self.nice)]
        if self.cpu_seconds is not None:
            out.append((resource.RLIMIT_CPU, math.ceil(self.cpu_seconds) + 1))
        if self.file_size is not None:
            out.append((resource.RLIMIT_FSIZE, self.file_size))
        if self.open_files is not None:
            out.append((resource.RLIMIT_NOFILE, self.open_files))
        if self.stack is not None:
            out.append((resource.RLIMIT_STACK, self.stack))
        if self.address_space is not None:
            out.append((resource.RLIMIT_AS, self.address_space))
        return out


def lower_or_equal(limits: Rlimits, than: Rlimits) -> bool:
    """Whether a process under ``than`` reaches ``limits`` by lowering alone (what an
    unprivileged process may do to itself): the same limits set, none of them higher."""
    mine, theirs = dict(limits.pairs()), dict(than.pairs())
    return mine.keys() == theirs.keys() and all(v <= theirs[k] for k, v in mine.items())


def apply(limits: Rlimits) -> None:
    """Set soft and hard limit alike, so the job cannot raise them back."""
    for which, value in limits.pairs():
        resource.setrlimit(which, (value, value))
