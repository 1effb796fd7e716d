"""The client's engine, without I/O: one ``Connection``, the jobs and requests in flight.

Strategy: the sync and the async client are each a small loop around this
``Core``: they write the bytes it gives them and feed it the bytes they read.
The ``Core`` turns each event of the daemon into a change of one *slot* (a
job's acceptance, output, result or error; a request's answer) and records
which slots changed, so that the I/O layer wakes exactly the callers waiting
on them. Everything both clients must agree on lives here: job ids, how the
daemon's errors become exceptions, what a lost connection means for each job.

Rules that keep the connection usable: a submission is checked
(``Connection.check``) before it is sent, so a bad field raises
``JobRejected`` and the connection goes on; once the connection is broken
(lost, refused, protocol error), every waiting slot gets the error and every
later call raises it.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import sandboxd_protocol as proto

from ._cluster import is_redis_url
from ._errors import (
    ConnectError,
    ConnectionLost,
    JobRejected,
    ProtocolVersionError,
    ProtocolViolation,
    SandboxdError,
    ServerBusy,
    from_report,
)
from ._results import JobResult, Output

__all__ = [
    "BUSY_FIRST_DELAY",
    "BUSY_MAX_DELAY",
    "CLIENT_NAME",
    "DEFAULT_SOCKET",
    "Address",
    "Core",
    "JobSlot",
    "RequestSlot",
    "busy_delays",
    "connect_error",
    "pieces",
    "resolve_address",
]

DEFAULT_SOCKET = "/run/sandboxd/sandboxd.sock"
"""The daemon's default socket (``sandboxd.config.DEFAULT_SOCKET``; a test keeps them equal)."""

CLIENT_NAME = "sandboxd_client/0.1"

BUSY_FIRST_DELAY = 0.05
"""Seconds before the first retry of a job refused as busy; doubled each time."""
BUSY_MAX_DELAY = 2.0


# --------------------------------------------------------------------------------
# Where the daemon is
# --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    """A Unix socket path, a TCP host and port (with the daemon's token), or the
    ``redis://`` URL of a cluster's queue (``_cluster.py``)."""

    path: str | None = None
    host: str | None = None
    port: int | None = None
    token: str | None = None
    url: str | None = None

    def __str__(self) -> str:
        if self.url is not None:
            from ._cluster import redacted

            return redacted(self.url)
        return self.path if self.path is not None else f"{self.host}:{self.port}"


def resolve_address(
    socket: str | os.PathLike[str] | None = None,
    host: str | None = None,
    port: int | None = None,
    token: str | None = None,
) -> Address:
    """Where to connect: TCP if ``host``/``port`` are given, else the Unix socket
    ``socket``, ``$SANDBOXD_SOCKET`` or the daemon's default, in that order. A
    ``socket`` that is a ``redis://`` (``rediss://``, ``unix://``) URL is a cluster's queue.

    The token defaults to ``$SANDBOXD_TOKEN`` (the variable that configures the
    daemon's own token), and is sent over TCP only.

        >>> str(resolve_address("/tmp/s.sock")), str(resolve_address(host="::1", port=7070))
        ('/tmp/s.sock', '::1:7070')
    """
    if host is not None or port is not None:
        if host is None or port is None:
            raise ValueError("host and port go together: pass both, or a socket path")
        if token is None:
            token = os.environ.get("SANDBOXD_TOKEN") or None
        return Address(host=host, port=int(port), token=token)
    if socket is None:
        socket = os.environ.get("SANDBOXD_SOCKET") or DEFAULT_SOCKET
    if is_redis_url(socket):
        return Address(url=str(socket))
    return Address(path=os.fspath(socket))


