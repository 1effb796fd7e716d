"""What a job comes back as: typed, frozen results, and the exit codes they map to.

Strategy: the wire's ``StepResult`` already has every field; the client's own
``StepResult`` adds what callers otherwise write themselves (``ok``,
``text``, ``exit_status``, the JSON shape of ``sandboxd run-once --json``)
and a ``Verdict`` that is a ``str`` (so ``r.verdict == "ok"`` works) with
names (``Verdict.TIME_LIMIT``). ``JobResult.final`` picks the one step that
decides a job's outcome, which is what a CLI or a one-call user wants.

The exit-code table is a copy of the one in ``sandboxd/cli.py`` (this
package may not import ``sandboxd``); ``tests/clients/test_client_cli.py`` checks
that both give the same code for every verdict, exit code and signal.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import sandboxd_protocol as proto

__all__ = [
    "EXIT_MEMORY",
    "EXIT_OUTPUT",
    "EXIT_SANDBOX",
    "EXIT_TIME",
    "BatchResult",
    "JobResult",
    "Output",
    "StepResult",
    "Verdict",
    "exit_status",
]

# The same numbers as sandboxd/cli.py (``sandboxd run-once``): keep them equal.
EXIT_TIME = 124
"""``time_limit`` (CPU or wall), as ``timeout(1)`` exits."""
EXIT_SANDBOX = 125
"""``sandbox_error`` or ``cancelled``: the job did not finish on its own."""
EXIT_MEMORY = 137
"""``memory_limit``: 128 + SIGKILL, as the OOM killer's victims exit."""
EXIT_OUTPUT = 153
"""``output_limit``: 128 + SIGXFSZ."""


def exit_status(verdict: str, exit_code: int | None, signal: int | None) -> int:
    """The shell exit code for a step, as ``sandboxd run-once`` and ``docker run`` give it.

    The program's own code when it ran to an end (``128 + N`` if signal N
    ended it); 124, 137 and 153 for the time, memory and output limits; 125
    when sandboxd itself failed or the job was cancelled.

        >>> exit_status("runtime_error", 3, None), exit_status("time_limit", None, 9)
        (3, 124)
    """
    if verdict in ("ok", "runtime_error", "wrong_answer", "compile_error",
                   "presentation_error"):
        if signal:
            return 128 + signal
        return exit_code or (1 if verdict != "ok" else 0)
    return {"time_limit": EXIT_TIME, "memory_limit": EXIT_MEMORY, "output_limit": EXIT_OUTPUT}.get(
        verdict, EXIT_SANDBOX
    )


