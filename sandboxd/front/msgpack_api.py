"""The msgpack socket front door: one ``Session`` per connection over the job service.

Strategy: a connection is a task driving a sans-IO
``sandboxd_protocol.Connection``; it decodes each message, calls the
``JobService`` and encodes the answer, and that is all: admission, running,
verdicts and counting are the service's. Each job is a task in its
connection's nursery, so a client that disconnects takes its jobs with it
(their containers are killed, shielded, on the way out). What belongs to the
transport stays here: the handshake and its token, slow-client timeouts, the
connection count and the daemon-wide budget for unfinished frames, and
fitting a result into one frame. The wire types are mapped to and from the
service's in ``_wire.py``, shared with every front door that speaks the same
records (a queue of msgpack jobs, say). With workers (docs/configuration.md,
"Workers"), a client's ps, stats and kill are the daemon's: this worker's
answer joined with its siblings' (``_siblings.py``); a sibling's own request
arrives on the control socket and is answered from this worker alone.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
import os

import trio

import sandboxd_protocol as proto
from sandboxd import __version__
from sandboxd.config import Config
from sandboxd.jobs import JobOutcome, JobSpec
from sandboxd.log import event
from sandboxd.service import Job, JobService, ServiceError
from sandboxd.uncontended import held
from sandboxd.workspace import Upload, WorkspaceError

from ._siblings import DaemonView, Siblings
from ._wire import job_result, job_spec, profile_infos

# ------------------------------------------------------------------ the listener


class MsgpackFront:
    """The msgpack listener's shared state: connection count, frame budget, wire mapping."""

    def __init__(self, cfg: Config, service: JobService,
                 siblings: Siblings | None = None) -> None:
        self.cfg = cfg
        self.service = service
        # With workers (sandboxd/workers.py): this worker's tag prefixes every job
        # reference, and ps, stats and kill reach the siblings (_siblings.py).
        self.siblings = siblings
        self.owner_prefix = f"{siblings.tag}-" if siblings is not None else ""
        self.connections = 0
        # The whole daemon's ps, stats and kill (shared with the HTTP front door).
        self.view = DaemonView(service, siblings, lambda: self.connections)
        self.conn_seq = itertools.count(1)
        self.limits = proto.SizeLimits(max_frame_size=cfg.max_frame)
        self.sessions: set[Session] = set()
        # What every connection's unfinished frames may hold together (each alone may
        # reach max_frame): without it, max_connections slow clients could make the
        # daemon buffer max_connections x max_frame bytes.
        self.buffer_budget = cfg.max_buffered or 4 * cfg.max_frame

    def over_budget(self) -> bool:
        return sum(s.conn.buffered for s in self.sessions) > self.buffer_budget

    def profile_infos(self) -> tuple[proto.ProfileInfo, ...]:
        return profile_infos(self.service.profiles.values(), self.service.versions)

    async def handle(self, stream: trio.abc.Stream, tcp: bool = False,
                     control: bool = False) -> None:
        """Serve one connection until it ends; past ``max_connections``, busy at once.

        ``control``: a sibling worker's connection to this one's control socket,
        whose ps, stats and kill are answered from this worker alone (and which
        the connection limit does not count: a daemon full of clients still
        answers its siblings)."""
        if control:
            try:
                await Session(self, stream, next(self.conn_seq), False, control=True).run()
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()
            return
        n = next(self.conn_seq)
        if self.connections >= self.cfg.max_connections:
            conn = proto.Connection(proto.SERVER, limits=self.limits)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                     proto.LocalProtocolError):
                await stream.send_all(conn.send(proto.ErrorReport(
                    code="server_busy", message=f"too many connections "
                    f"(max_connections={self.cfg.max_connections}); try again later")))
            await stream.aclose()
            return
        self.connections += 1
        if self.siblings is not None:
            self.siblings.publish(self.connections)
        try:
            session = Session(self, stream, n, tcp)
            self.sessions.add(session)
            try:
                await session.run()
            finally:
                self.sessions.discard(session)
        finally:
            self.connections -= 1
            if self.siblings is not None:
                self.siblings.publish(self.connections)
            with contextlib.suppress(Exception):
                await stream.aclose()


