"""Which message may come when: the tables, and the small machine that applies them.

Strategy: every ordering rule of the protocol is written below as data
(``CONNECTION_TABLE``, ``JOB_TABLE``, ``ANSWERS`` and the sets after them),
and ``StateMachine`` only looks things up. The machine tracks both roles at
once, exactly as h11 does, and does not know which side it runs on: the
``Connection`` tells it, for each message, which role sent it and whether it
is our own (only the sender can check some rules: see ``GOODBYE_NEEDS_NO_JOBS``).

A message is first *classified* into a kind (its wire type, with two
refinements: ``submit_interactive`` and ``job_error``), then checked against
the tables, and only when every check passed is any state changed, so a
refused message leaves the machine as it was.

This module knows nothing of bytes, msgpack or field validation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ._errors import ErrorCode, Invalid
from ._events import (
    SUPPORTED_VERSIONS,
    Hello,
    JobResult,
    JobSubmission,
    KillRequest,
    KillResult,
    OutputChunk,
    Ping,
    Pong,
    Welcome,
)
from ._schema import TYPE_NAMES

__all__ = [
    "ANSWERS",
    "CONNECTION_TABLE",
    "JOB_TABLE",
    "DropMessage",
    "JobState",
    "Role",
    "State",
    "StateMachine",
    "message_kind",
]


class _FastEnum(Enum):
    """An enum whose members hash by identity: they key every table lookup below,
    and ``Enum.__hash__`` (written in Python) would cost more than the lookups."""

    __hash__ = object.__hash__


class Role(_FastEnum):
    """Which end of the connection."""

    CLIENT = "client"
    SERVER = "server"


class State(_FastEnum):
    """A role's connection-level state."""

    START = "START"
    """Nothing sent yet."""
    HANDSHAKE = "HANDSHAKE"
    """Client only: sent ``Hello``, waits for ``Welcome``."""
    READY = "READY"
    """Handshake done: job messages may flow."""
    CLOSED = "CLOSED"
    """Sent ``Goodbye`` or a fatal ``ErrorReport``: will send nothing more."""
    ERROR = "ERROR"
    """Broke the protocol; permanent."""


class JobState(_FastEnum):
    """A job's state as each role has made it. Client: what it has said about the job.
    Server: how far it has answered."""

    WORKSPACE_OPEN = "WORKSPACE_OPEN"
    """Client: submitted with ``workspace``; archive chunks may follow, until ``workspace_end``."""
    STDIN_OPEN = "STDIN_OPEN"
    """Client: submitted with ``interactive_stdin``; more stdin may follow."""
    SUBMITTED = "SUBMITTED"
    """Client: submitted; nothing more to send but a cancel."""
    CANCELLED = "CANCELLED"
    """Client: asked to cancel; the server still answers with a result or an error."""
    PENDING = "PENDING"
    """Server: not yet accepted."""
    RUNNING = "RUNNING"
    """Server: accepted; output chunks, then the result."""
    DONE = "DONE"
    """Server: answered (result, or error about the job): the id is free again."""


CLIENT, SERVER = Role.CLIENT, Role.SERVER
START, HANDSHAKE, READY, CLOSED = State.START, State.HANDSHAKE, State.READY, State.CLOSED
STDIN_OPEN, SUBMITTED, CANCELLED = JobState.STDIN_OPEN, JobState.SUBMITTED, JobState.CANCELLED
WORKSPACE_OPEN = JobState.WORKSPACE_OPEN
PENDING, RUNNING, DONE = JobState.PENDING, JobState.RUNNING, JobState.DONE

# ===========================================================================
# THE TABLES
# ===========================================================================

