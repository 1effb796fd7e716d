"""The verdict of an interactive test (``sandboxd.interactive.interactive_verdict``) as a
pure function: testlib's exit codes, who failed first, and what is the problem's fault.
The same rules run against real containers in tests/integration/test_interactive.py."""

from __future__ import annotations

import dataclasses
import signal

import pytest

from sandboxd.interactive import (
    INTERACTOR_FILES,
    Ran,
    interactive_verdict,
    interactor_argv,
    interactor_files,
    interactor_limits,
)
from sandboxd.limits import DEFAULT, MAXIMUM
from sandboxd.result import Result

OK = Result("ok", None, 0, None, 0.1, 0.1, 0.0, 0.2, 1 << 20, False, b"", b"", False, False)


def run(verdict: str = "ok", exit_code: int | None = 0, sig: int | None = None,
        stderr: bytes = b"", reason: str | None = None) -> Result:
    return dataclasses.replace(OK, verdict=verdict, exit_code=exit_code, signal=sig,
                               stderr=stderr, reason=reason)


def code(c: int, stderr: bytes = b"") -> Result:
    return run("ok" if c == 0 else "runtime_error", c, stderr=stderr,
               reason=None if c == 0 else f"exit code {c}")


def decide(sol: Result, inter: Result, first: str | None = None,
           times: tuple[float, float] = (1.0, 2.0)) -> tuple[str, str | None, float]:
    s = Ran(sol, times[0], None if first is None else first == "solution")
    i = Ran(inter, times[1], None if first is None else first == "interactor")
    verdict, reason, score, _message = interactive_verdict(s, i)
    return verdict, reason, score


@pytest.mark.parametrize(("exit_code", "stderr", "want"), [
    (0, b"", ("ok", None, 1.0)),
    (1, b"wrong", ("wrong_answer", "interactor", 0.0)),
    (2, b"", ("presentation_error", "interactor", 0.0)),
    (4, b"", ("presentation_error", "interactor", 0.0)),
    (8, b"", ("wrong_answer", "interactor: unexpected end of the solution's output", 0.0)),
    (3, b"", ("judge_error", "interactor failed (exit code 3)", 0.0)),
    (7, b"points 0.25 close\n", ("wrong_answer", "partial (0.25)", 0.25)),
    (7, b"points 1\n", ("ok", None, 1.0)),
    (7, b"points 7.5\n", ("ok", None, 1.0)),  # clamped
    (7, b"points -1\n", ("wrong_answer", "partial (0)", 0.0)),
    (7, b"no points\n", ("judge_error", "interactor exited 7 (partial) without 'points X' "
                         "on its stderr", 0.0)),
    (7, b"points nan\n", ("judge_error", "interactor exited 7 (partial) without 'points X' "
                          "on its stderr", 0.0)),
    (5, b"", ("judge_error", "interactor: runtime_error (exit code 5)", 0.0)),
])
def test_testlib_exit_codes(exit_code: int, stderr: bytes,
                            want: tuple[str, str | None, float]) -> None:
    assert decide(OK, code(exit_code, stderr)) == want


def test_the_interactors_own_failures_are_judge_error() -> None:
    for inter in (run("runtime_error", None, signal.SIGSEGV, reason="signal SIGSEGV"),
                  run("time_limit", None, signal.SIGKILL, reason="cpu"),
                  run("memory_limit", None, signal.SIGKILL, reason="memory"),
                  run("output_limit", None, signal.SIGKILL, reason="stderr")):
        verdict, reason, score = decide(OK, inter)
        assert verdict == "judge_error" and reason and reason.startswith("interactor: ")
        assert score == 0.0


def test_the_solutions_failure_first_wins() -> None:
    tle = run("time_limit", None, signal.SIGKILL, reason="cpu")
    assert decide(tle, code(1), first="solution")[:2] == ("time_limit", "cpu")
    assert decide(tle, code(1), first="interactor")[:2] == ("wrong_answer", "interactor")
    # The kernel's order, when seen, overrides the reap times.
    assert decide(tle, code(1), first="interactor", times=(1.0, 2.0))[0] == "wrong_answer"
    assert decide(tle, code(1), first="solution", times=(2.0, 1.0))[0] == "time_limit"
    # Without it, the times decide.
    assert decide(tle, code(1), times=(1.0, 2.0))[0] == "time_limit"
    assert decide(tle, code(1), times=(2.0, 1.0))[0] == "wrong_answer"
    # Even the interactor's own failure after the solution's: the solution's verdict.
    crash = run("runtime_error", None, signal.SIGSEGV, reason="signal SIGSEGV")
    assert decide(tle, crash, first="solution")[0] == "time_limit"


