"""The schema: every message, every field, its kind and its limits, in one place.

Strategy: the messages are data, ``Record``s of ``(name, kind, required)``
fields (``_kinds.py`` says what each kind checks), listed in the order the
canonical encoding writes them. ``decode_message`` and ``encode_message``
are the only entry points; rules that tie fields together are small
``_check_*`` functions next to their record. PROTOCOL.md §4 and §5 are this
file in prose; a test checks that every field here is documented there.

This module knows nothing of frames, bytes on the wire or connection state:
rules that need those (frame size, job ids in flight, sequence numbers) live
in ``_connection.py`` and ``_state.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import ErrorCode, Invalid
from ._events import (
    COMPARE_MODES,
    JOB_STATES,
    MEMORY_MODES,
    STREAMS,
    VERDICTS,
    Batch,
    BatchResult,
    Cancellation,
    CompileStep,
    EndOfStdin,
    EndOfWorkspace,
    ErrorReport,
    Goodbye,
    Hello,
    JobAcceptance,
    JobInfo,
    JobLimits,
    JobList,
    JobListRequest,
    JobResult,
    JobSubmission,
    KillRequest,
    KillResult,
    NetworkAccess,
    OutputChunk,
    Ping,
    Pong,
    PoolStats,
    ProfileInfo,
    Program,
    RepeatStats,
    ServerStats,
    StatsRequest,
    StdinChunk,
    StepResult,
    TestCase,
    Welcome,
    WorkspaceChunk,
)
from ._job_limits import LIMITS, LimitSpec, Unit
from ._kinds import (
    INT32_MAX,
    INT64_MAX,
    UINT64_MAX,
    Array,
    Bool,
    Bytes,
    Choice,
    Files,
    Float,
    Int,
    JobId,
    Kind,
    MapOf,
    Number,
    Record,
    Str,
    describe,
)
from ._limits import MAX_FRAME_SIZE_CEILING, SizeLimits

__all__ = [
    "MESSAGES",
    "MESSAGE_TYPES",
    "TYPE_NAMES",
    "check_job_id",
    "decode_message",
    "encode_message",
]

MAX_SECONDS = 1e9  # about 31 years: any larger time is a bug, not a measurement


# --------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------

BOOL = Bool()
JOB_ID = JobId()
JOB_REF = JobId(128)  # "[w<k>-]<connection>/<job id>": server-wide, so longer than a job id
PROFILE = Str(64, r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", "be a profile name [A-Za-z0-9._+-]")
LABEL = Str(256)  # software names, client descriptions
DESCRIPTION = Str(1024)
SECONDS = Float(0.0, MAX_SECONDS)
BYTE_COUNT = Int(0, INT64_MAX)
COUNT = Int(0, INT64_MAX)
ARGV = Array(Str("max_arg_length"), "max_argv", min_len=1)

def _limit_kind(spec: LimitSpec) -> Float | Int:
    """The wire check of one limit: its row's unit and range."""
    if spec.unit is Unit.SECONDS:
        return Float(spec.lo, spec.hi, lo_open=spec.lo_open)
    return Int(int(spec.lo), int(spec.hi))


JOB_LIMITS = Record(JobLimits, tuple((spec.name, _limit_kind(spec), False) for spec in LIMITS))

# "host:port": an IPv4 address or a DNS name, then 1-65535 (the server checks the rest).
DESTINATION = Str(260, r"[A-Za-z0-9._-]{1,253}:[0-9]{1,5}", "be host:port")
NETWORK = Record(NetworkAccess, (("allow", Array(DESTINATION, 32), False),))

COMPILE_STEP = Record(CompileStep, (("argv", ARGV, False), ("limits", JOB_LIMITS, False)))

TEST_CASE = Record(
    TestCase,
    (
        ("stdin", Bytes("max_input"), False),
        ("expected_output", Bytes("max_input"), False),
        ("limits", JOB_LIMITS, False),
        ("repeat", Int(1, 1000), False),
        ("generator", Int(0, 1023), False),
        ("generator_args", Array(Str("max_arg_length"), "max_argv"), False),
    ),
)

