"""A job service that runs nothing: every job goes to a cluster (``sandboxd gateway``).

Strategy: the HTTP front door (``sandboxd.front.http``: /v1, Judge0, Piston)
calls a job service; ``sandboxd gateway`` (``sandboxd/gateway.py``) gives it
``ClusterService``, an object with the service's shape (``submit``,
``execute``, ``release``, ``profiles``, ``ps``, ``kill``, ``statistics``...)
that runs nothing: ``execute`` puts the job on the cluster's queue and waits
for its answer, as a ``redis://`` client does, with the same keys, scripts
and records (``sandboxd_protocol.cluster``; the daemon's package never
imports the client library, so the few Redis calls are made here again). So
N gateways and M nodes scale apart, and a job through a gateway is the job a
local daemon would run (the same JobSpec, mapped back to the same wire
record, ``_wire``). Not a front door itself: it imports none.

What a gateway knows of the cluster comes from the nodes' announcements,
read every second: which profiles some node can run (and their versions),
``ps`` (every node's jobs), ``stats`` (summed, with the queue's length and
age). ``kill`` cancels a cluster job by its ``ps`` reference. Interactive
stdin goes on the job's stdin stream as its client sends it, as the client's does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import coredis
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError

import sandboxd_protocol as proto
from sandboxd import jobs
from sandboxd.config import Config
from sandboxd.jobs import JobError, JobOutcome, JobSpec, StepOutcome
from sandboxd.log import event
from sandboxd.profiles import Profile
from sandboxd.result import Result
from sandboxd.service import Job, ServiceError
from sandboxd.service._metrics import JobMetrics
from sandboxd.service._service import JobInfo, PoolInfo, Statistics
from sandboxd_protocol import cluster

from ._wire import job_outcome, job_submission

_REFRESH = 1.0  # seconds between reads of the nodes' announcements
_TTL = 24 * 3600  # of a cancel key and a stdin stream
_SUBMIT_RETRY_FOR = 15.0  # s: how long a submit waits for Redis to come back
DEFAULT_MAX_QUEUE = 10_000  # jobs waiting or running in the cluster: past it, busy


def redacted(url: str) -> str:
    """``url`` without its password, for the log and messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


@dataclass
class _Capacity:
    """What the Judge0 API reads of a scheduler: the cluster's, not a local one."""

    queue_length: int
    concurrency: int = 0