CONNECTION_TABLE: dict[Role, dict[State, dict[str, State]]] = {
    # sender -> sender's state -> message kind -> sender's next state
    CLIENT: {
        START: {"hello": HANDSHAKE, "error": CLOSED, "goodbye": CLOSED},
        HANDSHAKE: {"error": CLOSED, "goodbye": CLOSED},
        READY: {
            "submit": READY,
            "submit_interactive": READY,
            "submit_workspace": READY,
            "stdin": READY,
            "stdin_end": READY,
            "workspace": READY,
            "workspace_end": READY,
            "cancel": READY,
            "list_jobs": READY,
            "kill": READY,
            "get_stats": READY,
            "ping": READY,
            "pong": READY,
            "error": CLOSED,
            "goodbye": CLOSED,
        },
        CLOSED: {},
    },
    SERVER: {
        START: {"welcome": READY, "error": CLOSED, "goodbye": CLOSED},
        READY: {
            "accepted": READY,
            "output": READY,
            "result": READY,
            "job_error": READY,
            "job_list": READY,
            "kill_result": READY,
            "stats": READY,
            "ping": READY,
            "pong": READY,
            "error": CLOSED,
            "goodbye": CLOSED,
        },
        CLOSED: {},
    },
}

PEER_REQUIRED: dict[tuple[Role, str], State] = {
    # (sender, kind) -> the state the *other* role must be in
    (SERVER, "welcome"): HANDSHAKE,  # a welcome answers a hello
}

PEER_EFFECTS: dict[tuple[Role, str], dict[State, State]] = {
    # (sender, kind) -> how it moves the *other* role
    (SERVER, "welcome"): {HANDSHAKE: READY},  # the client may now submit
}

JOB_OPENERS: dict[tuple[Role, str], tuple[JobState, JobState]] = {
    # (sender, kind) -> (client's job state, server's job state) of a new job
    (CLIENT, "submit"): (SUBMITTED, PENDING),
    (CLIENT, "submit_interactive"): (STDIN_OPEN, PENDING),
    (CLIENT, "submit_workspace"): (WORKSPACE_OPEN, PENDING),
}

JOB_TABLE: dict[tuple[Role, JobState, str], JobState] = {
    # (sender, sender's job state, kind) -> sender's next job state
    (CLIENT, STDIN_OPEN, "stdin"): STDIN_OPEN,
    (CLIENT, STDIN_OPEN, "stdin_end"): SUBMITTED,
    (CLIENT, STDIN_OPEN, "cancel"): CANCELLED,
    (CLIENT, WORKSPACE_OPEN, "workspace"): WORKSPACE_OPEN,
    (CLIENT, WORKSPACE_OPEN, "workspace_end"): SUBMITTED,
    (CLIENT, WORKSPACE_OPEN, "cancel"): CANCELLED,
    (CLIENT, SUBMITTED, "cancel"): CANCELLED,
    (SERVER, PENDING, "accepted"): RUNNING,
    (SERVER, PENDING, "job_error"): DONE,  # refused: unknown profile, busy...
    (SERVER, RUNNING, "output"): RUNNING,  # only if the job asked to stream
    (SERVER, RUNNING, "result"): DONE,
    (SERVER, RUNNING, "job_error"): DONE,
}

JOB_NEEDS_FLAG: dict[str, str] = {
    # kind -> the submission flag the job must have been sent with
    "output": "stream",
}

STALE_AFTER_DONE: frozenset[tuple[Role, str]] = frozenset(
    # A client may say these about a job the server has just finished, having
    # not yet seen the end; whoever sees them after DONE drops them.
    {(CLIENT, "stdin"), (CLIENT, "stdin_end"), (CLIENT, "workspace"),
     (CLIENT, "workspace_end"), (CLIENT, "cancel")}
)

ANSWERS: dict[str, str] = {
    # request kind -> the kind that answers it, sent by the other role, oldest first
    "ping": "pong",
    "list_jobs": "job_list",
    "kill": "kill_result",
    "get_stats": "stats",
}

NEEDS_LIVE_RECEIVER: frozenset[str] = frozenset(
    # Kinds that ask the receiver to act. Received after the receiver closed,
    # they were sent before the sender saw the close: they are dropped.
    {
        "ping",
        "list_jobs",
        "kill",
        "get_stats",
        "submit",
        "submit_interactive",
        "submit_workspace",
        "stdin",
        "stdin_end",
        "workspace",
        "workspace_end",
        "cancel",
    }
)

