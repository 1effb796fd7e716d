"""What a job step comes to: the raw facts measured, and the verdict derived from them.

Strategy (isolate's two kinds of failure): a job's bad outcome is a *value*,
a ``Result`` with its verdict and accounting; our own failure is a
``SandboxError`` with a reason, turned into a ``sandbox_error`` result only
at the edge. This module is the one place that decides verdicts, each rule
a pure function unit-tested without a kernel: ``decide`` from the
measurements of a run, ``judged`` from what the run printed (the runtime's
own out-of-memory error, the expected answer), ``compile_failed`` for a
compile step, and ``Result.without_run`` for a step that never ran (our
failure, a cancellation, a test skipped after a failure).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import signal as _signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandboxd.compare import compare

if TYPE_CHECKING:  # the zygote imports this module: it needs no limits
    from sandboxd.limits import Limits

VERDICTS = ("ok", "runtime_error", "time_limit", "memory_limit", "output_limit",
            "compile_error", "wrong_answer", "sandbox_error", "cancelled",
            # a judge's (sandboxd/service/): the problem's programs' fault (a checker's, an
            # interactor's), testlib's exit 2, a test not run because of an earlier failure
            "judge_error", "presentation_error", "skipped")


class SandboxError(Exception):
    """sandboxd itself failed (not the job): always carries a reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Measured:
    """The raw facts of one finished run step, before any verdict."""

    wait_status: int | None  # from waitpid; None if the job process never ran
    cpu_ns: int
    user_ns: int
    sys_ns: int
    wall_s: float
    memory_peak: int
    oom_kills: int
    killed_for: str | None = None  # "cpu", "wall", "output", "cancel" when we killed it
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    verdict: str
    reason: str | None
    exit_code: int | None
    signal: int | None
    cpu_time: float
    user_time: float
    sys_time: float
    wall_time: float
    memory_peak: int
    oom_killed: bool
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def as_json(self) -> dict[str, Any]:
        """The fields of ``run-once --json``: outputs as text, exact bytes when they are not.

        ``stdout``/``stderr`` are the output decoded as UTF-8; when the bytes are
        not valid UTF-8 (binary output), undecodable bytes are U+FFFD there and
        ``stdout_b64``/``stderr_b64`` carry the exact bytes in base64.
        """
        d = self.as_dict()
        for stream in ("stdout", "stderr"):
            data: bytes = d[stream]
            try:
                d[stream] = data.decode("utf-8")
            except UnicodeDecodeError:
                d[stream] = data.decode("utf-8", "replace")
                d[f"{stream}_b64"] = base64.b64encode(data).decode("ascii")
        return d

    @classmethod
    def sandbox_error(cls, reason: str, wall: float = 0.0) -> Result:
        return cls.without_run("sandbox_error", reason, wall)

    @classmethod
    def without_run(cls, verdict: str, reason: str, wall: float = 0.0) -> Result:
        """A step that produced no measurements: our failure, or a test skipped."""
        return cls(verdict, reason, None, None, 0.0, 0.0, 0.0, round(wall, 6), 0,
                   False, b"", b"", False, False)


def _signal_name(sig: int) -> str:
    """SIGSEGV, or SIGRTMIN+3 for the real-time signals Python's enum does not name."""
    try:
        return _signal.Signals(sig).name
    except ValueError:
        if _signal.SIGRTMIN <= sig <= _signal.SIGRTMAX:
            return f"SIGRTMIN+{sig - _signal.SIGRTMIN}"
        return str(sig)


def _seconds(ns: int) -> float:
    return round(ns / 1e9, 6)


