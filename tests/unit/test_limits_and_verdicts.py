"""Pure tests of limits parsing and the verdict rules: no kernel needed."""

from __future__ import annotations

import os
import resource
import signal

import pytest

from sandboxd.isolation.rlimits import Rlimits
from sandboxd.limits import DEFAULT, MAXIMUM, LimitError, Limits, format_size, parse_size
from sandboxd.result import Measured, Result, decide, judged


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("512", 512), ("64K", 64 << 10),
                                             ("1M", 1 << 20), ("1.5G", 3 << 29),
                                             ("2g", 2 << 30), ("256MiB", 256 << 20)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "M", "-1M", "1Q", "1 2", "ten", True, 1.5])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(bad)


def test_format_size_round_trips():
    for n in (1 << 10, 64 << 20, 3 << 30, 1000):
        assert parse_size(format_size(n)) == n


def test_merged_applies_and_checks():
    lim = DEFAULT.merged({"cpu_time": 1.5, "memory": "64M", "pids": 8})
    assert (lim.cpu_time, lim.memory, lim.pids) == (1.5, 64 << 20, 8)
    assert lim.wall_time == DEFAULT.wall_time


@pytest.mark.parametrize(("overrides", "match"), [
    ({"memory": "1T"}, "memory=1024G is outside the allowed range"),
    ({"cpu_time": 0}, "cpu_time=0 is outside"),
    ({"pids": 0}, "pids=0 is outside"),
    ({"cpu_time": float("nan")}, "finite"),
    ({"cpu_time": "soon"}, "number of seconds"),
    ({"pids": 1.5}, "integer"),
    ({"pids": True}, "not a boolean"),
    ({"colour": 1}, "unknown limit 'colour'"),
])
def test_merged_refuses_absurd_values(overrides, match):
    with pytest.raises(LimitError, match=match):
        DEFAULT.merged(overrides)


def test_ceiling_of_a_profile_wins():
    ceiling = Limits(cpu_time=2.0, memory=MAXIMUM.memory)
    with pytest.raises(LimitError, match=r"cpu_time=3 .* \[1e-06, 2\]"):
        DEFAULT.merged({"cpu_time": 3}, ceiling)


def test_the_same_overrides_merged_again_give_the_same_answer_and_refusal():
    """A ``JobLimits`` merged again (remembered by identity) gives what it gave, under each
    ceiling its own; one refused is refused every time, never remembered as merged."""
    import sandboxd_protocol as proto

    ok = proto.JobLimits(cpu_time=3.0, memory=64 << 20)
    low = Limits(cpu_time=2.0, memory=MAXIMUM.memory)
    for _ in range(2):
        lim = DEFAULT.merged(ok)
        assert (lim.cpu_time, lim.memory) == (3.0, 64 << 20) and DEFAULT.merged(ok) is lim
        with pytest.raises(LimitError, match="cpu_time=3"):
            DEFAULT.merged(ok, low)
        assert Limits(pids=5).merged(ok).pids == 5  # another base, its own answer


def m(**kw) -> Measured:  # type: ignore[no-untyped-def]
    base = {"wait_status": 0, "cpu_ns": 10**8, "user_ns": 9 * 10**7, "sys_ns": 10**7,
            "wall_s": 0.2, "memory_peak": 1 << 20, "oom_kills": 0}
    base.update(kw)
    return Measured(**base)


def exited(code: int) -> int:
    return code << 8


def test_ok_and_fields():
    r = decide(m(), DEFAULT)
    assert (r.verdict, r.reason, r.exit_code, r.signal) == ("ok", None, 0, None)
    assert (r.cpu_time, r.user_time, r.sys_time, r.wall_time) == (0.1, 0.09, 0.01, 0.2)


def test_runtime_error_by_code_and_signal():
    r = decide(m(wait_status=exited(3)), DEFAULT)
    assert (r.verdict, r.exit_code, r.reason) == ("runtime_error", 3, "exit code 3")
    r = decide(m(wait_status=signal.SIGSEGV), DEFAULT)
    assert (r.verdict, r.signal, r.exit_code) == ("runtime_error", 11, None)
    assert r.reason == "signal SIGSEGV"