def connect_error(
    address: Address, exc: BaseException | None, timeout: float | None
) -> ConnectError:
    """A ``ConnectError`` that says why ``address`` could not be reached and what to do."""
    where = str(address)
    if address.url is not None:
        reason = "no answer" if exc is None else (str(exc) or type(exc).__name__)
        return ConnectError(
            f"cannot reach the cluster's Redis at {where}: {reason}",
            address=where,
            hint="is redis-server running there? check the URL, its password or ACL user, "
            "and rediss:// for TLS (docs/cluster.md)",
        )
    if exc is None or isinstance(exc, TimeoutError):
        return ConnectError(
            f"cannot connect to sandboxd at {where}: no answer in {timeout} s",
            address=where,
            hint="the daemon is overloaded or hung; check it with `sandboxctl ping`",
        )
    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    start = "start it with `sandboxd serve` (or `systemctl start sandboxd`)"
    if address.path is not None:
        if code == errno.ENOENT:
            hint = (
                f"is the daemon running? {start}; if it listens elsewhere, "
                "pass its socket path (socket=..., --socket or SANDBOXD_SOCKET)"
            )
        elif code == errno.ECONNREFUSED:
            hint = f"the socket file is left from a daemon that is gone: {start}"
        elif code in (errno.EACCES, errno.EPERM):
            hint = (
                "you may not use this socket: join the group the daemon's "
                "socket_group names, or run as root"
            )
        else:
            hint = f"is the daemon running? {start}"
    elif code == errno.ECONNREFUSED:
        hint = f"nothing listens there: is the daemon running with tcp = '{where}'? {start}"
    else:
        hint = "check the host and port, and that the daemon listens on TCP (its tcp key)"
    message = f"cannot connect to sandboxd at {where}: {reason}"
    return ConnectError(message, address=where, hint=hint)


# --------------------------------------------------------------------------------
# Slots: what callers wait on
# --------------------------------------------------------------------------------


class Waitable:
    """Something callers wait on; ``notify`` calls each registered wake-up once."""

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[Callable[[], object]] = []

    def notify(self) -> None:
        waiters, self.waiters = self.waiters, []
        for wake in waiters:
            wake()


class JobSlot(Waitable):
    """One job in flight, as the daemon has answered it so far."""

    __slots__ = (
        "abandoned",
        "accepted",
        "cancel_sent",
        "chunks",
        "error",
        "result",
        "stdin_open",
        "sub",
        "workspace_open",
    )

    def __init__(self, sub: proto.JobSubmission) -> None:
        super().__init__()
        self.sub = sub
        self.stdin_open = sub.interactive_stdin
        self.workspace_open = sub.workspace is not None
        self.cancel_sent = False
        self.accepted = False
        self.chunks: deque[Output] = deque()
        self.result: JobResult | None = None
        self.error: SandboxdError | None = None
        self.abandoned = False  # nobody will read it: drop its output

    @property
    def id(self) -> str:
        return self.sub.id

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    @property
    def settled(self) -> bool:
        """Accepted or refused: a busy refusal comes before acceptance."""
        return self.accepted or self.done


class RequestSlot(Waitable):
    """A request (ping, list_jobs, kill, get_stats) waiting for its answer."""

    __slots__ = ("error", "value")

    def __init__(self) -> None:
        super().__init__()
        self.value: proto.Event | None = None
        self.error: SandboxdError | None = None

    @property
    def done(self) -> bool:
        return self.value is not None or self.error is not None


_ANSWER_OF: dict[type, type] = {
    proto.Ping: proto.Pong,
    proto.JobListRequest: proto.JobList,
    proto.KillRequest: proto.KillResult,
    proto.StatsRequest: proto.ServerStats,
}

_FIELD_RE = re.compile(r"^submit\.(\S+?): (.*)$", re.S)


# --------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------