def decide(m: Measured, limits: Limits) -> Result:
    """The verdict rules, in order of precedence."""
    exit_code = sig = None
    if m.wait_status is not None:
        if os.WIFEXITED(m.wait_status):
            exit_code = os.WEXITSTATUS(m.wait_status)
        elif os.WIFSIGNALED(m.wait_status):
            sig = os.WTERMSIG(m.wait_status)
    cpu_s = _seconds(m.cpu_ns)
    verdict, reason = "ok", None
    if m.killed_for == "cancel":
        verdict, reason = "cancelled", "cancelled by the client"
    elif m.killed_for == "output":
        verdict, reason = "output_limit", "stdout" if m.stdout_truncated else "stderr"
    elif m.killed_for == "cpu" or cpu_s >= limits.cpu_time or sig == _signal.SIGXCPU:
        verdict, reason = "time_limit", "cpu"
    elif m.killed_for == "wall":
        verdict, reason = "time_limit", "wall"
    elif m.oom_kills > 0:
        verdict, reason = "memory_limit", "memory"
    elif sig == _signal.SIGXFSZ:
        verdict, reason = "output_limit", "file_size"
    elif m.wait_status is None:
        verdict, reason = "sandbox_error", "the job process never reported an exit status"
    elif sig is not None or exit_code != 0:
        verdict = "runtime_error"
        reason = f"signal {_signal_name(sig)}" if sig else f"exit code {exit_code}"
    return Result(
        verdict=verdict, reason=reason, exit_code=exit_code, signal=sig,
        cpu_time=cpu_s, user_time=_seconds(m.user_ns), sys_time=_seconds(m.sys_ns),
        wall_time=round(m.wall_s, 6), memory_peak=m.memory_peak, oom_killed=m.oom_kills > 0,
        stdout=m.stdout, stderr=m.stderr, stdout_truncated=m.stdout_truncated,
        stderr_truncated=m.stderr_truncated,
    )


# What a program prints when an allocation fails under RLIMIT_AS (memory_mode
# "address_space"), before it dies: the C++ runtime's uncaught std::bad_alloc (then
# SIGABRT), Python's MemoryError, PHP's and PyPy's, glibc's and the loader's words for
# ENOMEM. A C program
# that dereferences malloc's NULL dies of SIGSEGV, which nothing tells from another bug.
ADDRESS_SPACE_MARKERS: tuple[str, ...] = (
    "std::bad_alloc", "MemoryError", "Cannot allocate memory", "cannot allocate memory",
    "failed to map segment from shared object", "out of memory", "Out of memory",
    "cannot allocate nursery",
)


def judged(result: Result, *, heap_markers: tuple[str, ...] = (), expected: bytes | None = None,
           mode: str = "trailing_ws", tolerance: float | None = None,
           address_space: bool = False) -> Result:
    """The verdict of a finished run once its output is read.

    A runtime error that is the runtime's own heap running out is a memory
    limit: the JVM and V8 get a heap ceiling below the step's limit (they
    cannot see the cgroup), so a program that keeps too much alive dies of
    their error, not of the kernel's OOM killer; a judge calls both
    ``memory_limit``. A program can print the marker itself: it gains nothing
    by it. Then a run that was ``ok`` and printed other than ``expected`` is
    a ``wrong_answer``.
    """
    if result.verdict == "runtime_error":
        for marker in heap_markers:
            if marker.encode() in result.stderr:
                return dataclasses.replace(result, verdict="memory_limit",
                                           reason=f"heap: {marker}")
        # Under RLIMIT_AS a failed reservation is the memory limit (``address_space``).
        for marker in ADDRESS_SPACE_MARKERS if address_space else ():
            if marker.encode() in result.stderr:
                return dataclasses.replace(result, verdict="memory_limit",
                                           reason=f"address space: {marker}")
        return result
    if expected is None or result.verdict != "ok":
        return result
    if compare(result.stdout, expected, mode, tolerance):
        return result
    return dataclasses.replace(result, verdict="wrong_answer", reason=f"output differs ({mode})")


def compile_failed(result: Result) -> Result:
    """A compile step that did not end ``ok``: the source's fault, unless it was ours.

    ``sandbox_error`` and ``cancelled`` stay what they are; anything else is a
    ``compile_error`` whose reason keeps what ended it (``time_limit (cpu)``).
    """
    if result.verdict in ("ok", "sandbox_error", "cancelled"):
        return result
    reason = result.reason if result.verdict == "runtime_error" else (
        f"{result.verdict} ({result.reason})" if result.reason else result.verdict)
    return dataclasses.replace(result, verdict="compile_error", reason=reason)