class _Link:
    """This gateway's Redis side: queue, reply stream, cancels, stdin, the nodes.

    Each job waits on a channel of its own (``waiters``, by its wire id): one
    task reads the reply stream and hands each entry to its job.
    """

    def __init__(self, url: str, max_queue: int) -> None:
        self.url = url
        self.max_queue = max_queue
        self.submitter = uuid.uuid4().hex
        self.reply = cluster.reply_key(self.submitter)
        self.waiters: dict[str, trio.MemorySendChannel[Any]] = {}
        self.streaming: dict[str, bool] = {}
        self._attempt: dict[str, int] = {}
        self.r: Any = None
        self._submit_script: Any = None

    def _hand(self, job_id: str, ev: Any) -> None:
        out = self.waiters.get(job_id)
        if out is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                out.send_nowait(ev)  # unbounded: the reader never waits on one job

    async def submit(self, sub: proto.JobSubmission) -> proto.ErrorReport | None:
        """Queue ``sub`` (its id is the wire id); a refusal as an error report.

        A submit cut by a lost connection (Redis restarting) may or may not have
        queued the job: it is sent again, under the same id, while Redis comes back
        (up to ``_SUBMIT_RETRY_FOR`` s), as the cluster client does. Refused instead, a
        job Redis had queued all the same would run for nobody; sent twice, it runs at
        least once and is answered once (docs/cluster.md, "Delivery guarantees").
        """
        record = cluster.pack(sub)
        delay = 0.05
        deadline = trio.current_time() + _SUBMIT_RETRY_FOR
        while True:
            try:
                queued, n = await self._submit_script(
                    keys=[cluster.JOBS], args=[self.max_queue, record, self.submitter])
                break
            except (RedisConnectionError, TimeoutError) as e:
                if trio.current_time() < deadline:
                    await trio.sleep(delay)
                    delay = min(1.0, delay * 2)
                    continue
                error: Exception = e
            except Exception as e:
                error = e
            return proto.ErrorReport(code="internal_error", id=sub.id, message=(
                f"cannot queue the job in Redis at {redacted(self.url)}: {error}"))
        if not queued:
            return proto.ErrorReport(code="server_busy", id=sub.id, message=(
                f"the cluster's queue holds {n} jobs (max_queue={self.max_queue})"))
        return None

    async def read_replies(self) -> None:
        """Read the reply stream for ever (Redis may come and go), trimming now and then."""
        last: bytes | str = "0-0"
        unread = 0
        delay = 0.05
        while True:
            try:
                got = await self.r.xread(streams={self.reply: last}, count=256, block=10_000)
                delay = 0.05
            except Exception:
                await trio.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            entries = (got or {}).get(self.reply.encode(), ())
            for entry in entries:
                last = entry.identifier
                await self._reply(entry.field_values)
            unread += len(entries)
            if unread >= 64:
                with contextlib.suppress(Exception):
                    await self.r.xtrim(self.reply, coredis.PureToken.MINID, last)
                    unread = 0

    async def _reply(self, fields: Any) -> None:
        job_id = (fields.get(b"job") or b"").decode("ascii", "replace")
        if job_id not in self.waiters:
            return  # ended already (a rerun's output), or not ours
        if b"done" in fields:
            data = fields.get(b"answer")
            for _ in range(0 if data is not None else 50):  # a big answer: only stored
                try:
                    data = await self.r.get(cluster.result_key(job_id))
                    break
                except Exception:
                    await trio.sleep(0.1)
            try:
                answer = cluster.unpack(data) if data is not None else None
            except proto.RemoteProtocolError as e:
                answer = proto.ErrorReport(code="internal_error", id=job_id,
                                           message=f"a node stored an unreadable answer: {e}")
            if not isinstance(answer, (proto.JobResult, proto.ErrorReport)):
                answer = proto.ErrorReport(code="internal_error", id=job_id,
                                           message="the job's answer is gone from Redis")
            self._attempt.pop(job_id, None)
            self._hand(job_id, answer)
        elif self.streaming.get(job_id) and b"chunk" in fields:
            attempt = int(fields.get(b"attempt") or 1)
            if attempt < self._attempt.get(job_id, 0):
                return  # a node that was given up on, still writing
            self._attempt[job_id] = attempt
            with contextlib.suppress(proto.RemoteProtocolError):
                chunk = cluster.unpack(fields[b"chunk"])
                if isinstance(chunk, proto.OutputChunk):
                    self._hand(job_id, chunk)

    async def cancel(self, job_ids: list[str]) -> None:
        """The cancel key and a notice on the cancel stream (the client's way)."""
        async with self.r.pipeline(transaction=False) as p:
            for job_id in job_ids:
                p.set(cluster.cancel_key(job_id), b"1", ex=_TTL)
                p.xadd(cluster.CANCELS, {"job": job_id},
                       trim_strategy=coredis.PureToken.MAXLEN,
                       threshold=cluster.CANCELS_MAXLEN,
                       trim_operator=coredis.PureToken.APPROXIMATELY)

    async def stdin(self, job_id: str, data: bytes | None) -> None:
        key = cluster.stdin_key(job_id)
        async with self.r.pipeline(transaction=False) as p:
            p.xadd(key, {"data": data} if data is not None else {"eof": "1"})
            p.expire(key, _TTL)

    async def nodes(self) -> list[dict[str, Any]]:
        names = sorted(n.decode() for n in await self.r.smembers(cluster.NODES))
        if not names:
            return []
        records = await self.r.mget([cluster.node_key(n) for n in names])
        out = []
        for name, rec in zip(names, records, strict=True):
            node = cluster.node_record(rec)
            if node is None:
                with contextlib.suppress(Exception):
                    await self.r.srem(cluster.NODES, [name])  # gone: its record expired
                continue
            out.append(node)
        return out

    async def stats(self, nodes: list[dict[str, Any]]) -> proto.ServerStats:
        async with self.r.pipeline(transaction=False) as p:
            queue_q = p.xlen(cluster.JOBS)
            oldest_q = p.xrange(cluster.JOBS, start="-", end="+", count=1)
        queue, oldest = await queue_q, await oldest_q
        now = time.time()
        age = max(0.0, now - int(oldest[0].identifier.split(b"-")[0]) / 1000) if oldest else 0.0
        return cluster.cluster_stats(nodes, queue, age, now)

    async def abandon(self) -> None:
        """Stopping: our unanswered jobs are cancelled (as a daemon's would be), our reply
        stream deleted."""
        if self.waiters:
            with contextlib.suppress(Exception):
                await self.cancel(list(self.waiters))
        with contextlib.suppress(Exception):
            await self.r.delete([self.reply])