class Core:
    """The protocol state of one client connection, and every slot waiting on it."""

    def __init__(self, address: Address, name: str = CLIENT_NAME) -> None:
        self.address = address
        self.name = name
        self.conn = proto.Connection(proto.CLIENT)
        self.welcome: proto.Welcome | None = None
        self.broken: SandboxdError | None = None
        self.jobs: dict[str, JobSlot] = {}
        self.requests: dict[type, deque[RequestSlot]] = {t: deque() for t in _ANSWER_OF.values()}
        self.state = Waitable()
        """Notified when the handshake ends or the connection breaks."""
        self.outbox: list[proto.Event] = []
        """Answers we owe the daemon (pongs): the I/O layer sends them."""
        self.changed: list[Waitable] = []
        self._ids = itertools.count(1)
        self._nonces = itertools.count(1)

    # -- sending -----------------------------------------------------------------

    def hello(self) -> bytes:
        """The first bytes to write; the token only goes over TCP."""
        token = self.address.token if self.address.host is not None else None
        return self.conn.send(proto.Hello(client=self.name, token=token))

    def raise_if_broken(self) -> None:
        if self.broken is not None:
            raise self.broken

    def new_job_id(self) -> str:
        """A job id free on this connection."""
        while True:
            job_id = str(next(self._ids))
            if job_id not in self.jobs:
                return job_id

    def submit(self, sub: proto.JobSubmission) -> tuple[JobSlot, bytes]:
        """Check and encode a submission; the slot is registered only if it is valid."""
        self.raise_if_broken()
        try:
            self.conn.check(sub)
        except proto.LocalProtocolError as e:
            raise self._rejected(e, sub.id) from None
        data = self._send(sub)
        slot = JobSlot(sub)
        self.jobs[sub.id] = slot
        return slot, data

    def request(self, event: proto.Event) -> tuple[RequestSlot, bytes]:
        """Encode a request; its slot gets the answer (answers come in order, per kind)."""
        self.raise_if_broken()
        if isinstance(event, proto.Ping) and not event.nonce:
            event = proto.Ping(nonce=next(self._nonces))
        data = self._send(event)
        slot = RequestSlot()
        self.requests[_ANSWER_OF[type(event)]].append(slot)
        return slot, data

    def job_message(self, event: proto.StdinChunk | proto.EndOfStdin | proto.Cancellation
                    | proto.WorkspaceChunk | proto.EndOfWorkspace) -> bytes:
        """Stdin, its end, or a cancel; ``b""`` when there is nothing (more) to say.

        The protocol allows one cancel per job and no stdin after its end or
        after a cancel; a caller may still ask twice (a handle's ``cancel`` and
        an abandoned wait), so the second one is dropped here rather than
        breaking the connection.
        """
        self.raise_if_broken()
        slot = self.jobs.get(event.id)
        if slot is None or slot.cancel_sent:
            return b""  # ended (or being cancelled): nothing to say any more
        if isinstance(event, proto.Cancellation):
            slot.cancel_sent = True
            slot.stdin_open = False
            slot.workspace_open = False
        elif isinstance(event, (proto.WorkspaceChunk, proto.EndOfWorkspace)):
            if not slot.workspace_open or slot.result is not None or slot.error is not None:
                return b""
            if isinstance(event, proto.EndOfWorkspace):
                slot.workspace_open = False
            return self._send(event)
        elif not slot.stdin_open:
            return b""
        elif isinstance(event, proto.EndOfStdin):
            slot.stdin_open = False
        return self._send(event)

    def message(self, event: proto.Event) -> bytes:
        """A message that is about no job (a pong, a goodbye)."""
        self.raise_if_broken()
        return self._send(event)

    def _send(self, event: proto.Event) -> bytes:
        try:
            return self.conn.send(event)
        except proto.LocalProtocolError as e:
            # Past check(): a frame too large, too many jobs or requests. The
            # Connection is now broken for good, so is this client.
            if isinstance(event, proto.JobSubmission):
                err: SandboxdError = self._rejected(e, event.id)
            else:
                err = ProtocolViolation(
                    f"cannot send {type(event).__name__} to sandboxd at {self.address}: {e}",
                    hint="a bug in sandboxd_client or in its caller; please report it",
                    code=e.code,
                )
            self.fail(err)
            raise err from None

    def _rejected(self, e: proto.LocalProtocolError, job_id: str) -> SandboxdError:
        if e.code in ("too_many_jobs", "too_many_requests"):
            return ServerBusy(
                f"too many jobs in flight on this connection to sandboxd at {self.address}: "
                f"{e.message}",
                hint="wait for some results before submitting more, or open another client",
                job_id=job_id,
            )
        m = _FIELD_RE.match(e.message)
        field, reason = (m.group(1), m.group(2)) if m else (None, e.message)
        return JobRejected(
            f"job rejected: {field + ': ' if field else ''}{reason}",
            hint="fix the job: nothing was sent to the daemon",
            code=e.code,
            field=field,
            job_id=job_id,
        )

    # -- receiving -----------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Feed bytes from the daemon (``b""`` at its end) and apply every whole event."""
        if self.broken is not None and not data:
            return
        self.conn.receive_data(data)
        while self.broken is None:
            try:
                event = self.conn.next_event()
            except proto.RemoteProtocolError as e:
                self.fail(self._violation(e))
                return
            if event is proto.NEED_DATA:
                return
            self._dispatch(event)

    def _violation(self, e: proto.RemoteProtocolError) -> SandboxdError:
        if e.code == "unsupported_version":
            return ProtocolVersionError(
                f"sandboxd at {self.address} answered with a protocol version this client "
                f"does not speak (client: {sorted(proto.SUPPORTED_VERSIONS)}): {e.message}",
                hint="install the same sandboxd release for the daemon and the client",
                code=e.code,
            )
        return ProtocolViolation(
            f"sandboxd at {self.address} broke the protocol ({e.code}): {e.message}",
            hint="a bug in sandboxd or a version mismatch; please report it with the daemon's log",
            code=e.code,
        )

    def _dispatch(self, event: proto.Event) -> None:
        t = type(event)
        if t is proto.OutputChunk:
            assert isinstance(event, proto.OutputChunk)
            slot = self.jobs.get(event.id)
            if slot is not None and not slot.abandoned:
                slot.chunks.append(Output(event.stream, event.data, event.step, event.compile))
                self.changed.append(slot)
        elif t is proto.JobAcceptance:
            assert isinstance(event, proto.JobAcceptance)
            slot = self.jobs.get(event.id)
            if slot is not None:
                slot.accepted = True
                self.changed.append(slot)
        elif t is proto.JobResult:
            assert isinstance(event, proto.JobResult)
            slot = self.jobs.pop(event.id, None)
            if slot is not None:
                slot.result = JobResult.from_wire(event)
                self.changed.append(slot)
        elif t is proto.ErrorReport:
            assert isinstance(event, proto.ErrorReport)
            err = from_report(event, where=str(self.address))
            if event.job_scoped:
                slot = self.jobs.pop(event.id or "", None)
                if slot is not None:
                    slot.error = err
                    self.changed.append(slot)
            else:
                self.fail(err)
        elif t in _ANSWER_OF.values():
            queue = self.requests[t]
            req = queue.popleft()  # the Connection checked that one is owed
            req.value = event
            self.changed.append(req)
        elif t is proto.Welcome:
            assert isinstance(event, proto.Welcome)
            self.welcome = event
            self.changed.append(self.state)
        elif t is proto.Ping:
            assert isinstance(event, proto.Ping)
            self.outbox.append(proto.Pong(nonce=event.nonce))
        elif t is proto.Goodbye:
            assert isinstance(event, proto.Goodbye)
            reason = f" ({event.reason})" if event.reason else ""
            self.fail(
                ConnectionLost(
                    f"sandboxd at {self.address} closed the connection{reason}",
                    hint="the daemon is stopping; jobs it had not accepted did not run: "
                    "submit them again once it is back",
                    code="goodbye",
                ),
                ran=False,
            )
        elif t is proto.ConnectionClosed:
            self.fail(
                ConnectionLost(
                    f"sandboxd at {self.address} closed the connection",
                    hint="the daemon stopped or restarted (see its log); submit the job again",
                )
            )

    def lost(self, exc: BaseException) -> None:
        """The socket failed (reset, broken pipe): the connection is gone."""
        self.fail(
            ConnectionLost(
                f"lost the connection to sandboxd at {self.address}: {exc}",
                hint="the daemon stopped or restarted (see its log); submit the job again",
            )
        )

    def fail(self, err: SandboxdError, *, ran: bool | None = None) -> None:
        """Break the connection with ``err``: every waiting job and request gets an error."""
        if self.broken is not None:
            return
        self.broken = err
        self.changed.append(self.state)
        for job_id, slot in self.jobs.items():
            if isinstance(err, ConnectionLost):
                did = ran if not slot.accepted else None
                slot.error = ConnectionLost(
                    f"job {job_id} got no result: {err.message}",
                    hint=(
                        "it did not run: submit it again"
                        if did is False
                        else "it may or may not have run; submit it again"
                    ),
                    job_id=job_id,
                    ran=did,
                    code=err.code,
                )
                slot.error.__cause__ = err
            else:
                slot.error = err
            self.changed.append(slot)
        self.jobs.clear()
        for queue in self.requests.values():
            for req in queue:
                req.error = err
                self.changed.append(req)
            queue.clear()

    def take_changed(self) -> list[Waitable]:
        """The slots changed since the last call (each once)."""
        changed, self.changed = self.changed, []
        return list(dict.fromkeys(changed))

    def take_outbox(self) -> list[proto.Event]:
        out, self.outbox = self.outbox, []
        return out


def pieces(data: bytes, core: Core) -> list[bytes]:
    """``data`` cut to the daemon's ``max_chunk`` (stdin chunks have a size cap)."""
    limits = core.conn.peer_limits
    step = limits.max_chunk if limits is not None else proto.DEFAULT_SIZE_LIMITS.max_chunk
    return [data[i : i + step] for i in range(0, len(data), step)]


def busy_delays(retries: int) -> list[float]:
    """The waits before each retry of a busy job: 0.05 s doubling, at most 2 s each,
    each shortened by a random part of up to half so that many clients spread out."""
    return [
        min(BUSY_MAX_DELAY, BUSY_FIRST_DELAY * 2**i) * random.uniform(0.5, 1.0)
        for i in range(max(0, retries))
    ]