PROGRAM = Record(
    Program,
    (
        ("profile", PROFILE, True),
        ("files", Files(), False),
        ("argv", ARGV, False),
        ("limits", JOB_LIMITS, False),
    ),
)
"""A problem's program (checker, generator, interactor): one schema for all."""

BATCH_NAME = Str(64, r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", "be a batch name [A-Za-z0-9._+-]")
POINTS = Float(0.0, 1e9)


def _check_batch(b: Batch, here: str, lim: SizeLimits) -> None:
    """A batch names each of its tests once."""
    if len(set(b.tests)) != len(b.tests):
        raise Invalid(f"{here}.tests", "must not name a test twice")


BATCH = Record(
    Batch,
    (
        ("name", BATCH_NAME, True),
        ("tests", Array(Int(0, INT32_MAX), "max_tests", min_len=1), True),
        ("points", POINTS, False),
        ("stop_on_failure", BOOL, False),
        ("depends", Array(BATCH_NAME, 1024), False),
    ),
    _check_batch,
)


WORKSPACE_FORMATS = ("tar", "gzip")
CACHE_NAME = Str(64, r"[a-z][a-z0-9_-]{0,63}", "be a cache name [a-z][a-z0-9_-]*")


def _check_submission(s: JobSubmission, here: str, lim: SizeLimits) -> None:
    """Rules that tie fields together: a batch has no job-level stdin, and so on."""
    if s.tests is not None:
        if s.stdin:
            raise Invalid(f"{here}.stdin", "must be empty when tests are given (each has its own)")
        if s.expected_output is not None:
            raise Invalid(f"{here}.expected_output", "must be absent when tests are given")
        if s.interactive_stdin:
            raise Invalid(f"{here}.interactive_stdin", "must be false when tests are given")
    if s.float_tolerance is not None and s.compare != "tokens":
        raise Invalid(f"{here}.float_tolerance", "is only allowed with compare 'tokens'")
    n = len(s.tests) if s.tests is not None else 1
    gens = len(s.generators or ())
    for i, t in enumerate(s.tests or ()):
        if t.generator is not None and t.generator >= gens:
            raise Invalid(f"{here}.tests[{i}].generator",
                          f"must name one of the job's {gens} generators")
        if t.generator is None and t.generator_args:
            raise Invalid(f"{here}.tests[{i}].generator_args", "needs a generator")
    if s.batches is not None:
        if s.stop_on_failure:
            raise Invalid(f"{here}.stop_on_failure", "must be false with batches (each batch "
                          "has its own)")
        names = {b.name for b in s.batches}
        if len(names) != len(s.batches):
            raise Invalid(f"{here}.batches", "must not name a batch twice")
        owner: dict[int, int] = {}
        for k, b in enumerate(s.batches):
            for t in b.tests:
                if t >= n:
                    raise Invalid(f"{here}.batches[{k}].tests", f"must be below {n} (the "
                                  f"job's tests), got {t}")
                if t in owner:
                    raise Invalid(f"{here}.batches[{k}].tests", f"test {t} is already in "
                                  f"batches[{owner[t]}]")
                owner[t] = k
            for d in b.depends or ():
                if d not in names:
                    raise Invalid(f"{here}.batches[{k}].depends", f"no batch {d!r}")
        if len(owner) != n:
            missing = min(set(range(n)) - set(owner))
            raise Invalid(f"{here}.batches", f"test {missing} is in no batch (every test "
                          "must be in one)")
    if s.workspace is not None and s.interactive_stdin:
        raise Invalid(f"{here}.workspace", "cannot be combined with interactive_stdin")
    for i, glob in enumerate(s.artifacts or ()):
        if not glob or glob.startswith("/") or ".." in glob.split("/") or "\\" in glob:
            raise Invalid(f"{here}.artifacts[{i}]",
                          "must be a glob relative to /box, with no '..' component")


JOB_SUBMISSION = Record(
    JobSubmission,
    (
        ("id", JOB_ID, True),
        ("profile", PROFILE, True),
        ("files", Files(), False),
        ("stdin", Bytes("max_input"), False),
        ("argv", ARGV, False),
        (
            "env",
            MapOf(
                Str(255, r"[A-Za-z_][A-Za-z0-9_]*", "be a variable name [A-Za-z_][A-Za-z0-9_]*"),
                Str("max_arg_length"),
                "max_env",
            ),
            False,
        ),
        ("limits", JOB_LIMITS, False),
        ("cpuset_pin", BOOL, False),
        ("compile", COMPILE_STEP, False),
        ("tests", Array(TEST_CASE, "max_tests", min_len=0), False),
        ("expected_output", Bytes("max_input"), False),
        ("compare", Choice(COMPARE_MODES), False),
        ("float_tolerance", Float(0.0, 1e9), False),
        ("stop_on_failure", BOOL, False),
        ("stream", BOOL, False),
        ("interactive_stdin", BOOL, False),
        ("warm_runtime", BOOL, False),
        ("memory_mode", Choice(MEMORY_MODES), False),
        ("checker", PROGRAM, False),
        ("generators", Array(PROGRAM, 1024), False),
        ("batches", Array(BATCH, "max_tests"), False),
        ("interactor", PROGRAM, False),
        ("workspace", Choice(WORKSPACE_FORMATS), False),
        ("caches", Array(CACHE_NAME, 16), False),
        ("artifacts", Array(Str(1024), 64), False),
        ("network", NETWORK, False),
    ),
    _check_submission,
    "submit",
)


def _check_repeat(r: RepeatStats, here: str, lim: SizeLimits) -> None:
    """The chosen run is one of the runs."""
    if r.chosen is not None and r.chosen >= r.runs:
        raise Invalid(f"{here}.chosen", f"must be below runs ({r.runs}), got {r.chosen}")


REPEAT_STATS = Record(
    RepeatStats,
    (
        ("runs", Int(1, INT32_MAX), True),
        ("cpu_time_min", SECONDS, True),
        ("cpu_time_median", SECONDS, True),
        ("cpu_time_max", SECONDS, True),
        ("wall_time_min", SECONDS, True),
        ("wall_time_median", SECONDS, True),
        ("wall_time_max", SECONDS, True),
        ("memory_peak_max", BYTE_COUNT, True),
        ("chosen", Int(0, INT32_MAX), False),
    ),
    _check_repeat,
)


def _check_step(r: StepResult, here: str, lim: SizeLimits) -> None:
    """A verdict that needs a reason has one.

    ``time_limit`` says which clock ran out; ``sandbox_error`` says what failed.
    """
    if r.verdict == "time_limit" and r.reason not in ("cpu", "wall"):
        raise Invalid(f"{here}.reason", f"must be 'cpu' or 'wall' for time_limit, got {r.reason!r}")
    if r.verdict == "sandbox_error" and not r.reason:
        raise Invalid(f"{here}.reason", "must say what failed for sandbox_error")
    if r.verdict == "judge_error" and not r.reason:
        raise Invalid(f"{here}.reason", "must say what failed for judge_error")


_STEP_FIELDS = (
        ("verdict", Choice(VERDICTS), True),
        ("reason", Str(1024), False),
        ("exit_code", Int(0, 255), False),
        ("signal", Int(1, 127), False),
        ("cpu_time", SECONDS, False),
        ("user_time", SECONDS, False),
        ("sys_time", SECONDS, False),
        ("wall_time", SECONDS, False),
        ("memory_peak", BYTE_COUNT, False),
        ("oom_killed", BOOL, False),
        ("stdout", Bytes(None), False),
        ("stderr", Bytes(None), False),
        ("stdout_truncated", BOOL, False),
        ("stderr_truncated", BOOL, False),
        ("repeat", REPEAT_STATS, False),
        ("score", Float(0.0, 1.0), False),
        ("checker_message", Str(8192), False),
)


class _Nil(Kind):
    """A field that must be absent here (a checker's or interactor's own run has neither)."""

    def decode(self, v: Any, path: str, name: str | int, lim: SizeLimits) -> Any:
        raise Invalid(f"{path}.{name}" if path else str(name), "must be absent here")

    encode = decode


# A checker's or an interactor's own run: a step result one level deep only.
_ARTIFACT_FIELDS = (
    ("artifacts", MapOf(Str(4096), Bytes(None), 100_000), False),
    ("artifacts_truncated", BOOL, False),
)
CHECKER_RUN = Record(StepResult, (*_STEP_FIELDS, ("checker", _Nil(), False),
                                  ("interactor", _Nil(), False), ("artifacts", _Nil(), False),
                                  ("artifacts_truncated", _Nil(), False)), _check_step)
STEP_RESULT = Record(StepResult, (*_STEP_FIELDS, ("checker", CHECKER_RUN, False),
                                  ("interactor", CHECKER_RUN, False), *_ARTIFACT_FIELDS),
                     _check_step)

BATCH_RESULT = Record(
    BatchResult,
    (
        ("name", BATCH_NAME, True),
        ("verdict", Choice(VERDICTS), True),
        ("score", POINTS, False),
        ("points", POINTS, False),
    ),
)

SIZE_LIMITS = Record(
    SizeLimits,
    tuple(
        (name, Int(1, MAX_FRAME_SIZE_CEILING if name == "max_frame_size" else INT64_MAX), False)
        for name in SizeLimits.__slots__
    ),
)

PROFILE_INFO = Record(
    ProfileInfo,
    (
        ("name", PROFILE, True),
        ("description", DESCRIPTION, False),
        ("compiled", BOOL, False),
        ("default_limits", JOB_LIMITS, False),
        ("max_limits", JOB_LIMITS, False),
        ("entry", Str(255), False),
        ("version", Str(255), False),
        ("available", BOOL, False),
        ("unavailable_reason", DESCRIPTION, False),
    ),
)

JOB_INFO = Record(
    JobInfo,
    (
        ("id", JOB_REF, True),
        ("profile", PROFILE, True),
        ("state", Choice(JOB_STATES), True),
        ("elapsed", SECONDS, False),
        ("client", LABEL, False),
        ("cpu_time", SECONDS, False),
        ("memory", BYTE_COUNT, False),
    ),
)

POOL_STATS = Record(
    PoolStats, (("profile", PROFILE, True), ("warm", COUNT, False), ("target", COUNT, False))
)


def _check_chunk(c: OutputChunk, here: str, lim: SizeLimits) -> None:
    """Compile output belongs to no test: its ``step`` stays 0."""
    if c.compile and c.step != 0:
        raise Invalid(f"{here}.step", "must be 0 for compile output")


VERSION = Int(1, INT32_MAX)
ERROR_CODE = Str(64, r"[a-z][a-z0-9_]{0,63}", "be an error code [a-z][a-z0-9_]*")

MESSAGES: tuple[Record, ...] = (
    Record(
        Hello,
        (("version", VERSION, True), ("client", LABEL, False), ("token", Str(1024), False)),
        type_name="hello",
    ),
    Record(
        Welcome,
        (
            ("version", VERSION, True),
            ("server", LABEL, False),
            ("limits", SIZE_LIMITS, False),
            ("profiles", Array(PROFILE_INFO, 1024), False),
        ),
        type_name="welcome",
    ),
    JOB_SUBMISSION,
    Record(JobAcceptance, (("id", JOB_ID, True),), type_name="accepted"),
    Record(
        OutputChunk,
        (
            ("id", JOB_ID, True),
            ("stream", Choice(STREAMS), True),
            ("data", Bytes("max_chunk"), True),
            ("seq", Int(0, INT64_MAX), True),
            ("step", Int(0, INT32_MAX), False),
            ("compile", BOOL, False),
        ),
        _check_chunk,
        type_name="output",
    ),
    Record(
        StdinChunk,
        (("id", JOB_ID, True), ("data", Bytes("max_chunk"), True)),
        type_name="stdin",
    ),
    Record(EndOfStdin, (("id", JOB_ID, True),), type_name="stdin_end"),
    Record(
        WorkspaceChunk,
        (("id", JOB_ID, True), ("data", Bytes("max_chunk"), True)),
        type_name="workspace",
    ),
    Record(EndOfWorkspace, (("id", JOB_ID, True),), type_name="workspace_end"),
    Record(
        JobResult,
        (
            ("id", JOB_ID, True),
            ("compile", STEP_RESULT, False),
            ("steps", Array(STEP_RESULT, "max_tests"), False),
            ("batches", Array(BATCH_RESULT, "max_tests"), False),
            ("score", Float(0.0, 1e18), False),
        ),
        type_name="result",
    ),
    Record(Cancellation, (("id", JOB_ID, True),), type_name="cancel"),
    Record(JobListRequest, (), type_name="list_jobs"),
    Record(JobList, (("jobs", Array(JOB_INFO, 100_000), False),), type_name="job_list"),
    Record(KillRequest, (("job", JOB_REF, True),), type_name="kill"),
    Record(KillResult, (("job", JOB_REF, True), ("found", BOOL, False)), type_name="kill_result"),
    Record(StatsRequest, (), type_name="get_stats"),
    Record(
        ServerStats,
        (
            ("uptime", SECONDS, False),
            ("connections", COUNT, False),
            ("jobs_queued", COUNT, False),
            ("jobs_running", COUNT, False),
            ("jobs_completed", COUNT, False),
            ("pools", Array(POOL_STATS, 1024), False),
            (
                "counters",
                MapOf(
                    Str(64, r"[A-Za-z_][A-Za-z0-9_.]{0,63}", "be a counter name"),
                    Number(),
                    1024,
                ),
                False,
            ),
        ),
        type_name="stats",
    ),
    Record(Ping, (("nonce", Int(0, UINT64_MAX), True),), type_name="ping"),
    Record(Pong, (("nonce", Int(0, UINT64_MAX), True),), type_name="pong"),
    Record(
        ErrorReport,
        (("code", ERROR_CODE, True), ("message", Str(4096), False), ("id", JOB_ID, False)),
        type_name="error",
    ),
    Record(Goodbye, (("reason", Str(1024), False),), type_name="goodbye"),
)

_BY_TYPE: dict[str, Record] = {m.type_name: m for m in MESSAGES if m.type_name}
_BY_CLASS: dict[type, Record] = {m.cls: m for m in MESSAGES}

MESSAGE_TYPES: Mapping[str, type] = {name: m.cls for name, m in _BY_TYPE.items()}
"""Wire ``type`` → event class."""
TYPE_NAMES: Mapping[type, str] = {m.cls: name for name, m in _BY_TYPE.items()}
"""Event class → wire ``type``."""


def decode_message(msg: Any, lim: SizeLimits) -> Any:
    """Turn a decoded msgpack object into an event, or raise ``Invalid``."""
    if type(msg) is not dict:
        raise Invalid(
            "", f"a frame must hold a msgpack map, got {describe(msg)}", ErrorCode.MALFORMED
        )
    t = msg.get("type")
    record = _BY_TYPE.get(t) if type(t) is str else None
    if record is None:
        if t is None:
            raise Invalid("type", "is required")
        if type(t) is not str:
            raise Invalid("type", f"must be a string, got {describe(t)}")
        raise Invalid("type", f"unknown message type {t[:80]!r}", ErrorCode.UNKNOWN_MESSAGE)
    return record.decode(msg, "", record.type_name or "", lim)


def encode_message(event: Any, lim: SizeLimits) -> dict[str, Any]:
    """Turn an event into the map msgpack will write, or raise ``Invalid``."""
    record = _BY_CLASS.get(type(event))
    if record is None:
        raise Invalid("", f"not a message event: {describe(event)}", ErrorCode.UNKNOWN_MESSAGE)
    return record.encode(event, "", record.type_name or "", lim)  # type: ignore[no-any-return]


def check_job_id(v: Any) -> str | None:
    """``v`` if it is a well-formed job id, else ``None`` (to label an error report)."""
    try:
        return JOB_ID.decode(v, "", "id", SizeLimits())  # type: ignore[no-any-return]
    except Invalid:
        return None