def test_a_solution_must_end_well_after_an_ok_or_partial_interactor() -> None:
    re = run("runtime_error", 4, reason="exit code 4")
    assert decide(re, code(0), first="interactor")[:2] == ("runtime_error", "exit code 4")
    assert decide(re, code(7, b"points 0.5\n"), first="interactor")[0] == "runtime_error"


def test_sigpipe_is_the_other_sides_doing() -> None:
    piped = run("runtime_error", None, signal.SIGPIPE, reason="signal SIGPIPE")
    # The solution wrote to an interactor that had already decided: its WA stands.
    assert decide(piped, code(1), first="solution")[0] == "wrong_answer"
    # The interactor wrote to a solution that had ended (well) too soon: not its fault.
    verdict, reason, _ = decide(OK, run("runtime_error", None, signal.SIGPIPE,
                                        reason="signal SIGPIPE"), first="solution")
    assert verdict == "wrong_answer" and reason and "ended before" in reason


def test_sandbox_errors_and_cancellations_say_whose() -> None:
    assert decide(run("sandbox_error", None, reason="spawn failed"), OK)[:2] == (
        "sandbox_error", "solution: spawn failed")
    assert decide(OK, run("sandbox_error", None, reason="interactor: gone"))[:2] == (
        "sandbox_error", "interactor: gone")
    assert decide(OK, run("cancelled", None, reason="cancelled by the client"))[0] == "cancelled"


def test_a_solution_killed_for_its_interactor_is_not_blamed_for_how_it_ended() -> None:
    """The interactor decided before the solution was even handed over: the hand-over
    then fails (sandbox_error), but the interactor's word stands."""
    lost = run("sandbox_error", None, reason="solution: job delivery: the job process died")
    s = Ran(lost, 2.0, first=False, by_peer=True)
    assert interactive_verdict(s, Ran(code(3), 1.0, first=True))[0] == "judge_error"
    assert interactive_verdict(s, Ran(code(1), 1.0, first=True))[0] == "wrong_answer"
    assert interactive_verdict(Ran(lost, 2.0), Ran(code(1), 1.0))[0] == "sandbox_error"


def test_the_message_is_the_interactors_stderr_capped() -> None:
    _, _, _, message = interactive_verdict(Ran(OK, 1.0), Ran(code(1, b"x" * 10000), 2.0))
    assert message is not None and len(message) == 4096 + 3
    _, _, _, message = interactive_verdict(Ran(OK, 1.0), Ran(code(0, b" \n"), 2.0))
    assert message is None
    wide = "\u00e9".encode() * 5000  # 2 bytes each: the cap is in bytes of UTF-8
    _, _, _, message = interactive_verdict(Ran(OK, 1.0), Ran(code(1, wide), 2.0))
    assert message is not None and len(message.encode()) <= 4096 + 3


def test_files_argv_and_limits() -> None:
    files = interactor_files({"main.py": b"x", "input.txt": b"theirs"}, b"IN", None)
    assert files == {"main.py": b"x", "input.txt": b"IN", "output.txt": b""}
    assert interactor_files({}, b"IN", b"ANS")["answer.txt"] == b"ANS"
    assert interactor_argv(["./main"], False) == ["./main", *INTERACTOR_FILES[:2]]
    assert interactor_argv(["./main"], True) == ["./main", *INTERACTOR_FILES]
    # Past the solution's wall limit unless set: a deadlock is the solution's time_limit.
    solution = dataclasses.replace(DEFAULT, wall_time=20.0)
    assert interactor_limits(DEFAULT, solution, False, MAXIMUM).wall_time == 21.0
    short = dataclasses.replace(DEFAULT, wall_time=1.0)
    assert interactor_limits(DEFAULT, short, False, MAXIMUM).wall_time == DEFAULT.wall_time
    assert interactor_limits(DEFAULT, solution, True, MAXIMUM).wall_time == DEFAULT.wall_time