#: Seconds a gateway waits for Redis to answer its first PING before it exits.
FIRST_CONTACT = 10.0


class ClusterService:
    """A job service that forwards every job to the cluster (see the module's docstring)."""

    def __init__(self, cfg: Config, profiles: dict[str, Profile]) -> None:
        self.cfg = cfg
        self._local = profiles  # the definitions; which can run is what the nodes say
        self.profiles: dict[str, Profile] = dict(profiles)
        self.versions: dict[str, str] = {}
        self.draining = False
        self.started = time.monotonic()
        self.metrics = JobMetrics()
        self.sched = _Capacity(queue_length=DEFAULT_MAX_QUEUE)
        self.link = _Link(cfg.redis, self.sched.queue_length)
        self.jobs: dict[str, Job] = {}  # this gateway's jobs in flight, by ref
        self.completed = 0
        self.verdicts: Counter[str] = Counter()
        self._stats = proto.ServerStats(uptime=0.0, connections=0, jobs_queued=0,
                                        jobs_running=0, jobs_completed=0)
        self._node_jobs: list[proto.JobInfo] = []
        self._wire: dict[str, str] = {}  # a job's ref -> its id on the wire
        self._nursery: trio.Nursery | None = None

    # -- running ----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Talk to Redis until cancelled: the reply stream, the nodes' announcements.

        Raises ``OSError``/``RedisError`` if Redis does not answer at the start
        (the gateway then exits with that error); later outages are retried. The
        first contact has a deadline: an address where something accepts the
        connection and never answers (a server that is not Redis, a stopped one)
        would otherwise hold the gateway for ever, as no command has a timeout
        (the replies' blocked read must not have one).
        """
        link = self.link
        async with coredis.Redis.from_url(self.cfg.redis, stream_timeout=None,
                                          connect_timeout=FIRST_CONTACT) as r:
            link.r = r
            link._submit_script = r.register_script(cluster.SUBMIT_SCRIPT)
            with trio.move_on_after(FIRST_CONTACT) as contact:
                await r.ping()
            if contact.cancelled_caught:
                raise RedisConnectionError(
                    f"no answer to PING within {FIRST_CONTACT:g} s: is it a Redis server?")
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(link.read_replies)
                    await self._refresh()
                    nursery.start_soon(self._watch)
                    event("gateway_cluster", redis=redacted(self.cfg.redis),
                          nodes=int(self._stats.counters.get("cluster_nodes", 0)))
                    task_status.started()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await link.abandon()

    async def _watch(self) -> None:
        while True:
            await trio.sleep(_REFRESH)
            try:
                await self._refresh()
            except Exception as e:  # Redis away: the last view stays; jobs wait meanwhile
                event("redis_unreachable", logging.WARNING, loop="gateway",
                      error=str(e) or type(e).__name__)

    async def _refresh(self) -> None:
        """The nodes' announcements: profiles, versions, jobs, stats."""
        nodes = await self.link.nodes()
        self._stats = await self.link.stats(nodes)
        infos: dict[str, proto.ProfileInfo] = {}
        jobs_: list[proto.JobInfo] = []
        capacity = 0
        for n in nodes:
            capacity += int(n.get("capacity", 0))
            welcome = cluster.node_part(n, "welcome", proto.Welcome)
            for p in welcome.profiles if welcome is not None else ():
                if p.name not in infos or (p.available is not False
                                           and infos[p.name].available is False):
                    infos[p.name] = p  # available on some node wins
            listed = cluster.node_part(n, "jobs", proto.JobList)
            jobs_.extend(listed.jobs if listed is not None else ())
        self._node_jobs = jobs_
        running = {j.id.rsplit("/", 1)[-1] for j in jobs_ if j.state == "running"}
        for ref, wire_id in self._wire.items():  # ours that a node runs now
            job = self.jobs.get(ref)
            if job is not None and wire_id in running:
                job.state = "running"
        self.sched.concurrency = capacity
        if infos:  # no node yet: every profile stays on offer, its jobs wait in the queue
            profiles = {}
            for name, p in self._local.items():
                info = infos.get(name)
                why = ("no node of the cluster offers it" if info is None else
                       None if info.available is not False else
                       info.unavailable_reason or "unavailable on every node")
                profiles[name] = dataclasses.replace(p, unavailable=why)
            self.profiles = profiles
            self.versions = {k: v.version for k, v in infos.items() if v.version}

    # -- the service's shape ----------------------------------------------

    def profile(self, name: str) -> Profile:
        """The profile ``name`` if some node runs it; else ``ServiceError(unknown_profile)``."""
        profile = self.profiles.get(name)
        if profile is None:
            raise ServiceError("unknown_profile", f"no profile {name!r} (known: "
                               f"{', '.join(sorted(self.profiles))})")
        if profile.unavailable:
            raise ServiceError("unknown_profile", f"profile {profile.name!r} is unavailable: "
                               f"{profile.unavailable}")
        return profile

    def submit(self, spec: JobSpec, *, id: str, owner: str, client: str) -> Job:
        """Admit ``spec`` here (the checks a daemon makes before queueing); it is queued in
        the cluster by ``execute``, where a full queue is ``server_busy``."""
        if self.draining:
            raise ServiceError("shutting_down", "the gateway is shutting down")
        if spec.profile.unavailable:
            raise ServiceError("unknown_profile", f"profile {spec.profile.name!r} is "
                               f"unavailable: {spec.profile.unavailable}")
        try:
            jobs.validate(spec)
        except JobError as e:
            raise ServiceError("limit_exceeded", str(e)) from None
        ref = f"{owner}/{id}"
        if ref in self.jobs:
            raise ServiceError("duplicate_job", f"job {id!r} is already in flight")
        job = Job(ref=ref, id=id, profile=spec.profile.name, client=client, spec=spec)
        self.jobs[ref] = job
        return job

    async def execute(self, job: Job) -> JobOutcome:
        """Queue the job in the cluster and wait for its answer, streaming its output to the
        spec's callbacks. ``job.cancel`` (or the caller's cancellation) cancels it in the
        cluster too; the caller gets ``cancelled`` at once, as from a daemon."""
        spec = job.spec
        wire_id = uuid.uuid4().hex
        send, receive = trio.open_memory_channel[Any](math.inf)
        link = self.link
        link.waiters[wire_id] = send
        link.streaming[wire_id] = bool(spec.on_output or spec.on_compile_output)
        answer: Any = None  # a refusal, the answer, or None: cancelled (maybe queued)
        self._wire[job.ref] = wire_id
        try:
            with job.scope:
                answer = await link.submit(job_submission(
                    wire_id, spec, stream=link.streaming[wire_id]))
                if answer is None:  # queued
                    answer = await self._follow(job, wire_id, receive)
        finally:
            link.waiters.pop(wire_id, None)
            link.streaming.pop(wire_id, None)
            self._wire.pop(job.ref, None)
            if answer is None:  # cancelled: in the cluster too (harmless if never queued)
                with trio.CancelScope(shield=True), trio.move_on_after(2), \
                        contextlib.suppress(Exception):
                    await link.cancel([wire_id])
        if isinstance(answer, proto.ErrorReport):
            raise ServiceError(answer.code, answer.message)
        if isinstance(answer, proto.JobResult):
            outcome = job_outcome(answer)
        else:
            outcome = JobOutcome(None, [StepOutcome(Result.without_run(
                "cancelled", job.cancel_reason or "cancelled"))])
        self._account(job, outcome)
        return outcome

    async def _follow(self, job: Job, wire_id: str, receive: Any) -> Any:
        """The queued job's output to its callbacks (its stdin from its stream to the
        cluster meanwhile), until its answer, which is returned."""
        spec = job.spec
        async with trio.open_nursery() as pump:
            if spec.stdin_stream is not None:
                pump.start_soon(self._pump_stdin, spec.stdin_stream, wire_id)
            async for ev in receive:
                if isinstance(ev, proto.OutputChunk):
                    job.state = "running"
                    if ev.compile and spec.on_compile_output is not None:
                        await spec.on_compile_output(ev.stream, ev.data)
                    elif not ev.compile and spec.on_output is not None:
                        await spec.on_output(ev.step, ev.stream, ev.data)
                else:
                    pump.cancel_scope.cancel()
                    return ev
        return None

    async def _pump_stdin(self, stdin: Any, wire_id: str) -> None:
        """An interactive job's stdin, as its client sends it, onto its stdin stream."""
        async for data in stdin:
            await self.link.stdin(wire_id, data)
        await self.link.stdin(wire_id, None)

    def release(self, job: Job) -> None:
        self.jobs.pop(job.ref, None)

    def _account(self, job: Job, outcome: JobOutcome) -> None:
        self.completed += 1
        steps = [s.result for s in outcome.steps]
        for r in steps:
            self.verdicts[r.verdict] += 1
        elapsed = time.monotonic() - job.submitted
        self.metrics.record(job.profile, outcome, 0.0, elapsed)
        first = steps[0] if steps else (outcome.compile.result if outcome.compile else None)
        event("job", job=job.ref, client=job.client, profile=job.profile,
              verdict=first.verdict if first else "?", steps=len(steps), via="cluster",
              wall=round(elapsed, 6))

    def ps(self) -> list[JobInfo]:
        """Every node's jobs (as of the last announcement), as ``<node>/cluster/<id>``."""
        return [JobInfo(ref=j.id, id=j.id, profile=j.profile, client=j.client, state=j.state,
                        elapsed=j.elapsed, cpu_time=j.cpu_time, memory=j.memory)
                for j in self._node_jobs]

    def kill(self, ref: str) -> bool:
        """Cancel the cluster job ``ref`` (from ``ps``) wherever it runs."""
        job_id = cluster.kill_target(ref)
        if job_id is None or not any(j.id == ref for j in self._node_jobs):
            return False
        assert self._nursery is not None  # one of ours: its node answers it `cancelled`
        self._nursery.start_soon(self.link.cancel, [job_id])
        return True

    @property
    def in_flight(self) -> int:
        return len(self.jobs)

    def statistics(self) -> Statistics:
        """The cluster's figures (the nodes' summed, the queue's), as of the last read, and
        this gateway's own jobs."""
        st = self._stats
        counters: dict[str, int | float] = dict(st.counters)
        counters.update(gateway_jobs_in_flight=len(self.jobs),
                        gateway_jobs_completed=self.completed,
                        **{f"gateway_verdict_{k}": v for k, v in self.verdicts.items()})
        return Statistics(uptime=time.monotonic() - self.started, jobs_queued=st.jobs_queued
                          + int(st.counters.get("cluster_queue_length", 0)),
                          jobs_running=st.jobs_running, jobs_completed=st.jobs_completed,
                          pools=tuple(PoolInfo(profile=p.profile, warm=p.warm, target=p.target)
                                      for p in st.pools),
                          counters=counters)

    async def drain(self, grace: float) -> None:
        """Refuse new jobs; wait up to ``grace`` seconds for those in flight to be answered."""
        self.draining = True
        with trio.move_on_after(grace):
            while self.jobs:
                await trio.sleep(0.02)
