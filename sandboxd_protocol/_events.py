"""The events a ``Connection`` gives back and accepts: one frozen dataclass per message.

Strategy: events are plain values, named as nouns, with the wire's field
names. Constructing one checks nothing: the rules (types, ranges, sizes) are
applied by ``Connection.send`` (a ``LocalProtocolError`` naming the field) and
by the decoder (a ``RemoteProtocolError``), from one schema in ``_schema.py``,
so the two sides can never disagree. Sequences given as lists are stored as
tuples so that an event compares equal to its decoded copy.

Records that are parts of messages (``JobLimits``, ``StepResult``...) are
frozen dataclasses too; ``JobLimits`` is built from the table of limits
(``_job_limits.py``), the one place their names are listed.
This module knows nothing of bytes or state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from ._errors import PROTOCOL_ERROR_CODES
from ._job_limits import JobLimits  # built from the table of limits, LIMITS
from ._limits import DEFAULT_SIZE_LIMITS, SizeLimits

__all__ = [
    "COMPARE_MODES",
    "JOB_STATES",
    "MEMORY_MODES",
    "PROTOCOL_VERSION",
    "STREAMS",
    "SUPPORTED_VERSIONS",
    "VERDICTS",
    "Batch",
    "BatchResult",
    "Cancellation",
    "CompileStep",
    "ConnectionClosed",
    "EndOfStdin",
    "EndOfWorkspace",
    "ErrorReport",
    "Event",
    "Goodbye",
    "Hello",
    "JobAcceptance",
    "JobInfo",
    "JobLimits",
    "JobList",
    "JobListRequest",
    "JobResult",
    "JobSubmission",
    "KillRequest",
    "KillResult",
    "NetworkAccess",
    "OutputChunk",
    "Ping",
    "Pong",
    "PoolStats",
    "ProfileInfo",
    "Program",
    "RepeatStats",
    "ServerStats",
    "StatsRequest",
    "StdinChunk",
    "StepResult",
    "TestCase",
    "Welcome",
    "WorkspaceChunk",
]

PROTOCOL_VERSION = 1
"""The newest protocol version this package speaks."""
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1})
"""Every protocol version this package can speak."""

VERDICTS: tuple[str, ...] = (
    "ok",
    "runtime_error",
    "time_limit",
    "memory_limit",
    "output_limit",
    "compile_error",
    "wrong_answer",
    "sandbox_error",
    "cancelled",
    "judge_error",
    "presentation_error",
    "skipped",
)
COMPARE_MODES: tuple[str, ...] = ("exact", "trailing_ws", "tokens")
MEMORY_MODES: tuple[str, ...] = ("peak", "address_space")
"""How a job's ``memory`` limit counts: ``peak`` (the job's cgroup, what it touches,
children included) or ``address_space`` (also ``RLIMIT_AS`` per process, as isolate's
``--mem``: a reservation fails even untouched). PROTOCOL.md, §5.7."""
STREAMS: tuple[str, ...] = ("stdout", "stderr")
JOB_STATES: tuple[str, ...] = ("queued", "running")


def _tuple(obj: object, name: str) -> None:
    """Store a list field as a tuple: events stay values and compare by content."""
    value = getattr(obj, name)
    if type(value) is list:
        object.__setattr__(obj, name, tuple(value))


# --------------------------------------------------------------------------
# Parts of messages
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CompileStep:
    """How to compile: an argv override and limits, both optional."""

    argv: tuple[str, ...] | None = None
    limits: JobLimits | None = None

    def __post_init__(self) -> None:
        _tuple(self, "argv")


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkAccess:
    """Outbound network a job asks for: TCP to each ``"host:port"`` of ``allow`` (host an
    IPv4 address or a name), nothing else; only as far as the server permits."""

    allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _tuple(self, "allow")


@dataclass(frozen=True, slots=True, kw_only=True)
class TestCase:
    """One run step of a judge's batch: its stdin, and what it should print."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    stdin: bytes = b""
    expected_output: bytes | None = None
    limits: JobLimits | None = None
    repeat: int = 1
    generator: int | None = None
    """Index in the job's ``generators``: that program's stdout becomes this test's stdin."""
    generator_args: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _tuple(self, "generator_args")