def test_time_limits():
    lim = DEFAULT.merged({"cpu_time": 1})
    assert decide(m(killed_for="cpu", wait_status=9, cpu_ns=10**9), lim).reason == "cpu"
    # finished by itself, but over the limit: still a time limit
    r = decide(m(cpu_ns=10**9 + 1), lim)
    assert (r.verdict, r.reason) == ("time_limit", "cpu")
    assert decide(m(wait_status=signal.SIGXCPU), lim).reason == "cpu"
    r = decide(m(killed_for="wall", wait_status=9), lim)
    assert (r.verdict, r.reason) == ("time_limit", "wall")


def test_precedence():
    # output beats time, time beats memory, memory beats a plain signal
    r = decide(m(killed_for="output", stdout_truncated=True, cpu_ns=10**10, oom_kills=1), DEFAULT)
    assert (r.verdict, r.reason) == ("output_limit", "stdout")
    r = decide(m(killed_for="wall", oom_kills=1, wait_status=9), DEFAULT)
    assert r.verdict == "time_limit"
    r = decide(m(oom_kills=1, wait_status=9), DEFAULT)
    assert (r.verdict, r.oom_killed) == ("memory_limit", True)
    r = decide(m(wait_status=signal.SIGXFSZ), DEFAULT)
    assert (r.verdict, r.reason) == ("output_limit", "file_size")
    r = decide(m(killed_for="cancel", wait_status=9), DEFAULT)
    assert r.verdict == "cancelled"


def test_no_status_is_our_fault():
    r = decide(m(wait_status=None), DEFAULT)
    assert r.verdict == "sandbox_error" and r.reason


def test_realtime_signal_names_do_not_crash():
    sig = signal.SIGRTMIN + 3
    r = decide(m(wait_status=sig), DEFAULT)
    assert r.verdict == "runtime_error" and r.signal == sig
    assert os.WIFSIGNALED(sig)


# ------------------------------------------------------------- limits as judges set them

def test_small_limits_are_accepted_down_to_the_kernels_floor() -> None:
    tiny = DEFAULT.merged({"memory": 1, "open_files": 1, "stack": 0, "box_size": 1,
                           "tmp_size": 1, "cpu_time": 1e-6, "wall_time": 1e-6, "pids": 1})
    assert (tiny.memory, tiny.stack, tiny.cpu_time) == (1, 0, 1e-6)
    with pytest.raises(LimitError, match=r"box_size=0 is outside"):  # tmpfs: 0 = unlimited
        DEFAULT.merged({"box_size": 0})


def _failed(stderr: bytes, sig: int = signal.SIGABRT) -> Result:
    return decide(Measured(wait_status=sig, cpu_ns=1000, user_ns=1000, sys_ns=0, wall_s=0.01,
                           memory_peak=1 << 20, oom_kills=0, stderr=stderr), DEFAULT)


@pytest.mark.parametrize(("stderr", "marker"), [
    (b"terminate called after throwing an instance of 'std::bad_alloc'\n", "std::bad_alloc"),
    (b"Traceback ...\nMemoryError\n", "MemoryError"),
    (b"./main: error while loading shared libraries: libc.so.6: failed to map segment from "
     b"shared object\n", "failed to map segment from shared object"),
])
def test_a_failed_allocation_is_memory_limit_only_in_address_space_mode(stderr: bytes,
                                                                        marker: str) -> None:
    result = _failed(stderr)
    assert result.verdict == "runtime_error"
    assert judged(result).verdict == "runtime_error"  # peak: the kernel kills, not this
    got = judged(result, address_space=True)
    assert (got.verdict, got.reason) == ("memory_limit", f"address space: {marker}")


def test_a_silent_segfault_cannot_be_told_from_another_bug() -> None:
    got = judged(_failed(b"", signal.SIGSEGV), address_space=True)
    assert (got.verdict, got.reason) == ("runtime_error", "signal SIGSEGV")


def test_the_address_space_rlimit_reaches_the_job_process() -> None:
    assert (resource.RLIMIT_AS, 256 << 20) in Rlimits(address_space=256 << 20).pairs()
    assert all(which != resource.RLIMIT_AS for which, _ in Rlimits().pairs())
