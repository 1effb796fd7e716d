"""A job's limits: the daemon's policy for each, and the record every step runs under.

Strategy: the limits themselves (names, units, wire ranges, parsing) are one
table in the protocol package, ``sandboxd_protocol.LIMITS``. This module adds
sandboxd's policy, one row per limit in ``POLICY``: the default, the least
and the most a job may ask for, and the mechanism that enforces it (a test
checks the mechanism is the one the supervisor's container side and the native init use).
``Limits``, the full record of one step, is built from both tables.

Every entry point (``run-once`` flags, the daemon's job messages, profiles)
produces a ``Limits`` through ``Limits.merged``, which takes the protocol's
typed ``JobLimits`` (``None`` = not set) straight from the socket, so that
validation is written and done once: an absurd value is refused with a
message that names the limit and the allowed range, never clamped in
silence.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sandboxd_protocol import (
    LIMITS,
    JobLimits,
    LimitValueError,
    format_size,
    parse_limits,
    parse_size,
)

__all__ = [
    "DEFAULT",
    "MAXIMUM",
    "POLICY",
    "PROFILE_CEILING",
    "GiB",
    "KiB",
    "LimitError",
    "Limits",
    "Mechanism",
    "MiB",
    "Policy",
    "format_size",
    "parse_size",
]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


class LimitError(ValueError):
    """A limit is malformed or outside its allowed range; the message says which and why."""


class Mechanism(enum.Enum):
    """What stops a job at a limit (tests/unit/test_limits_and_verdicts.py checks each)."""

    CGROUP = "cgroup"
    """The job's cgroup (memory.max or memory.limit_in_bytes with swap, pids.max),
    set by the supervisor (container.py) before the job starts: it holds the whole process tree."""
    RLIMIT = "rlimit"
    """setrlimit in the job process just before execve (native/init.c), soft =
    hard, from the ``Rlimits`` the supervisor sends: per process."""
    MOUNT_SIZE = "mount size"
    """The ``size=`` of a tmpfs the container mounts (``ContainerSpec``)."""
    OUTPUT_CAP = "output cap"
    """The supervisor keeps that many bytes of a stream and kills the job past them."""
    WATCHDOG = "watchdog"
    """The supervisor's watch (``Container._watchdog``) kills the cgroup when the
    CPU time read from it, or the wall clock, runs out."""


@dataclass(frozen=True, slots=True)
class Policy:
    """sandboxd's rule for one limit: what a job gets, may ask for, and what enforces it."""

    default: float | int
    minimum: float | int
    maximum: float | int
    """The ceiling unless an operator's profile says less: generous enough for a
    JVM build, small enough that one job cannot take this machine."""
    enforced_by: tuple[Mechanism, ...]


_M = Mechanism
POLICY: Mapping[str, Policy] = MappingProxyType({
    # The rlimit is a backstop of ceil(cpu_time) + 1 s: the watchdog is the limit.
    "cpu_time": Policy(5.0, 1e-6, 600.0, (_M.WATCHDOG, _M.RLIMIT)),
    "wall_time": Policy(10.0, 1e-6, 1200.0, (_M.WATCHDOG,)),
    # No floor but the kernel's: a limit below what a process needs to start is the
    # job's memory_limit (docs/profiles.md, "Tiny limits"), never a refusal.
    "memory": Policy(256 * MiB, 1, 16 * GiB, (_M.CGROUP,)),
    "pids": Policy(64, 1, 4096, (_M.CGROUP,)),
    "output": Policy(16 * MiB, 0, 1 * GiB, (_M.OUTPUT_CAP,)),
    "file_size": Policy(64 * MiB, 0, 4 * GiB, (_M.RLIMIT,)),
    # tmpfs reads size=0 as "unlimited": 1 byte (one page) is the least.
    "box_size": Policy(64 * MiB, 1, 4 * GiB, (_M.MOUNT_SIZE,)),
    "tmp_size": Policy(64 * MiB, 1, 4 * GiB, (_M.MOUNT_SIZE,)),
    "open_files": Policy(256, 1, 65536, (_M.RLIMIT,)),
    "stack": Policy(64 * MiB, 0, 1 * GiB, (_M.RLIMIT,)),
})
"""One row per row of ``sandboxd_protocol.LIMITS`` (a test checks they match)."""