class Verdict(StrEnum):
    """How a step ended. A ``str``: compare with ``"ok"`` or with ``Verdict.OK``.

    >>> Verdict("time_limit") is Verdict.TIME_LIMIT, Verdict.OK == "ok"
    (True, True)
    """

    OK = "ok"
    RUNTIME_ERROR = "runtime_error"
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    COMPILE_ERROR = "compile_error"
    WRONG_ANSWER = "wrong_answer"
    SANDBOX_ERROR = "sandbox_error"
    CANCELLED = "cancelled"
    JUDGE_ERROR = "judge_error"
    """The problem's own program (checker, generator, interactor) failed: never the contestant's."""
    PRESENTATION_ERROR = "presentation_error"
    SKIPPED = "skipped"
    """Not run: an earlier test of its batch failed, or a batch it depends on did."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    """One step (the compile, or one run/test): its verdict and exact accounting.

    Times are seconds, ``memory_peak`` is bytes; ``stdout``/``stderr`` are
    what was kept (up to the ``output`` limit; ``*_truncated`` says more was
    written). ``repeat`` holds min/median/max when a test ran ``repeat`` times.

        >>> r = StepResult(verdict=Verdict.OK, exit_code=0, stdout=b"42\\n")
        >>> r.ok, r.text, r.exit_status
        (True, '42\\n', 0)
    """

    verdict: Verdict
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    cpu_time: float = 0.0
    user_time: float = 0.0
    sys_time: float = 0.0
    wall_time: float = 0.0
    memory_peak: int = 0
    oom_killed: bool = False
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    repeat: proto.RepeatStats | None = None
    score: float | None = None
    """Judged jobs: the fraction of the test's points earned (a checker's partial points)."""
    checker_message: str | None = None
    checker: StepResult | None = None
    """The checker's own run (its verdict and accounting; no outputs)."""
    interactor: StepResult | None = None
    """An interactive test: the interactor's own run."""
    artifacts: Mapping[str, bytes] | None = None
    """The files the job's ``artifacts`` globs matched in /box (None: it named none)."""
    artifacts_truncated: bool = False

    @classmethod
    def from_wire(cls, r: proto.StepResult) -> StepResult:
        """The client's result for the protocol's record."""
        return cls(
            verdict=Verdict(r.verdict),
            reason=r.reason,
            exit_code=r.exit_code,
            signal=r.signal,
            cpu_time=r.cpu_time,
            user_time=r.user_time,
            sys_time=r.sys_time,
            wall_time=r.wall_time,
            memory_peak=r.memory_peak,
            oom_killed=r.oom_killed,
            stdout=r.stdout,
            stderr=r.stderr,
            stdout_truncated=r.stdout_truncated,
            stderr_truncated=r.stderr_truncated,
            repeat=r.repeat,
            score=r.score,
            checker_message=r.checker_message,
            checker=StepResult.from_wire(r.checker) if r.checker is not None else None,
            interactor=cls.from_wire(r.interactor) if r.interactor is not None else None,
            artifacts=dict(r.artifacts) if r.artifacts is not None else None,
            artifacts_truncated=bool(r.artifacts_truncated),
        )

    @property
    def ok(self) -> bool:
        """True when the verdict is ``ok`` (ran, exited 0, matched any expected output)."""
        return self.verdict is Verdict.OK

    @property
    def text(self) -> str:
        """``stdout`` as text (UTF-8; undecodable bytes become U+FFFD)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def exit_status(self) -> int:
        """The shell exit code for this step (see ``exit_status``)."""
        return exit_status(self.verdict, self.exit_code, self.signal)

    def as_json(self) -> dict[str, Any]:
        """The fields of ``sandboxd run-once --json``, outputs decoded as UTF-8 text.

        ``repeat`` is added only when present, so that a single run has exactly
        run-once's fields; so are ``artifacts`` (path → base64) and
        ``artifacts_truncated``, when the job named artifacts. An output that is not
        valid UTF-8 has its undecodable bytes as U+FFFD, and its exact bytes in base64
        beside it
        (``stdout_b64``, ``stderr_b64``), as run-once does.
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "repeat":
                if value is not None:
                    out["repeat"] = {g.name: getattr(value, g.name) for g in fields(value)}
                continue
            if f.name in ("score", "checker_message", "checker", "interactor"):  # judged jobs only
                if value is not None:
                    out[f.name] = value.as_json() if f.name in ("checker", "interactor") else value
                continue
            if f.name in ("artifacts", "artifacts_truncated"):  # only when asked for
                if self.artifacts is not None:
                    out[f.name] = ({k: base64.b64encode(v).decode("ascii")
                                    for k, v in value.items()}
                                   if f.name == "artifacts" else value)
                continue
            exact = None
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    exact = base64.b64encode(value).decode("ascii")
                    value = value.decode("utf-8", "replace")
            elif isinstance(value, Verdict):
                value = value.value
            out[f.name] = value
            if exact is not None:
                out[f"{f.name}_b64"] = exact
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    """A batch (subtask) of a judged job: ``ok`` when all its tests are, ``skipped``
    when a batch it depends on failed; ``score`` of its ``points`` earned.

        >>> BatchResult(name="small", verdict=Verdict.OK, score=40.0, points=40.0).verdict
        <Verdict.OK: 'ok'>
    """

    name: str
    verdict: Verdict
    score: float = 0.0
    points: float = 0.0

    @classmethod
    def from_wire(cls, r: proto.BatchResult) -> BatchResult:
        return cls(name=r.name, verdict=Verdict(r.verdict), score=r.score, points=r.points)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    """A finished job: the compile step's result (if the profile compiles) and one per run.

    ``steps`` has one result per test (one for a job without tests); it is
    empty when the compile failed; with ``stop_on_failure``, the tests after the first
    failure are there with the verdict ``cancelled``.

        >>> ok = StepResult(verdict=Verdict.OK, exit_code=0)
        >>> bad = StepResult(verdict=Verdict.WRONG_ANSWER, exit_code=0)
        >>> JobResult(id="1", steps=(ok, bad)).verdict
        <Verdict.WRONG_ANSWER: 'wrong_answer'>
    """

    id: str
    compile: StepResult | None = None
    steps: tuple[StepResult, ...] = ()
    batches: tuple[BatchResult, ...] | None = None
    """Judged jobs with batches: one per batch, in the job's order."""
    score: float | None = None
    """Judged jobs: points earned (the batches', or without batches the tests' scores)."""

    @classmethod
    def from_wire(cls, r: proto.JobResult) -> JobResult:
        """The client's result for the protocol's message."""
        return cls(
            id=r.id,
            compile=StepResult.from_wire(r.compile) if r.compile is not None else None,
            steps=tuple(StepResult.from_wire(s) for s in r.steps),
            batches=tuple(BatchResult.from_wire(b) for b in r.batches)
            if r.batches is not None else None,
            score=r.score,
        )

    @property
    def final(self) -> StepResult:
        """The step that decides the outcome: a failed compile, else the first failed
        run, else the last run."""
        if self.compile is not None and (not self.compile.ok or not self.steps):
            return self.compile
        for step in self.steps:
            if not step.ok:
                return step
        if self.steps:
            return self.steps[-1]
        return StepResult(verdict=Verdict.SANDBOX_ERROR, reason="the job had no step")

    @property
    def verdict(self) -> Verdict:
        """``final.verdict``: ``ok`` only if the compile and every run were ``ok``."""
        return self.final.verdict

    @property
    def ok(self) -> bool:
        """True when every step's verdict is ``ok``."""
        return self.final.ok

    @property
    def stdout(self) -> bytes:
        """``final.stdout``: for a single run, what the program printed."""
        return self.final.stdout

    @property
    def stderr(self) -> bytes:
        """``final.stderr`` (for a failed compile: the compiler's messages)."""
        return self.final.stderr

    @property
    def text(self) -> str:
        """``final.text``: stdout as text."""
        return self.final.text

    @property
    def exit_status(self) -> int:
        """The shell exit code of the job (``final``'s; see ``exit_status``)."""
        return self.final.exit_status

    def as_json(self) -> dict[str, Any]:
        """One object: ``final``'s run-once fields, plus ``compile`` (object or null).

        This is what ``sandboxctl run --json`` prints.
        """
        out = self.final.as_json()
        out["compile"] = self.compile.as_json() if self.compile is not None else None
        return out


@dataclass(frozen=True, slots=True)
class Output:
    """A piece of a streaming job's output, in the order the program wrote it.

    ``step`` is the test's index (0 for a single run); ``compile`` marks the
    compiler's output. A multi-byte character may be split between two
    chunks: join ``data`` before decoding when that matters.

        >>> Output("stdout", b"hi\\n").text
        'hi\\n'
    """

    stream: str
    data: bytes
    step: int = 0
    compile: bool = False

    @property
    def text(self) -> str:
        """``data`` as text (UTF-8, undecodable bytes replaced)."""
        return self.data.decode("utf-8", "replace")
