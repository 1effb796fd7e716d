"""``sandboxd serve``: the trio supervisor that serves jobs over a socket from a warm pool.

Strategy: ``main`` does, in order, everything that must happen before trio
runs (configuration, the cgroup root and the removal of whatever a crashed
run left there, and the zygote, which must be forked while this process is
single-threaded), then ``trio.run(serve)``. ``serve`` starts each long-lived
part with ``nursery.start`` (the pool first, so that jobs are accepted only
once it is warm; then the listeners), and handles SIGTERM by draining.

Each connection is a task driving a sans-IO ``sandboxd_protocol.Connection``;
each job is a task in its connection's nursery, so a client that disconnects
takes its jobs with it (their containers are killed, shielded, on the way
out). Jobs pass through one ``Scheduler``: a bounded queue (past it, ``busy``
at once) in front of a capacity limiter (the concurrency), and, for pinned
jobs, a ``CpuAllocator`` that gives each run step a CPU no other pinned step
has meanwhile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import grp
import hmac
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

import sandboxd_protocol as proto
from sandboxd import __version__, cgroups, jobs, zygote
from sandboxd.cgroups import CgroupBackend, CgroupError
from sandboxd.config import Config, ConfigError, load
from sandboxd.container import ContainerSpec
from sandboxd.executor import Container, RunStep
from sandboxd.jobs import JobError, JobOutcome, JobSpec, TestSpec, default_spec
from sandboxd.pool import Pool
from sandboxd.profiles import Profile, ProfileError, load_dir
from sandboxd.result import Result, SandboxError

log = logging.getLogger("sandboxd")


# --------------------------------------------------------------------- logging


class _LineFormatter(logging.Formatter):
    """One structured line per event: ``ts=... level=... event=... key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        parts = [f"ts={time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created))}"
                 f".{int(record.msecs):03d}Z", f"level={record.levelname.lower()}",
                 f"event={_q(record.getMessage())}"]
        parts += [f"{k}={_q(v)}" for k, v in fields.items()]
        return " ".join(parts)