def _merged(self: Any, overrides: JobLimits | Mapping[str, Any] | None,
            ceiling: Any = None) -> Any:
    """These limits with ``overrides`` applied, each checked against range and ceiling.

    ``overrides`` is the protocol's ``JobLimits`` (unset fields keep ours), or a
    mapping of names to values as people write them (a profile's TOML table).
    Clients send the same overrides job after job: the result is cached (every
    input is immutable), since merging and checking cost ~0.1 ms of the
    supervisor's CPU per job.
    """
    if overrides is None:
        return self
    same = _SAME.get((id(self), id(overrides), id(ceiling)))
    if same is not None and same[0] is self and same[1] is overrides and same[2] is ceiling:
        return same[3]
    if not isinstance(overrides, JobLimits):
        try:
            overrides = parse_limits(overrides)
        except LimitValueError as e:
            raise LimitError(str(e)) from None
    values = tuple(getattr(overrides, spec.name) for spec in LIMITS)
    if values.count(None) == len(values):
        return self
    # The types too: True == 1 and 1 == 1.0, but they need not be accepted alike.
    key = (self, overrides, tuple(map(type, values)), ceiling)
    try:
        hash(key)
    except TypeError:  # an unhashable value: certainly refused
        return _merged_cached.__wrapped__(*key)
    result = _merged_cached(*key)
    if isinstance(overrides, JobLimits):  # a mapping may be changed in place: not kept
        if len(_SAME) >= 256:
            _SAME.clear()
        _SAME[(id(self), id(overrides), id(ceiling))] = (self, overrides, ceiling, result)
    return result


# The very same three objects merged again (a front end that keeps its ``JobLimits`` per
# shape, as Judge0's does, and a profile's own limits): the answer without building and
# hashing the cache's key again, ~2 us a merge. Each entry holds its objects, so that
# their ids stay theirs while it lives; all are immutable. Bounded.
_SAME: dict[tuple[int, int, int], tuple[Any, Any, Any, Any]] = {}


@functools.lru_cache(maxsize=256)
def _merged_cached(base: Any, overrides: JobLimits, _types: tuple[type, ...],
                   ceiling: Any) -> Any:
    changes: dict[str, float | int] = {}
    for spec in LIMITS:
        raw = getattr(overrides, spec.name)
        if raw is not None:
            try:
                changes[spec.name] = spec.parse(raw)
            except LimitValueError as e:
                raise LimitError(str(e)) from None
    result = dataclasses.replace(base, **changes)
    result.check(ceiling or MAXIMUM)
    return result


def _check(self: Any, ceiling: Any) -> None:
    """Refuse a value that is not a finite number within [minimum, ``ceiling``]."""
    for spec in LIMITS:
        value = getattr(self, spec.name)
        top = getattr(ceiling, spec.name)
        low = POLICY[spec.name].minimum
        if not (isinstance(value, int | float) and math.isfinite(value)):
            raise LimitError(f"limit {spec.name} must be a finite number, not {value!r}")
        if value < low or value > top:
            raise LimitError(f"limit {spec.name}={spec.show(value)} is outside the allowed "
                             f"range [{spec.show(low)}, {spec.show(top)}]")


def _as_dict(self: Any) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _to_wire(self: Any) -> JobLimits:
    """The protocol's record of these limits, every field set (a profile's defaults)."""
    return JobLimits(**{spec.name: getattr(self, spec.name) for spec in LIMITS})


Limits: Any = dataclasses.make_dataclass(
    "Limits",
    [(spec.name, spec.type.__name__, dataclasses.field(default=POLICY[spec.name].default))
     for spec in LIMITS],
    frozen=True,
    slots=True,
    namespace={"__module__": __name__, "merged": _merged, "check": _check,
               "as_dict": _as_dict, "to_wire": _to_wire},
)
Limits.__doc__ = """Every limit of one step: one field per row of ``sandboxd_protocol.LIMITS``,
with ``POLICY``'s default. Times in seconds (float), sizes in bytes, counts (int)."""

# The ceiling a job may ask for unless an operator's profile says less.
MAXIMUM = Limits(**{name: policy.maximum for name, policy in POLICY.items()})
# What an operator's profile may raise its own ``max_limits`` to: long CI jobs run for
# hours (docs/ci.md), a judge's never do, so only a profile that says so allows them.
PROFILE_CEILING = dataclasses.replace(MAXIMUM, wall_time=86400.0, cpu_time=86400.0)
DEFAULT = Limits()