# A connection whose unfinished input is below this is never refused for the budget:
# handshakes, small jobs and control messages always get through.
BUDGET_EXEMPT = 256 << 10


class Session:
    """One client connection: the protocol loop, and its jobs as child tasks."""

    def __init__(self, front: MsgpackFront, stream: trio.abc.Stream, n: int, tcp: bool,
                 *, control: bool = False) -> None:
        self.front = front
        self.control = control  # a sibling worker's: ps, stats and kill of this worker only
        self.service = front.service
        self.stream = stream
        self.n = n
        self.tcp = tcp
        self.conn = proto.Connection(proto.SERVER, limits=front.limits)
        self.send_lock = trio.Lock()
        self.jobs: dict[str, Job] = {}
        self.stdin: dict[str, trio.MemorySendChannel[bytes]] = {}
        self.uploads: dict[str, Upload] = {}  # workspace archives still arriving
        self.client = f"conn-{n}"
        self.closed = False
        # Slow clients (the timeouts below): the hello is due handshake_timeout after
        # connecting, however it trickles in; a message, once begun, is due idle_timeout
        # after its first bytes; a client with no job in flight may be silent for
        # idle_timeout; and one that reads nothing for idle_timeout is gone.
        self._opened = trio.current_time()
        self._message_started: float | None = None
        self._receiving: trio.CancelScope | None = None

    async def send(self, ev: proto.Event, *, shield: bool = False) -> None:
        """Send one event; a client that takes in none of it for ``idle_timeout`` is dropped.

        Cancellation: the bytes may be half sent; the connection is then unusable,
        and the caller is on its way out anyway. ``shield``: not cancelled (a job's
        result), which needs a cancel scope only where this waits: for the lock, or for
        the socket to take the rest.

        What the socket takes at once is written without a pass through trio's
        scheduler (``held``, ``_send_now``): an answer is a few hundred bytes, which a
        Unix socket takes whole, and the lock is almost always free. So most results need
        no cancel scope at all.
        """
        async with held(self.send_lock, shield=shield):
            if self.closed:
                return
            if self.conn.error is not None and (type(ev) is not proto.ErrorReport
                                                or ev.job_scoped):
                return  # the peer broke the protocol: only the fatal error goes out now
            try:
                data = self.conn.send(ev)
            except proto.LocalProtocolError as e:
                # Our bug (the message broke a rule): it ends this connection, whose
                # protocol state is now broken, and never the daemon with every job.
                event("send_refused", logging.ERROR, conn=self.n, code=e.code,
                      message=e.message, what=type(ev).__name__)
                self.closed = True
                with trio.CancelScope(shield=True):
                    await self.stream.aclose()
                return
            if data:
                data = data[self._send_now(data):]
            if data:
                with trio.CancelScope(shield=shield), \
                        trio.move_on_after(self.front.cfg.idle_timeout or float("inf")) as late:
                    try:
                        await self.stream.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.closed = True
                if late.cancelled_caught:
                    # Without this, a client that never reads would hold its connection,
                    # and the container of a finished job, for ever (results are sent
                    # shielded). Closing the stream also wakes the receive loop.
                    self.closed = True
                    event("send_timeout", logging.WARNING, conn=self.n, pending=len(data))
                    with trio.CancelScope(shield=True):
                        await self.stream.aclose()

    def _send_now(self, data: bytes) -> int:
        """How much of ``data`` the socket took without waiting (0: let trio send it)."""
        if not isinstance(self.stream, trio.SocketStream):
            return 0
        fd = self.stream.socket.fileno()  # -1 once closed, never a reused number
        if fd < 0:
            return 0
        try:
            return os.write(fd, data)
        except OSError:  # full (trio waits), or broken (trio's send says so, typed)
            return 0

    def _receive_deadline(self) -> float:
        cfg = self.front.cfg
        now = trio.current_time()
        idle = cfg.idle_timeout or float("inf")
        if self.conn.their_state is proto.State.START:
            return self._opened + cfg.handshake_timeout
        if self.conn.buffered:  # inside a message: it is due, job or no job
            if self._message_started is None:
                self._message_started = now
            return self._message_started + idle
        if self.jobs:  # waiting for results is not idleness; _job_ended rearms this
            return float("inf")
        return now + idle

    async def _receive(self) -> bytes:
        with trio.CancelScope(deadline=self._receive_deadline()) as scope:
            self._receiving = scope
            try:
                return await self.stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
            finally:
                self._receiving = None
        raise TimeoutError("timed out")

    def _job_ended(self) -> None:
        """Start the idle clock of a receive that began while jobs were in flight."""
        if self._receiving is not None and not self.jobs:
            self._receiving.deadline = min(self._receiving.deadline, self._receive_deadline())

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            try:
                await self._loop(nursery)
            finally:
                # The client is gone (or misbehaved): its jobs go with it.
                for job in self.jobs.values():
                    job.cancel("client disconnected")
                nursery.cancel_scope.cancel()

    async def _loop(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                ev = self.conn.next_event()
            except proto.RemoteProtocolError as e:
                event("protocol_error", logging.WARNING, conn=self.n, code=e.code,
                      message=e.message)
                with contextlib.suppress(proto.LocalProtocolError):
                    await self.send(proto.ErrorReport(code=e.code, message=e.message))
                return
            if ev is proto.NEED_DATA:
                try:
                    data = await self._receive()
                except TimeoutError:
                    if self.conn.their_state is proto.State.START:
                        message = "no hello in time"
                    elif self.conn.buffered:
                        message = "a message left unfinished for too long"
                    else:
                        message = "idle too long"
                    with contextlib.suppress(proto.LocalProtocolError):
                        await self.send(proto.ErrorReport(code="timeout", message=message))
                    return
                self.conn.receive_data(data)
                if self.conn.buffered > BUDGET_EXEMPT and self.front.over_budget():
                    event("over_budget", logging.WARNING, conn=self.n,
                          buffered=self.conn.buffered, budget=self.front.buffer_budget)
                    with contextlib.suppress(proto.LocalProtocolError):
                        await self.send(proto.ErrorReport(
                            code="server_busy", message="too much unfinished input across "
                            "connections; send it again later"))
                    return
                continue
            self._message_started = None  # a whole message came: the next one's clock
            if isinstance(ev, proto.ConnectionClosed):
                return
            await self._dispatch(ev, nursery)
            if self.closed:
                return

    async def _dispatch(self, ev: proto.Event, nursery: trio.Nursery) -> None:
        front = self.front
        if isinstance(ev, proto.Hello):
            if self.tcp and not (ev.token and hmac.compare_digest(
                    ev.token.encode(), front.cfg.token.encode())):
                await self.send(proto.ErrorReport(code="unauthorized",
                                                  message="a valid token is required over TCP"))
                self.closed = True
                return
            self.client = ev.client or self.client
            await self.send(proto.Welcome(server=f"sandboxd/{__version__}",
                                          limits=front.limits,
                                          profiles=front.profile_infos()))
        elif isinstance(ev, proto.JobSubmission):
            await self._submit(ev, nursery)
        elif isinstance(ev, proto.StdinChunk):
            chan = self.stdin.get(ev.id)
            if chan is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await chan.send(ev.data)
        elif isinstance(ev, proto.WorkspaceChunk):
            upload = self.uploads.get(ev.id)
            if upload is not None:
                try:
                    upload.write(ev.data)
                except WorkspaceError:
                    self.uploads.pop(ev.id, None)  # its job ends with the error (execute)
        elif isinstance(ev, proto.EndOfWorkspace):
            upload = self.uploads.pop(ev.id, None)
            if upload is not None:
                upload.finish()
        elif isinstance(ev, proto.EndOfStdin):
            chan = self.stdin.pop(ev.id, None)
            if chan is not None:
                await chan.aclose()
        elif isinstance(ev, proto.Cancellation):
            job = self.jobs.get(ev.id)
            if job is not None:
                job.cancel("cancelled by the client")
        elif isinstance(ev, proto.JobListRequest):
            view = front.view
            await self.send(view.job_list() if self.control else await view.daemon_job_list())
        elif isinstance(ev, proto.KillRequest):
            found = (self.service.kill(ev.job) if self.control
                     else await front.view.daemon_kill(ev.job))
            await self.send(proto.KillResult(job=ev.job, found=found))
        elif isinstance(ev, proto.StatsRequest):
            # A sibling's ask also carries this worker's job metrics (its /metrics).
            await self.send(front.view.stats(metrics=True) if self.control
                            else await front.view.daemon_stats())
        elif isinstance(ev, proto.Ping):
            await self.send(proto.Pong(nonce=ev.nonce))
        elif isinstance(ev, proto.Goodbye):
            self.closed = True
        elif isinstance(ev, proto.ErrorReport):
            event("client_error", logging.WARNING, conn=self.n, code=ev.code,
                  message=ev.message)
            self.closed = True

    async def _refuse(self, job_id: str, code: str, message: str) -> None:
        await self.send(proto.ErrorReport(code=code, message=message, id=job_id))
        event("job_refused", job=job_id, conn=self.n, code=code, reason=message)

    async def _submit(self, sub: proto.JobSubmission, nursery: trio.Nursery) -> None:
        try:
            spec = self._job_spec(sub)
            job = self.service.submit(spec, id=sub.id, owner=f"{self.front.owner_prefix}{self.n}",
                                      client=self.client)
        except ServiceError as e:
            self.stdin.pop(sub.id, None)
            upload = self.uploads.pop(sub.id, None)
            if upload is not None:
                upload.close()
            return await self._refuse(sub.id, e.code, e.message)
        self.jobs[sub.id] = job
        await self.send(proto.JobAcceptance(id=sub.id))
        nursery.start_soon(self._run_job, job)

    def _job_spec(self, sub: proto.JobSubmission) -> JobSpec:
        """The wire's submission in the service's terms, with its stdin and output streams."""
        profile = self.service.profile(sub.profile)
        stdin_stream = None
        if sub.interactive_stdin:
            send_chan, recv_chan = trio.open_memory_channel[bytes](16)
            self.stdin[sub.id] = send_chan
            stdin_stream = recv_chan
        seq = itertools.count()

        async def on_output(step: int, stream: str, data: bytes) -> None:
            await self.send(proto.OutputChunk(id=sub.id, stream=stream, data=data,
                                              seq=next(seq), step=step))

        async def on_compile_output(stream: str, data: bytes) -> None:
            await self.send(proto.OutputChunk(id=sub.id, stream=stream, data=data,
                                              seq=next(seq), compile=True))

        workspace = None
        if sub.workspace is not None:
            cfg = self.front.cfg
            try:
                workspace = Upload(os.path.join(cfg.state_dir, "sandboxd-workspaces"),
                                   sub.workspace, cfg.max_workspace, cfg.idle_timeout)
            except (WorkspaceError, OSError) as e:
                raise ServiceError("invalid_job", f"workspace: {e}") from None
            self.uploads[sub.id] = workspace
        return job_spec(sub, profile, on_output=on_output if sub.stream else None,
                        on_compile_output=on_compile_output if sub.stream else None,
                        stdin_stream=stdin_stream, profiles=self.service.profile,
                        workspace=workspace)

    async def _run_job(self, job: Job) -> None:
        outcome: JobOutcome | None = None
        error: ServiceError | None = None
        try:
            try:
                outcome = await self.service.execute(job)
            except ServiceError as e:
                error = e
            finally:
                self.jobs.pop(job.id, None)
                self._job_ended()
                chan = self.stdin.pop(job.id, None)
                if chan is not None:
                    chan.close()
                self.uploads.pop(job.id, None)
                if job.spec.workspace is not None:
                    job.spec.workspace.close()  # its spooled bytes, freed whatever happened
            if error is not None:
                await self._refuse(job.id, error.code, error.message)
            elif outcome is not None and not self.closed:
                result = job_result(job.id, outcome, self.front.limits.max_frame_size)
                await self.send(result, shield=True)
        finally:
            self.service.release(job)