GOODBYE_NEEDS_NO_JOBS: frozenset[Role] = frozenset({SERVER})
# Either role says goodbye only after answering every request it received; a
# server also only after answering every job. Only the *sender* can check this:
# the receiver's view includes its own requests and jobs still on the wire.

FINISHED_MEMORY = 4096
"""How many finished job ids we remember, to recognise stale messages about them."""

# ===========================================================================
# The machine
# ===========================================================================


def message_kind(event: Any) -> str:
    """The table key for an event: its wire type, refined where the rules differ."""
    kind = TYPE_NAMES[type(event)]
    if kind == "submit" and event.interactive_stdin:
        return "submit_interactive"
    if kind == "submit" and event.workspace is not None:
        return "submit_workspace"
    if kind == "error" and event.job_scoped:
        return "job_error"
    return kind


class DropMessage(Exception):
    """Not an error: the message is stale (see ``STALE_AFTER_DONE``, ``NEEDS_LIVE_RECEIVER``)."""


@dataclass(slots=True)
class Job:
    """What the machine remembers of one job in flight."""

    client: JobState
    server: JobState
    stream: bool
    steps: int
    """How many run steps the job has: results and output may not name more."""
    seq: int = 0
    """The ``seq`` the next output chunk must carry."""


class StateMachine:
    """Both roles' states, the jobs in flight and the unanswered requests."""

    def __init__(self, *, max_jobs_in_flight: int, max_pending_requests: int) -> None:
        self.states: dict[Role, State] = {CLIENT: START, SERVER: START}
        self.jobs: dict[str, Job] = {}
        self.finished: dict[str, None] = {}  # insertion-ordered set of recent ids
        # Requests each role has received and not yet answered, oldest first.
        self.owed: dict[Role, dict[str, deque[Any]]] = {
            role: {kind: deque() for kind in ANSWERS} for role in Role
        }
        self.hello_version: int | None = None
        self.version: int | None = None
        self.max_jobs_in_flight = max_jobs_in_flight
        self.max_pending_requests = max_pending_requests

    # -- public ---------------------------------------------------------------

    def process(self, role: Role, event: Any, *, ours: bool) -> None:
        """Check ``event`` sent by ``role`` against every table, then apply it.

        ``ours`` says that we are the sender (so sender-only rules apply).
        Raises ``Invalid`` (nothing changed) or ``DropMessage`` (nothing changed,
        nothing wrong: the message is stale).
        """
        kind = message_kind(event)
        states = self.states
        rule = _RULES.get((role, states[role], kind))
        if rule is None:
            raise self._refusal(role, kind)
        new_state, peer, need, effect, helper = rule
        if states[peer] is CLOSED and kind in NEEDS_LIVE_RECEIVER:
            if ours:
                raise Invalid(
                    "",
                    f"cannot send {kind!r}: the {peer.value} has closed",
                    ErrorCode.UNEXPECTED_MESSAGE,
                )
            raise DropMessage
        if need is not None and states[peer] is not need:
            raise Invalid(
                "",
                f"a {role.value} may send {kind!r} only while the {peer.value} is in "
                f"state {need.value}, not {states[peer].value}",
                ErrorCode.UNEXPECTED_MESSAGE,
            )
        # The helper for this kind checks first and returns a function that
        # applies the change, so that a refused message changes nothing.
        if helper is not None:
            commit = helper(self, role, peer, kind, event, ours)
            if commit is not None:
                commit()
        states[role] = new_state
        if effect is not None and states[peer] in effect:
            states[peer] = effect[states[peer]]
        if new_state is CLOSED:
            # Whatever the closed role was asked is never going to be answered.
            for queue in self.owed[role].values():
                queue.clear()

    def _refusal(self, role: Role, kind: str) -> Invalid:
        """Why ``CONNECTION_TABLE`` has no entry for ``kind`` from ``role`` now."""
        state = self.states[role]
        if state is State.ERROR:
            return Invalid(
                "", f"the {role.value} is in the ERROR state", ErrorCode.UNEXPECTED_MESSAGE
            )
        allowed = CONNECTION_TABLE[role][state]
        return Invalid(
            "",
            f"a {role.value} may not send {kind!r} in state {state.value} "
            f"(allowed: {', '.join(sorted(allowed)) or 'nothing'})",
            ErrorCode.UNEXPECTED_MESSAGE,
        )

    def set_error(self, role: Role) -> None:
        """``role`` broke the protocol; its state is ERROR for good."""
        self.states[role] = State.ERROR

    # -- checks: each returns the change to apply, or None ----------------------

    def _check_handshake(self, role: Role, peer: Role, kind: str, event: Any, ours: bool) -> Any:
        if kind == "hello":
            assert isinstance(event, Hello)
            version = event.version

            def commit() -> None:
                self.hello_version = version

            return commit
        if kind == "welcome":
            assert isinstance(event, Welcome)
            hello = self.hello_version or 0
            if event.version > hello or event.version not in SUPPORTED_VERSIONS:
                raise Invalid(
                    "welcome.version",
                    f"version {event.version} is not one this side speaks "
                    f"(hello asked for <= {hello}, supported: {sorted(SUPPORTED_VERSIONS)})",
                    ErrorCode.UNSUPPORTED_VERSION,
                )
            version = event.version

            def commit_welcome() -> None:
                self.version = version

            return commit_welcome
        return None

    def _check_submit(self, role: Role, peer: Role, kind: str, event: Any, ours: bool) -> Any:
        """A submit opens a job (``JOB_OPENERS``); its id must be free."""
        opener = JOB_OPENERS.get((role, kind))
        if opener is None:  # not reachable through CONNECTION_TABLE; kept as a guard
            raise Invalid("", f"a {role.value} may not send {kind!r}", ErrorCode.UNEXPECTED_MESSAGE)
        assert isinstance(event, JobSubmission)
        job_id = event.id
        if job_id in self.jobs:
            raise Invalid(
                "submit.id", f"job {job_id!r} is already in flight", ErrorCode.DUPLICATE_JOB
            )
        if len(self.jobs) >= self.max_jobs_in_flight:
            raise Invalid(
                "", f"more than {self.max_jobs_in_flight} jobs in flight", ErrorCode.TOO_MANY_JOBS
            )
        steps = len(event.tests) if event.tests is not None else 1
        job = Job(opener[0], opener[1], event.stream, steps)

        def commit() -> None:
            self.jobs[job_id] = job
            self.finished.pop(job_id, None)

        return commit

    def _check_job(self, role: Role, peer: Role, kind: str, event: Any, ours: bool) -> Any:
        """A message about a job in flight: ``JOB_TABLE``, ``JOB_NEEDS_FLAG``, seq and steps."""
        job_id = event.id
        job = self.jobs.get(job_id)
        if job is None:
            if (role, kind) in STALE_AFTER_DONE and job_id in self.finished:
                raise DropMessage
            where = f"{TYPE_NAMES[type(event)]}.id"
            raise Invalid(where, f"no job {job_id!r} is in flight", ErrorCode.UNKNOWN_JOB)
        current = job.client if role is CLIENT else job.server
        new = JOB_TABLE.get((role, current, kind))
        if new is None:
            raise Invalid(
                "",
                f"a {role.value} may not send {kind!r} for job {job_id!r} in job state "
                f"{current.value}",
                ErrorCode.UNEXPECTED_MESSAGE,
            )
        flag = JOB_NEEDS_FLAG.get(kind)
        if flag is not None and not getattr(job, flag):
            raise Invalid(
                "",
                f"job {job_id!r} was not submitted with {flag}=true",
                ErrorCode.UNEXPECTED_MESSAGE,
            )
        advance_seq = False
        if kind == "output":
            assert isinstance(event, OutputChunk)
            if event.seq != job.seq:
                raise Invalid(
                    "output.seq",
                    f"expected seq {job.seq} for job {job_id!r}, got {event.seq}",
                    ErrorCode.BAD_SEQUENCE,
                )
            if event.step >= job.steps:
                raise Invalid(
                    "output.step", f"job {job_id!r} has {job.steps} step(s), got step {event.step}"
                )
            advance_seq = True
        elif kind == "result":
            assert isinstance(event, JobResult)
            if len(event.steps) > job.steps:
                raise Invalid(
                    "result.steps",
                    f"job {job_id!r} has {job.steps} step(s), got {len(event.steps)} results",
                )

        def commit() -> None:
            if new is DONE:
                del self.jobs[job_id]
                self.finished[job_id] = None
                if len(self.finished) > FINISHED_MEMORY:
                    del self.finished[next(iter(self.finished))]
                return
            if role is CLIENT:
                job.client = new
            else:
                job.server = new
            if advance_seq:
                job.seq += 1

        return commit

    def _check_requests(self, role: Role, peer: Role, kind: str, event: Any, ours: bool) -> Any:
        if kind in ANSWERS:
            queue = self.owed[peer][kind]
            pending = sum(len(q) for q in self.owed[peer].values())
            if pending >= self.max_pending_requests:
                raise Invalid(
                    "",
                    f"more than {self.max_pending_requests} requests unanswered",
                    ErrorCode.TOO_MANY_REQUESTS,
                )
            # What the answer must echo: a ping's nonce, a kill's job reference.
            token = (
                event.nonce
                if isinstance(event, Ping)
                else event.job
                if isinstance(event, KillRequest)
                else None
            )
            return lambda: queue.append(token)
        request = _REQUEST_OF[kind]
        queue = self.owed[role][request]
        if not queue:
            raise Invalid("", f"{kind!r} answers no {request!r}", ErrorCode.UNEXPECTED_MESSAGE)
        if isinstance(event, Pong) and event.nonce != queue[0]:
            raise Invalid(
                "pong.nonce",
                f"must answer the oldest ping, nonce {queue[0]}, got {event.nonce}",
                ErrorCode.UNEXPECTED_MESSAGE,
            )
        if isinstance(event, KillResult) and event.job != queue[0]:
            raise Invalid(
                "kill_result.job",
                f"must answer the oldest kill, job {queue[0]!r}, got {event.job!r}",
                ErrorCode.UNEXPECTED_MESSAGE,
            )
        return queue.popleft

    def _check_goodbye(self, role: Role, peer: Role, kind: str, event: Any, ours: bool) -> None:
        if not ours:
            return None  # the receiver cannot check this: see GOODBYE_NEEDS_NO_JOBS
        owed = [k for k, q in self.owed[role].items() if q]
        if owed:
            raise Invalid(
                "",
                f"cannot say goodbye before answering: {', '.join(owed)}",
                ErrorCode.UNEXPECTED_MESSAGE,
            )
        if role in GOODBYE_NEEDS_NO_JOBS and self.jobs:
            raise Invalid(
                "",
                f"cannot say goodbye with {len(self.jobs)} job(s) unanswered "
                "(send each its result or an error first)",
                ErrorCode.UNEXPECTED_MESSAGE,
            )
        return None