def _q(v: Any) -> str:
    s = f"{v:.6f}" if isinstance(v, float) else str(v)
    return s if s and not any(c in s for c in ' ="\n') else '"' + s.replace('"', "'") + '"'


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    log.log(level, name, extra={"fields": fields})


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    root = logging.getLogger("sandboxd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


# ------------------------------------------------------------------- jobs


@dataclass(eq=False)
class JobRecord:
    """What ``ps`` shows of a job, and the handle ``kill`` uses."""

    ref: str
    id: str
    profile: str
    client: str
    submitted: float = field(default_factory=time.monotonic)
    state: str = "queued"
    queue_wait: float = 0.0
    box: Container | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    cancel_reason: str = ""
    used: list[Container] = field(default_factory=list)

    def release(self, pool: Pool) -> None:
        while self.used:
            pool.release(self.used.pop())


class CpuAllocator:
    """One CPU per pinned step, none shared between pinned steps; FIFO when all are taken.

    Pinning makes a judge's CPU time depend on the program, not on what else
    runs: no migrations, a cache of its own among pinned jobs. Unpinned steps
    still float over every CPU (a host that judges should pin every job). The
    highest-numbered free CPU goes first: CPU 0 takes most of the host's
    housekeeping, and a run that finds the CPU its predecessor used finds the
    same conditions.
    """

    def __init__(self, cpus: list[int]) -> None:
        self.cpus = sorted(cpus)
        self._free = set(self.cpus)
        self._slots = trio.Semaphore(len(self.cpus))  # FIFO: first to wait, first served

    @contextlib.asynccontextmanager
    async def cpu(self) -> AsyncIterator[int]:
        """A CPU of its own until the block ends.

        Cancellation: while waiting, nothing is held; once granted, the CPU is
        handed back however the block ends.
        """
        await self._slots.acquire()
        cpu = max(self._free)
        self._free.remove(cpu)
        try:
            yield cpu
        finally:
            self._free.add(cpu)
            self._slots.release()


class Scheduler:
    """A bounded queue in front of the concurrency limit; counts what ``stats`` reports."""

    def __init__(self, pool: Pool, concurrency: int, queue_length: int,
                 cpus: list[int] | None = None) -> None:
        self.pool = pool
        self.concurrency = concurrency
        self.limiter = trio.CapacityLimiter(concurrency)
        self.cpus = CpuAllocator(cpus or sorted(os.sched_getaffinity(0)))
        self.queue_length = queue_length
        self.jobs: dict[str, JobRecord] = {}
        self.verdicts: Counter[str] = Counter()
        self.queue_waits: deque[float] = deque(maxlen=2000)
        self.completed = 0
        self.busy_refusals = 0
        self.compiles = 0  # compile steps run: a batch of N tests must add exactly 1
        self.pinned_steps = 0

    @property
    def queued(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state == "queued")

    def admit(self) -> bool:
        """Room for one more job: ``concurrency`` may run and ``queue_length`` more may wait."""
        return len(self.jobs) < self.concurrency + self.queue_length

    def runner(self, rec: JobRecord) -> jobs.StepRunner:
        async def run_step(spec: ContainerSpec, step: RunStep, collect: bool,
                           pin: bool = False) -> tuple[Result, dict[str, bytes] | None]:
            t = time.monotonic()
            async with self.limiter, contextlib.AsyncExitStack() as stack:
                if pin:  # inside the limiter: at most `concurrency` wait for a CPU
                    step = dataclasses.replace(step, cpuset=str(
                        await stack.enter_async_context(self.cpus.cpu())))
                    self.pinned_steps += 1
                if collect:
                    self.compiles += 1
                if rec.state == "queued":
                    rec.queue_wait = time.monotonic() - t
                    self.queue_waits.append(rec.queue_wait)
                rec.state = "running"
                box = await self.pool.take(spec)
                rec.box = box
                files = None
                try:
                    result = await box.run(step)
                    if collect and result.verdict == "ok":
                        files = await box.collect()
                except SandboxError as e:
                    result = Result.sandbox_error(e.reason)
                except CgroupError as e:  # the host's (a pinned job without cpuset), not the job's
                    result = Result.sandbox_error(str(e))
                finally:
                    rec.box = None
                    # Its job is over and killed; destroying the rest waits until the
                    # result is on its way (JobRecord.release), off the critical path.
                    rec.used.append(box)
            return result, files

        return run_step


# ----------------------------------------------------------------- mapping


def _step_result(outcome: jobs.StepOutcome) -> proto.StepResult:
    r = outcome.result
    repeat = None
    if outcome.repeat is not None:
        rp = outcome.repeat
        repeat = proto.RepeatStats(runs=rp.runs, cpu_time_min=rp.cpu[0],
                                   cpu_time_median=rp.cpu[1], cpu_time_max=rp.cpu[2],
                                   wall_time_min=rp.wall[0], wall_time_median=rp.wall[1],
                                   wall_time_max=rp.wall[2], memory_peak_max=rp.memory_peak_max,
                                   chosen=rp.chosen)
    return proto.StepResult(
        verdict=r.verdict, reason=r.reason, exit_code=r.exit_code, signal=r.signal,
        cpu_time=r.cpu_time, user_time=r.user_time, sys_time=r.sys_time,
        wall_time=r.wall_time, memory_peak=r.memory_peak, oom_killed=r.oom_killed,
        stdout=r.stdout, stderr=r.stderr, stdout_truncated=r.stdout_truncated,
        stderr_truncated=r.stderr_truncated, repeat=repeat)


def _cancelled_result(reason: str) -> proto.StepResult:
    return proto.StepResult(verdict="cancelled", reason=reason)


# What a step result holds besides its outputs, at most (reason <= 1 KiB, numbers, flags,
# a repeat record), and the rest of a result frame.
_STEP_OVERHEAD = 2048
_RESULT_OVERHEAD = 1024


def _fit(steps: tuple[proto.StepResult, ...], compile_result: proto.StepResult | None,
         max_frame: int) -> tuple[tuple[proto.StepResult, ...], proto.StepResult | None]:
    """Cut the outputs of a result so that it fits in one frame, marking them truncated.

    A job may ask for up to 1 GiB of output per stream, and a batch has many
    steps: more than a frame carries (64 MiB by default). A frame the protocol
    refuses to send would break the connection, so every stream keeps the same
    share of the room instead (a cut one says so, as at its output limit).
    """
    everything = [*steps, *([compile_result] if compile_result else [])]
    total = sum(len(s.stdout) + len(s.stderr) for s in everything)
    room = max_frame - _RESULT_OVERHEAD - _STEP_OVERHEAD * len(everything)
    if total <= room:
        return steps, compile_result
    keep = max(0, room) / total

    def cut(s: proto.StepResult) -> proto.StepResult:
        out, err = int(len(s.stdout) * keep), int(len(s.stderr) * keep)
        return dataclasses.replace(
            s, stdout=s.stdout[:out], stderr=s.stderr[:err],
            stdout_truncated=s.stdout_truncated or out < len(s.stdout),
            stderr_truncated=s.stderr_truncated or err < len(s.stderr))

    return tuple(cut(s) for s in steps), cut(compile_result) if compile_result else None


# ------------------------------------------------------------------ server


class Server:
    def __init__(self, cfg: Config, profiles: dict[str, Profile], pool: Pool,
                 backend: CgroupBackend, versions: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.profiles = profiles
        self.versions = versions or {}  # probed in main(), before trio: no subprocess here
        self.pool = pool
        self.backend = backend
        self.sched = Scheduler(pool, cfg.concurrency, cfg.queue_length)
        self.started = time.monotonic()
        self.connections = 0
        self.conn_seq = itertools.count(1)
        self.draining = False
        self.limits = proto.SizeLimits(max_frame_size=cfg.max_frame)
        self.sessions: set[Session] = set()
        # What every connection's unfinished frames may hold together (each alone may
        # reach max_frame): without it, max_connections slow clients could make the
        # daemon buffer max_connections x max_frame bytes.
        self.buffer_budget = cfg.max_buffered or 4 * cfg.max_frame

    def over_budget(self) -> bool:
        return sum(s.conn.buffered for s in self.sessions) > self.buffer_budget

    # -- profiles --------------------------------------------------------

    def profile_infos(self) -> tuple[proto.ProfileInfo, ...]:
        """What ``welcome`` lists: every profile, unavailable ones with their reason."""
        out = []
        for p in self.profiles.values():
            out.append(proto.ProfileInfo(
                name=p.name, description=p.description, compiled=p.compile is not None,
                default_limits=p.limits.to_wire(), max_limits=p.max_limits.to_wire(),
                entry=p.entry, version=self.versions.get(p.name) or None,
                available=not p.unavailable, unavailable_reason=p.unavailable or None))
        return tuple(out)

    # -- connections -----------------------------------------------------

    async def handle(self, stream: trio.abc.Stream, tcp: bool = False) -> None:
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
        try:
            session = Session(self, stream, n, tcp)
            self.sessions.add(session)
            try:
                await session.run()
            finally:
                self.sessions.discard(session)
        finally:
            self.connections -= 1
            with contextlib.suppress(Exception):
                await stream.aclose()

    # -- stats -----------------------------------------------------------

    def stats(self) -> proto.ServerStats:
        waits = sorted(self.sched.queue_waits)

        def pct(q: float) -> float:
            return waits[min(len(waits) - 1, int(q * len(waits)))] if waits else 0.0

        c = self.pool.counters
        counters: dict[str, int | float] = {
            f"verdict_{k}": v for k, v in self.sched.verdicts.items()}
        counters.update(
            pool_hits=c.hits, pool_misses=c.misses, containers_created=c.created,
            containers_destroyed=c.destroyed, spawn_failures=c.spawn_failures,
            cgroups_recycled=c.cgroups_recycled, cgroups=self.pool.cgroup_count(),
            busy_refusals=self.sched.busy_refusals, compiles=self.sched.compiles,
            pinned_steps=self.sched.pinned_steps,
            refill_mean_s=(c.refill_seconds / c.refills) if c.refills else 0.0,
            queue_wait_p50_s=pct(0.5), queue_wait_p90_s=pct(0.9), queue_wait_p99_s=pct(0.99),
        )
        pools = []
        for spec, warm, target in self.pool.shapes():
            name = next((p.name for p in self.profiles.values()
                         if default_spec(p) == spec), "custom")
            pools.append(proto.PoolStats(profile=name, warm=warm, target=target))
        running = sum(1 for j in self.sched.jobs.values() if j.state == "running")
        return proto.ServerStats(
            uptime=time.monotonic() - self.started, connections=self.connections,
            jobs_queued=self.sched.queued, jobs_running=running,
            jobs_completed=self.sched.completed, pools=tuple(pools), counters=counters)

    def job_list(self) -> proto.JobList:
        now = time.monotonic()
        infos = []
        for j in self.sched.jobs.values():
            cpu = memory = None
            if j.box is not None:  # running: live readings for ps (none if the read fails)
                try:
                    cpu, memory = j.box.live_usage()
                except Exception:
                    pass
            infos.append(proto.JobInfo(id=j.ref, profile=j.profile, state=j.state,
                                       elapsed=now - j.submitted, client=j.client,
                                       cpu_time=cpu, memory=memory))
        return proto.JobList(jobs=tuple(infos))

    def kill(self, ref: str) -> bool:
        """End job ``ref`` (``JobInfo.id``) of any connection; its owner gets ``cancelled``."""
        rec = self.sched.jobs.get(ref)
        if rec is None:
            return False
        rec.cancel_reason = "killed by sandboxctl kill"
        rec.scope.cancel()
        return True


# A connection whose unfinished input is below this is never refused for the budget:
# handshakes, small jobs and control messages always get through.
BUDGET_EXEMPT = 256 << 10


class Session:
    """One client connection: the protocol loop, and its jobs as child tasks."""

    def __init__(self, server: Server, stream: trio.abc.Stream, n: int, tcp: bool) -> None:
        self.server = server
        self.stream = stream
        self.n = n
        self.tcp = tcp
        self.conn = proto.Connection(proto.SERVER, limits=server.limits)
        self.send_lock = trio.Lock()
        self.jobs: dict[str, JobRecord] = {}
        self.stdin: dict[str, trio.MemorySendChannel[bytes]] = {}
        self.client = f"conn-{n}"
        self.closed = False
        # Slow clients (the timeouts below): the hello is due handshake_timeout after
        # connecting, however it trickles in; a message, once begun, is due idle_timeout
        # after its first bytes; a client with no job in flight may be silent for
        # idle_timeout; and one that reads nothing for idle_timeout is gone.
        self._opened = trio.current_time()
        self._message_started: float | None = None
        self._receiving: trio.CancelScope | None = None

    async def send(self, ev: proto.Event) -> None:
        """Send one event; a client that takes in none of it for ``idle_timeout`` is dropped.

        Cancellation: the bytes may be half sent; the connection is then unusable,
        and the caller is on its way out anyway.
        """
        async with self.send_lock:
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
                with trio.move_on_after(self.server.cfg.idle_timeout or float("inf")) as late:
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

    def _receive_deadline(self) -> float:
        cfg = self.server.cfg
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
                for rec in self.jobs.values():
                    rec.cancel_reason = "client disconnected"
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
                if self.conn.buffered > BUDGET_EXEMPT and self.server.over_budget():
                    event("over_budget", logging.WARNING, conn=self.n,
                          buffered=self.conn.buffered, budget=self.server.buffer_budget)
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
        server = self.server
        if isinstance(ev, proto.Hello):
            if self.tcp and not (ev.token and hmac.compare_digest(
                    ev.token.encode(), server.cfg.token.encode())):
                await self.send(proto.ErrorReport(code="unauthorized",
                                                  message="a valid token is required over TCP"))
                self.closed = True
                return
            self.client = ev.client or self.client
            await self.send(proto.Welcome(server=f"sandboxd/{__version__}",
                                          limits=server.limits,
                                          profiles=server.profile_infos()))
        elif isinstance(ev, proto.JobSubmission):
            await self._submit(ev, nursery)
        elif isinstance(ev, proto.StdinChunk):
            chan = self.stdin.get(ev.id)
            if chan is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await chan.send(ev.data)
        elif isinstance(ev, proto.EndOfStdin):
            chan = self.stdin.pop(ev.id, None)
            if chan is not None:
                await chan.aclose()
        elif isinstance(ev, proto.Cancellation):
            rec = self.jobs.get(ev.id)
            if rec is not None:
                rec.cancel_reason = "cancelled by the client"
                rec.scope.cancel()
        elif isinstance(ev, proto.JobListRequest):
            await self.send(server.job_list())
        elif isinstance(ev, proto.KillRequest):
            await self.send(proto.KillResult(job=ev.job, found=server.kill(ev.job)))
        elif isinstance(ev, proto.StatsRequest):
            await self.send(server.stats())
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
        server = self.server
        if server.draining:
            return await self._refuse(sub.id, "shutting_down", "the server is shutting down")
        if not server.sched.admit():
            server.sched.busy_refusals += 1
            return await self._refuse(sub.id, "server_busy",
                                      f"the queue is full ({server.cfg.queue_length} jobs "
                                      "waiting); retry later")
        profile = server.profiles.get(sub.profile)
        if profile is None:
            return await self._refuse(sub.id, "unknown_profile",
                                      f"no profile {sub.profile!r} (known: "
                                      f"{', '.join(sorted(server.profiles))})")
        if profile.unavailable:
            return await self._refuse(sub.id, "unknown_profile",
                                      f"profile {profile.name!r} is unavailable here: "
                                      f"{profile.unavailable}")
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

        spec = JobSpec(
            profile=profile, files=dict(sub.files), stdin=sub.stdin,
            argv=list(sub.argv) if sub.argv else None, env=dict(sub.env or {}),
            limits=sub.limits,
            compile_argv=list(sub.compile.argv) if sub.compile and sub.compile.argv else None,
            compile_limits=sub.compile.limits if sub.compile else None,
            tests=[TestSpec(stdin=t.stdin, expected_output=t.expected_output,
                            limits=t.limits, repeat=t.repeat)
                   for t in sub.tests] if sub.tests is not None else None,
            expected_output=sub.expected_output, compare=sub.compare,
            float_tolerance=sub.float_tolerance, stop_on_failure=sub.stop_on_failure,
            cpuset_pin=bool(sub.cpuset_pin), on_output=on_output if sub.stream else None,
            on_compile_output=on_compile_output if sub.stream else None,
            stdin_stream=stdin_stream)
        try:
            jobs.validate(spec)
        except JobError as e:
            return await self._refuse(sub.id, "limit_exceeded", str(e))
        rec = JobRecord(ref=f"{self.n}/{sub.id}", id=sub.id, profile=profile.name,
                        client=self.client)
        server.sched.jobs[rec.ref] = rec
        self.jobs[sub.id] = rec
        server.pool.ensure(default_spec(profile))
        await self.send(proto.JobAcceptance(id=sub.id))
        nursery.start_soon(self._run_job, spec, rec)

    async def _run_job(self, spec: JobSpec, rec: JobRecord) -> None:
        server = self.server
        outcome: JobOutcome | None = None
        error: tuple[str, str] | None = None
        try:
            with rec.scope:
                outcome = await jobs.run_job(spec, server.sched.runner(rec))
        except JobError as e:
            error = ("invalid_job", str(e))
        except Exception as e:  # our bug: the job gets a typed error, the daemon lives on
            event("job_crashed", logging.ERROR, job=rec.ref, error=repr(e))
            error = ("internal_error", f"{type(e).__name__}: {e}")
        except BaseException:
            rec.release(server.pool)
            raise
        finally:
            server.sched.jobs.pop(rec.ref, None)
            self.jobs.pop(rec.id, None)
            self._job_ended()
            chan = self.stdin.pop(rec.id, None)
            if chan is not None:
                chan.close()
        try:
            await self._answer(rec, outcome, error)
        finally:
            rec.release(server.pool)

    async def _answer(self, rec: JobRecord, outcome: JobOutcome | None,
                      error: tuple[str, str] | None) -> None:
        server = self.server
        if error is not None:
            await self._refuse(rec.id, *error)
            return
        if outcome is None:  # cancelled
            steps: tuple[proto.StepResult, ...] = (
                _cancelled_result(rec.cancel_reason or "cancelled"),)
            compile_result = None
        else:
            steps = tuple(_step_result(o) for o in outcome.steps)
            compile_result = _step_result(outcome.compile) if outcome.compile else None
        for s in steps:
            server.sched.verdicts[s.verdict] += 1
        if compile_result is not None and compile_result.verdict != "ok":
            server.sched.verdicts[compile_result.verdict] += 1
        server.sched.completed += 1
        first = compile_result if compile_result and not steps else (steps[0] if steps else None)
        event("job", job=rec.ref, client=rec.client, profile=rec.profile,
              verdict=first.verdict if first else "?", steps=len(steps),
              cpu=sum(s.cpu_time for s in steps), wall=sum(s.wall_time for s in steps),
              memory=max((s.memory_peak for s in steps), default=0),
              queue_wait=rec.queue_wait)
        if not self.closed:
            steps, compile_result = _fit(steps, compile_result, server.limits.max_frame_size)
            with trio.CancelScope(shield=True):
                await self.send(proto.JobResult(id=rec.id, compile=compile_result, steps=steps))


# ---------------------------------------------------------------- listening


def _bind_unix(path: str, mode: int, group: str) -> socket.socket:
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ECONNREFUSED):
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of a crashed run
    else:
        raise SandboxError(f"another daemon is already listening on {path}")
    finally:
        probe.close()
    sock.bind(path)
    os.chmod(path, mode)
    if group:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    sock.listen(512)
    return sock


async def serve(cfg: Config, zproc: zygote.ZygoteProcess, backend: CgroupBackend,
                profiles: dict[str, Profile], versions: dict[str, str] | None = None, *,
                task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until SIGTERM (drain, then stop) or cancellation.

    Cancellation: every job is cancelled (its containers killed and removed),
    the pool is emptied, the zygote stopped and the socket file removed.
    """
    zclient = zygote.ZygoteClient(zproc)
    pool = Pool(zclient, backend, cfg.pool_size)
    server = Server(cfg, profiles, pool, backend, versions)
    unix_sock = _bind_unix(cfg.socket, cfg.socket_mode, cfg.socket_group)
    try:
        async with trio.open_nursery() as nursery:
            warm = [default_spec(profiles[name]) for name in cfg.pool_profiles
                    if name in profiles and not profiles[name].unavailable]
            await nursery.start(pool.run, warm)
            async with trio.open_nursery() as connections:
                accepting = trio.CancelScope()
                listeners: list[trio.abc.Listener[Any]] = [
                    trio.SocketListener(trio.socket.from_stdlib_socket(unix_sock))]
                if cfg.tcp:
                    host, _, port = cfg.tcp.rpartition(":")
                    tcp_listeners = await trio.open_tcp_listeners(int(port), host=host)
                else:
                    tcp_listeners = []

                async def handle_tcp(stream: trio.abc.Stream) -> None:
                    await server.handle(stream, tcp=True)

                async def accept() -> None:
                    with accepting:
                        async with trio.open_nursery() as acceptors:
                            acceptors.start_soon(partial(
                                trio.serve_listeners, server.handle, listeners,
                                handler_nursery=connections))
                            if tcp_listeners:
                                acceptors.start_soon(partial(
                                    trio.serve_listeners, handle_tcp, tcp_listeners,
                                    handler_nursery=connections))

                connections.start_soon(accept)
                event("ready", socket=cfg.socket, tcp=cfg.tcp or "off",
                      concurrency=cfg.concurrency, pool_size=cfg.pool_size,
                      cgroup_version=backend.version, profiles=len(profiles))
                task_status.started(server)
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        event("draining", signal=signal.Signals(signum).name,
                              running=len(server.sched.jobs), grace=cfg.grace_period)
                        server.draining = True
                        accepting.cancel()  # no new connections; open ones may finish
                        with trio.move_on_after(cfg.grace_period):
                            while server.sched.jobs:
                                await trio.sleep(0.02)
                        break
                connections.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await zclient.aclose()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cfg.socket)
        event("stopped")


def main(config_path: str | None = None, socket_path: str | None = None) -> int:
    try:
        cfg = load(config_path, socket=socket_path)
    except ConfigError as e:
        sys.stderr.write(f"sandboxd: {e}\n")
        return 2
    setup_logging(cfg.log_level)
    try:
        profiles = load_dir(cfg.profiles_dir or None)
    except ProfileError as e:
        sys.stderr.write(f"sandboxd: {e}\n")
        return 2
    os.makedirs(cfg.state_dir, mode=0o755, exist_ok=True)
    try:
        backend = cgroups.open_backend(cfg.instance)
    except Exception as e:
        sys.stderr.write(f"sandboxd: cannot set up cgroups: {e}\n"
                         "Run `sandboxd check-environment` for what is missing.\n")
        return 1
    try:
        for problem in backend.problems():
            event("environment", logging.WARNING, problem=problem)
        stale = backend.remove_stale()
        if stale:
            event("removed_stale", cgroups=len(stale))
        policies = tuple(sorted({p.seccomp for p in profiles.values()} | {"default"}))
        # Each runtime's version, once (a subprocess each, ~0.15 s in all, java the
        # slowest): here, before trio and before the zygote, never per welcome.
        versions = {name: p.version() for name, p in profiles.items()}
        zproc = zygote.start(policies)
        try:
            trio.run(serve, cfg, zproc, backend, profiles, versions)
        except SandboxError as e:
            sys.stderr.write(f"sandboxd: {e.reason}\n")
            return 1
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(zproc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(zproc.pid, 0)
    finally:
        backend.close()
    return 0
