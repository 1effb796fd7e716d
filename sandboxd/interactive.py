"""Interactive problems: the solution and the problem's interactor, run together and wired.

Strategy (Codeforces/Polygon's interactors, testlib's protocol): for each test,
two fresh single-use containers from the pool, each exactly as isolated as any
job and each under its own limits and accounting, run at the same time. The
supervisor makes two pipes and hands their ends to the two inits as the jobs'
stdio (``RunStep.stdin_fd``/``stdout_fd``): the solution's stdout is the
interactor's stdin and the interactor's stdout the solution's stdin. The bytes
go straight from one process to the other through the kernel; the supervisor
never copies them. Nothing else is shared: no file, no namespace, no cgroup.
The interactor gets the test's input, and its expected answer when the test
has one, as files in its own box, in testlib's order: ``interactor input.txt
output.txt [answer.txt]`` (``output.txt`` is where a testlib interactor writes
what a checker would read; it stays in the interactor's box).

Who decides (``interactive_verdict``, a pure function): the interactor's exit
code, as testlib's: 0 ok, 1 wrong answer, 2 (and 4) presentation error, 8
unexpected end of the solution's output (wrong answer), 3 the interactor's own
failure (``judge_error``), 7 partial points (``points X`` on its stderr, a
fraction of the test's points). The solution's own limits still hold: its
``time_limit``, ``memory_limit``, ``runtime_error``, ``output_limit`` win when
they happened first, that is when the solution ended (or was killed for a
limit) before the interactor exited, and always when the interactor said ok
(a solution must end well by itself). A solution killed by ``SIGPIPE`` wrote
to an interactor that had already finished: the interactor came first. Once
the interactor exits with anything but ok or points, the solution is killed
(the test is decided; nothing would read what it writes). An interactor that
crashes, exceeds its own limits or exits with a code testlib does not define
is the problem's fault: ``judge_error`` with the reason, never the
contestant's, unless the solution had already failed by itself.

Hangs: a deadlock (both read, neither writes) ends at the solution's wall limit
as ``time_limit`` with reason ``wall``. The interactor's wall limit, unless the
problem sets it, is the solution's plus ``INTERACTOR_WALL_MARGIN``, so that the
solution's clock runs out first; once the solution is gone the interactor reads
end of file and exits. An interactor that sleeps without reading looks exactly
like a deadlock from outside and gives the same verdict; one that spins runs
out of its own CPU limit: ``judge_error``. Once the solution has failed by
itself (its verdict then stands), the interactor gets ``INTERACTOR_GRACE`` to
finish and is killed. A solution that forks and leaves a
child holding the pipe: when the solution's process ends, its container's
cgroup is killed (as for every job), so the interactor sees end of file.

A pair counts as one step of the scheduler's concurrency: the interactor
mostly waits for the solution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import select
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from sandboxd.cgroups import CgroupError
from sandboxd.container import Container, RunStep
from sandboxd.limits import Limits
from sandboxd.result import Result, SandboxError
from sandboxd.spawn import ContainerSpec

INTERACTOR_FILES = ("input.txt", "output.txt", "answer.txt")
"""The files an interactor gets after its argv, in testlib's order (``answer.txt``
only when the test has an expected answer)."""
INTERACTOR_WALL_MARGIN = 1.0
"""Seconds the interactor's default wall limit exceeds the solution's."""
INTERACTOR_GRACE = 1.0
"""Seconds an interactor may still run once the solution has failed by itself (its
verdict is then the solution's): time to write its message, then it is killed."""
MESSAGE_CAP = 4096
"""The longest interactor message a step result carries."""
JUDGE_ERROR = "judge_error"

# testlib's exit codes
_OK, _WA, _PE, _FAIL, _DIRT, _POINTS, _EOF = 0, 1, 2, 3, 4, 7, 8
_POINTS_RE = re.compile(rb"^\s*points\s+([-+0-9.eE]+)", re.MULTILINE)
# Killed by us for one of the solution's own limits: the kill's time is its end.
_LIMIT_KILLS = ("cpu", "wall", "output")
PEER_KILL = "peer"
"""``Container.kill``'s reason for a solution whose interactor has decided."""


@dataclass(frozen=True, slots=True)
class Ran:
    """One side of a wired test: its result, when it ended (the supervisor's monotonic
    clock; None when it never ran) and whether it was the first of the two to end
    (None when the kernel's order was not seen: the times decide)."""

    result: Result
    ended: float | None
    first: bool | None = None
    # Killed because the other side had ended (the solution after its interactor's
    # verdict): whatever it came to then, even a hand-over that failed, is not its own.
    by_peer: bool = False


class PairRunner(Protocol):
    """Leases two fresh containers (the solution's shape, then the interactor's) as one
    step of the scheduler's concurrency, and runs ``body`` with them and the solution's
    pinned CPU (None when not pinned); the containers are the job's to release."""

    async def __call__(self, solution: ContainerSpec, interactor: ContainerSpec,
                       body: Callable[[Container, Container, str | None],
                                      Awaitable[tuple[Ran, Ran]]],
                       pin: bool = False) -> tuple[Ran, Ran]: ...


def interactor_limits(own: Limits, solution: Limits, explicit_wall: bool,
                      ceiling: Limits) -> Limits:
    """The interactor's limits: its own, but a wall limit past the solution's unless the
    problem set one (so that a deadlock is the solution's ``time_limit``)."""
    if explicit_wall:
        return own
    wall = min(max(own.wall_time, solution.wall_time + INTERACTOR_WALL_MARGIN),
               max(ceiling.wall_time, own.wall_time))
    return dataclasses.replace(own, wall_time=wall)


def interactor_argv(argv: list[str], has_answer: bool) -> list[str]:
    return [*argv, *INTERACTOR_FILES[:3 if has_answer else 2]]


def interactor_files(files: dict[str, bytes], stdin: bytes,
                     answer: bytes | None) -> dict[str, bytes]:
    """The interactor's box: its program, the test's input, an empty output file, the
    answer if any (the program's own files of those names are replaced)."""
    out = dict(files)
    out[INTERACTOR_FILES[0]] = stdin
    out[INTERACTOR_FILES[1]] = b""
    if answer is not None:
        out[INTERACTOR_FILES[2]] = answer
    return out


async def run_wired(solution: Container, interactor: Container, sol_step: RunStep,
                    int_step: RunStep) -> tuple[Ran, Ran]:
    """Run both steps at once, wired stdout to stdin both ways; each result as
    ``Container.run`` decides it (``sandbox_error`` for sandboxd's own failure).

    Cancellation: both containers' jobs are killed (``Container.run`` does it).
    """
    to_int_r, to_int_w = os.pipe2(os.O_CLOEXEC)  # solution stdout -> interactor stdin
    try:
        to_sol_r, to_sol_w = os.pipe2(os.O_CLOEXEC)  # interactor stdout -> solution stdin
    except OSError:
        os.close(to_int_r)
        os.close(to_int_w)
        raise
    # From here each descriptor belongs to one ``run``, which closes it after the
    # hand-over: then the only holders of each pipe are the two jobs.
    sol_step = dataclasses.replace(sol_step, stdin_fd=to_sol_r, stdout_fd=to_int_w)
    int_step = dataclasses.replace(int_step, stdin_fd=to_int_r, stdout_fd=to_sol_w)
    out: dict[str, Ran] = {}
    order = _Order(solution, interactor, to_int_r, to_sol_r)

    solution_failed = trio.Event()

    async def run_solution() -> None:
        try:
            result = await solution.run(sol_step)
        except (SandboxError, CgroupError) as e:  # ours: a result, not a crash of the pair
            result = Result.sandbox_error(f"solution: {getattr(e, 'reason', e)}")
        by_peer = solution.killed_for == PEER_KILL
        out["solution"] = Ran(result, _end(solution), by_peer=by_peer)
        if result.verdict != "ok" and not by_peer and result.signal != signal.SIGPIPE:
            solution_failed.set()

    async def reap_interactor() -> None:
        """A solution that failed by itself decides the test: its interactor gets
        ``INTERACTOR_GRACE`` to finish (it usually reads EOF and exits at once), then
        goes, instead of waiting for limits set for a live partner."""
        await solution_failed.wait()
        await trio.sleep(INTERACTOR_GRACE)
        await interactor.kill(PEER_KILL)

    async def run_interactor() -> None:
        try:
            result = await interactor.run(int_step)
        except (SandboxError, CgroupError) as e:
            result = Result.sandbox_error(f"interactor: {getattr(e, 'reason', e)}")
        out["interactor"] = Ran(result, _end(interactor))
        if result.verdict not in ("ok", "runtime_error") or \
                result.exit_code not in (_OK, _POINTS):
            # The test is decided (or the interactor is gone): nothing reads the
            # solution any more. A solution that already failed keeps its first reason.
            await solution.kill(PEER_KILL)

    try:
        async with trio.open_nursery() as nursery:
            helpers = trio.CancelScope()

            async def watch() -> None:
                with helpers:
                    async with trio.open_nursery() as aside:
                        aside.start_soon(order.wait)
                        aside.start_soon(reap_interactor)

            async def both() -> None:
                async with trio.open_nursery() as runs:
                    runs.start_soon(run_solution)
                    runs.start_soon(run_interactor)
                helpers.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(both)
    finally:
        order.close()
    first = order.first
    sol, inter = out["solution"], out["interactor"]
    if first is not None:
        sol = dataclasses.replace(sol, first=first == "solution")
        inter = dataclasses.replace(inter, first=first == "interactor")
    return sol, inter


class _Order:
    """Which side ended first, in the kernel's order, not as the supervisor heard of it.

    The two inits' reports come at times that depend on scheduling: a solution that
    dies of reading EOF a few microseconds after its interactor exited can be reaped
    first. One epoll set watches, for each side, its process (its pidfd turns readable
    when it has exited) and its stdout (a read end held here reports HUP once the
    side's last writer has exited or closed it: the other side sees EOF at that very
    moment). epoll lists descriptors in the order they became ready, so the first
    event names the side that ended (or stopped talking) first, even when both had
    happened before the supervisor looked.

    Held only until that first event: a read end kept here would otherwise let a side
    write into a pipe nobody reads any more (no ``SIGPIPE``) after the other has gone.
    """

    def __init__(self, solution: Container, interactor: Container, sol_stdout: int,
                 int_stdout: int) -> None:
        self.first: str | None = None
        self._ep: select.epoll | None = None
        self._side: dict[int, str] = {}
        try:
            self._ep = select.epoll()
            for side, box, out in (("solution", solution, sol_stdout),
                                   ("interactor", interactor, int_stdout)):
                held = os.dup(out)  # non-inheritable, as every descriptor here
                self._side[held] = side
                self._ep.register(held, 0)  # EPOLLHUP and EPOLLERR only, always reported
                if box.job_pid:
                    pidfd = os.pidfd_open(box.job_pid)
                    self._side[pidfd] = side
                    self._ep.register(pidfd, select.EPOLLIN)
        except OSError:  # no order then: the reap times decide
            self.close()

    async def wait(self) -> None:
        if self._ep is None:
            return
        while True:
            await trio.lowlevel.wait_readable(self._ep.fileno())
            events = self._ep.poll(0)
            if events:
                self.first = self._side[events[0][0]]
                self.close()
                return

    def close(self) -> None:
        if self._ep is not None:
            self._ep.close()
            self._ep = None
        for fd in self._side:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._side = {}


def _end(box: Container) -> float | None:
    if box.killed_at is not None and box.killed_for in _LIMIT_KILLS:
        return box.killed_at
    return box.ended_at


def message_of(data: bytes) -> str | None:
    """A program's output as the step's message: text, at most ``MESSAGE_CAP`` bytes of
    UTF-8 (the wire's field holds twice that), None when blank."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return None
    raw = text.encode()
    if len(raw) <= MESSAGE_CAP:
        return text
    return raw[:MESSAGE_CAP].decode("utf-8", "ignore") + "..."


def _about(run: Result) -> str:
    return f"{run.verdict} ({run.reason})" if run.reason else run.verdict


def interactor_says(run: Result) -> tuple[str, str | None, float]:
    """(verdict, reason, score) from the interactor's run alone, by testlib's codes;
    anything but a code testlib defines is the interactor's fault (``judge_error``)."""
    code = run.exit_code if run.verdict in ("ok", "runtime_error") else None
    if code == _OK:
        return "ok", None, 1.0
    if code in (_WA, _EOF):
        return "wrong_answer", "interactor" if code == _WA else \
            "interactor: unexpected end of the solution's output", 0.0
    if code in (_PE, _DIRT):
        return "presentation_error", "interactor", 0.0
    if code == _FAIL:
        return JUDGE_ERROR, "interactor failed (exit code 3)", 0.0
    if code == _POINTS:
        m = _POINTS_RE.search(run.stderr) or _POINTS_RE.search(run.stdout)
        try:
            points = float(m.group(1)) if m else math.nan
        except ValueError:
            points = math.nan
        if not math.isfinite(points):
            return JUDGE_ERROR, "interactor exited 7 (partial) without 'points X' on " \
                "its stderr", 0.0
        score = min(1.0, max(0.0, points))
        if score >= 1.0:
            return "ok", None, 1.0
        return "wrong_answer", f"partial ({score:g})", score
    return JUDGE_ERROR, f"interactor: {_about(run)}", 0.0


def interactive_verdict(solution: Ran, interactor: Ran
                        ) -> tuple[str, str | None, float, str | None]:
    """(verdict, reason, score, interactor's message) of one interactive test.

    Precedence: sandboxd's own failure or a cancellation (either side); then the
    solution's own failure if it came first (it ended before the interactor, and not
    by ``SIGPIPE``, which only the interactor's end causes) or if the interactor said
    ok; then the interactor's word, by testlib's codes.
    """
    sol, inter = solution.result, interactor.result
    message = message_of(inter.stderr)
    for side, run, ours in (("solution", sol, not solution.by_peer),
                            ("interactor", inter, True)):
        if ours and run.verdict in ("sandbox_error", "cancelled"):
            reason = run.reason or run.verdict
            prefix = f"{side}: "
            return run.verdict, reason if reason.startswith(prefix) else prefix + reason, \
                0.0, message
    said, reason, score = interactor_says(inter)
    if sol.verdict != "ok":
        if solution.first is not None:
            first = solution.first
        else:
            first = (solution.ended is None or interactor.ended is None
                     or solution.ended <= interactor.ended)
        first = first and sol.signal != signal.SIGPIPE
        if first or said == "ok" or (said == "wrong_answer" and score > 0.0):
            return sol.verdict, sol.reason, 0.0, message
    elif inter.signal == signal.SIGPIPE:
        # The interactor wrote to a solution that had ended well but too soon.
        return "wrong_answer", "the solution ended before the interactor was done", \
            0.0, message
    return said, reason, score, message