@dataclass(frozen=True, slots=True, kw_only=True)
class Program:
    """A problem's own program (a checker, a generator, an interactor): its profile,
    files, run argv (nil = the profile's) and run limits (nil = the profile's)."""

    profile: str
    files: Mapping[str, bytes] = field(default_factory=dict)
    argv: tuple[str, ...] | None = None
    limits: JobLimits | None = None

    def __post_init__(self) -> None:
        _tuple(self, "argv")


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """A subtask: tests (indices) scored together, DMOJ-style."""

    name: str
    tests: tuple[int, ...]
    points: float = 1.0
    stop_on_failure: bool = False
    depends: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _tuple(self, "tests")
        _tuple(self, "depends")


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    """How a batch went: ``ok`` when every test is, ``skipped`` when a dependency
    failed, else its first failing test's verdict; ``score`` of ``points`` earned."""

    name: str
    verdict: str
    score: float = 0.0
    points: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RepeatStats:
    """Spread of a step run ``repeat`` times: judges want min and median, not one sample."""

    runs: int
    cpu_time_min: float
    cpu_time_median: float
    cpu_time_max: float
    wall_time_min: float
    wall_time_median: float
    wall_time_max: float
    memory_peak_max: int
    chosen: int | None = None
    """Which run (0-based) the step result's verdict and accounting are from: the
    first failing run, else the one with the median CPU time; nil = the last run."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    """What one step (compile or run) did: a verdict and its exact accounting."""

    verdict: str
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
    repeat: RepeatStats | None = None
    score: float | None = None
    """Judged jobs: the fraction of the test's points earned (1.0 ok, a checker's
    partial points, 0 otherwise); nil for jobs without checker, generators or batches."""
    checker_message: str | None = None
    checker: StepResult | None = None
    """The checker's own run (its accounting; its outputs are not carried)."""
    interactor: StepResult | None = None
    """An interactive test: the interactor's own run (its own ``interactor`` is nil)."""
    artifacts: Mapping[str, bytes] | None = None
    """Files the job's ``artifacts`` globs matched in /box after the step (path → bytes);
    nil when the job named none (and so absent from the frame: older peers see no change)."""
    artifacts_truncated: bool | None = None
    """More matched than the server's caps let through (files left out or cut short)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileInfo:
    """A profile the server offers, with the limits a job gets and may ask for."""

    name: str
    description: str = ""
    compiled: bool = False
    default_limits: JobLimits | None = None
    max_limits: JobLimits | None = None
    entry: str | None = None
    """The file name the profile runs (``main.py``): a client that uploads one
    file under another name (``sandboxctl run hello.py``) renames it to this."""
    version: str | None = None
    """The runtime's version as it reports it (``gcc (Debian 12.2.0-14) 12.2.0``),
    probed once when the server starts; nil = unknown."""
    available: bool | None = None
    """False when this host cannot run the profile (its runtime is missing); nil =
    the server did not say (treat as available)."""
    unavailable_reason: str | None = None
    """Why the profile is unavailable (``/usr/bin/go is not installed on this host``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobInfo:
    """One line of ``sandboxctl ps``.

    ``id`` is the server-wide reference of the job (sandboxd writes
    ``"<connection>/<job id>"``, or ``"w<k>-<connection>/<job id>"`` with workers):
    the one ``KillRequest`` takes. ``cpu_time`` and ``memory`` are live readings of a
    running job (sandboxd reports the memory peak so far), ``None`` when unknown.
    """

    id: str
    profile: str
    state: str
    elapsed: float = 0.0
    client: str = ""
    cpu_time: float | None = None
    memory: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStats:
    """Warm containers of one profile."""

    profile: str
    warm: int = 0
    target: int = 0


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Client → server, first message: the newest version the client speaks."""

    version: int = PROTOCOL_VERSION
    client: str = ""
    token: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """Server → client, answer to ``Hello``: the version to use, limits, profiles."""

    version: int = PROTOCOL_VERSION
    server: str = ""
    limits: SizeLimits = DEFAULT_SIZE_LIMITS
    profiles: tuple[ProfileInfo, ...] = ()

    def __post_init__(self) -> None:
        _tuple(self, "profiles")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSubmission:
    """Client → server: run this job. ``id`` is chosen by the client."""

    id: str
    profile: str
    files: Mapping[str, bytes] = field(default_factory=dict)
    stdin: bytes = b""
    argv: tuple[str, ...] | None = None
    env: Mapping[str, str] | None = None
    limits: JobLimits | None = None
    cpuset_pin: bool | None = None
    compile: CompileStep | None = None
    tests: tuple[TestCase, ...] | None = None
    expected_output: bytes | None = None
    compare: str = "trailing_ws"
    float_tolerance: float | None = None
    stop_on_failure: bool = False
    stream: bool = False
    interactive_stdin: bool = False
    warm_runtime: bool | None = None
    memory_mode: str | None = None
    checker: Program | None = None
    generators: tuple[Program, ...] | None = None
    batches: tuple[Batch, ...] | None = None
    interactor: Program | None = None
    workspace: str | None = None
    """A tar archive comes in ``workspace`` chunks (this says its compression: ``tar`` or
    ``gzip``), closed by ``workspace_end``; it is unpacked into /box."""
    caches: tuple[str, ...] | None = None
    """Names of the operator's read-only cache directories, mounted at /cache/<name>."""
    artifacts: tuple[str, ...] | None = None
    """Globs relative to /box: the matching files come back in each step's result."""
    network: NetworkAccess | None = None

    def __post_init__(self) -> None:
        _tuple(self, "argv")
        _tuple(self, "tests")
        _tuple(self, "generators")
        _tuple(self, "batches")
        _tuple(self, "caches")
        _tuple(self, "artifacts")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobAcceptance:
    """Server → client: the job is valid and queued; output and result will follow."""

    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputChunk:
    """Server → client, streaming jobs only: bytes a step wrote, in order.

    ``seq`` counts the job's chunks from 0, both streams together; ``step`` is
    the index of the test (0 for a single run); ``compile`` marks output of the
    compile step (``step`` is then 0).
    """

    id: str
    stream: str
    data: bytes
    seq: int
    step: int = 0
    compile: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StdinChunk:
    """Client → server, ``interactive_stdin`` jobs only: more bytes for stdin."""

    id: str
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceChunk:
    """Client → server, jobs submitted with ``workspace``: the next bytes of the archive."""

    id: str
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfWorkspace:
    """Client → server: the workspace archive is complete; the job may run."""

    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfStdin:
    """Client → server: the job's stdin is closed (the program reads EOF)."""

    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    """Server → client, the job's last message: the compile result and one per step."""

    id: str
    compile: StepResult | None = None
    steps: tuple[StepResult, ...] = ()
    batches: tuple[BatchResult, ...] | None = None
    score: float | None = None
    """Judged jobs: points earned (the batches' scores, or without batches the tests')."""

    def __post_init__(self) -> None:
        _tuple(self, "steps")
        _tuple(self, "batches")


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancellation:
    """Client → server: stop this job. A ``JobResult`` or ``ErrorReport`` still follows."""

    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobListRequest:
    """Client → server: which jobs are queued or running (``sandboxctl ps``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobList:
    """Server → client, answer to ``JobListRequest``."""

    jobs: tuple[JobInfo, ...] = ()

    def __post_init__(self) -> None:
        _tuple(self, "jobs")


@dataclass(frozen=True, slots=True, kw_only=True)
class KillRequest:
    """Client → server: stop a job of *any* connection (``sandboxctl kill``).

    ``job`` is a reference from ``JobInfo.id``, not a job id of this
    connection (for those, ``Cancellation``). The job's owner still gets its
    result, with the verdict ``cancelled``.
    """

    job: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KillResult:
    """Server → client, answer to ``KillRequest``: ``found`` is false if no such job runs."""

    job: str
    found: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsRequest:
    """Client → server: how busy is the server."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStats:
    """Server → client, answer to ``StatsRequest``; ``counters`` holds anything else."""

    uptime: float = 0.0
    connections: int = 0
    jobs_queued: int = 0
    jobs_running: int = 0
    jobs_completed: int = 0
    pools: tuple[PoolStats, ...] = ()
    counters: Mapping[str, int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _tuple(self, "pools")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    """Either side: are you there? The peer answers with a ``Pong`` of the same nonce."""

    nonce: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong:
    """Answer to the oldest unanswered ``Ping``, echoing its nonce."""

    nonce: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReport:
    """Either side: something went wrong. Fatal to the connection unless ``job_scoped``."""

    code: str
    message: str = ""
    id: str | None = None

    @property
    def job_scoped(self) -> bool:
        """True when only job ``id`` ends; such a report is sent only by the server.

        A report is about one job when it carries an id and its code is not
        one of the protocol error codes (which always end the connection).
        A client may not send such a report: it cancels the job instead.
        """
        return self.id is not None and self.code not in PROTOCOL_ERROR_CODES


@dataclass(frozen=True, slots=True, kw_only=True)
class Goodbye:
    """Either side: I will send nothing more. See PROTOCOL.md §6 for when it may be sent."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """Not a message: the peer closed its end (``receive_data(b"")``)."""


Event = (
    Hello
    | Welcome
    | JobSubmission
    | JobAcceptance
    | OutputChunk
    | StdinChunk
    | EndOfStdin
    | WorkspaceChunk
    | EndOfWorkspace
    | JobResult
    | Cancellation
    | JobListRequest
    | JobList
    | KillRequest
    | KillResult
    | StatsRequest
    | ServerStats
    | Ping
    | Pong
    | ErrorReport
    | Goodbye
    | ConnectionClosed
)
"""Everything ``next_event`` can return besides ``NEED_DATA``."""