_JOB_KINDS = frozenset(kind for (_, _, kind) in JOB_TABLE)
_REQUEST_OF = {answer: request for request, answer in ANSWERS.items()}
_HELPERS: dict[str, Any] = {
    "hello": StateMachine._check_handshake,
    "welcome": StateMachine._check_handshake,
    "goodbye": StateMachine._check_goodbye,
    **{kind: StateMachine._check_job for kind in _JOB_KINDS},
    **{kind: StateMachine._check_submit for (_, kind) in JOB_OPENERS},
    **{kind: StateMachine._check_requests for kind in (*ANSWERS, *_REQUEST_OF)},
}

# The tables above, joined for one lookup per message:
# (sender, sender's state, kind) -> (next state, peer, PEER_REQUIRED, PEER_EFFECTS, helper).
_RULES: dict[tuple[Role, State, str], tuple[State, Role, Any, Any, Any]] = {
    (role, state, kind): (
        new_state,
        SERVER if role is CLIENT else CLIENT,
        PEER_REQUIRED.get((role, kind)),
        PEER_EFFECTS.get((role, kind)),
        _HELPERS.get(kind),
    )
    for role, by_state in CONNECTION_TABLE.items()
    for state, by_kind in by_state.items()
    for kind, new_state in by_kind.items()
}
