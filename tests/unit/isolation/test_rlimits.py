"""The rlimits every job gets (what the job process applies, soft = hard, before its execve)."""

from __future__ import annotations

import resource

from sandboxd.isolation.rlimits import Rlimits
from sandboxd.spawn import encode_exec


def test_hardening_limits_are_always_sent():
    """No core dumps, no real-time priority, no raising of priority: whatever the job
    asked and whatever the host's defaults (a service manager may raise them)."""
    pairs = dict(Rlimits().pairs())
    assert pairs == {resource.RLIMIT_CORE: 0, resource.RLIMIT_RTPRIO: 0,
                     resource.RLIMIT_NICE: 0}


def test_cpu_backstop_is_a_whole_second_past_the_limit():
    """RLIMIT_CPU counts whole seconds; the cgroup watchdog ends the job first."""
    assert dict(Rlimits(cpu_seconds=1.2).pairs())[resource.RLIMIT_CPU] == 3
    assert dict(Rlimits(cpu_seconds=2).pairs())[resource.RLIMIT_CPU] == 3


def test_limits_ride_in_the_exec_request():
    """The tail of the exec request: u32 count, then (u32 resource, u64 value) each."""
    limits = Rlimits(file_size=1 << 20, open_files=64)
    msg = encode_exec(["true"], {}, "/box", limits)
    tail = msg[-(4 + 12 * len(limits.pairs())):]
    assert int.from_bytes(tail[:4], "little") == len(limits.pairs()) == 5
    got = {int.from_bytes(tail[4 + 12 * i:8 + 12 * i], "little"):
           int.from_bytes(tail[8 + 12 * i:16 + 12 * i], "little") for i in range(5)}
    assert got[resource.RLIMIT_FSIZE] == 1 << 20 and got[resource.RLIMIT_NOFILE] == 64
    assert got[resource.RLIMIT_RTPRIO] == 0 and got[resource.RLIMIT_NICE] == 0


def test_lower_or_equal_is_what_lowering_alone_reaches():
    """A warm Python interpreter started under one set of rlimits takes a job whose own
    are reachable by lowering only (runtimes: lowers_rlimits): none higher, none added."""
    from sandboxd.isolation.rlimits import lower_or_equal

    shape = Rlimits(cpu_seconds=5, file_size=64 << 20, open_files=256, stack=64 << 20)
    assert lower_or_equal(shape, shape)
    assert lower_or_equal(Rlimits(cpu_seconds=3, file_size=1 << 20, open_files=64,
                                  stack=8 << 20), shape)
    assert not lower_or_equal(Rlimits(cpu_seconds=9, file_size=64 << 20, open_files=256,
                                      stack=64 << 20), shape)
    assert not lower_or_equal(Rlimits(cpu_seconds=5, file_size=64 << 20, open_files=257,
                                      stack=64 << 20), shape)
    # a limit the shape does not set (unlimited there) is not "lower": it is added
    assert not lower_or_equal(shape, Rlimits(cpu_seconds=5, file_size=64 << 20,
                                             open_files=256))
    assert not lower_or_equal(Rlimits(cpu_seconds=5), shape)
