"""``sandboxd gateway``: the HTTP front door with no local execution, over a cluster.

Strategy: the HTTP front door (``sandboxd.front.http``: /v1, Judge0, Piston)
calls a job service; here it gets ``ClusterService``, an object with the
service's shape (``submit``, ``execute``, ``release``, ``profiles``, ``ps``,
``kill``, ``statistics``...) that runs nothing: ``execute`` puts the job on
the cluster's queue and waits for its answer, exactly as a ``redis://``
client does. It reuses that client's Redis side (``RedisBridge``: the queue
script, the reply stream, cancels, the nodes' announcements) with its answers
routed to the waiting jobs instead of a socket. So N gateways and M nodes
scale apart, and a job through a gateway is the job a local daemon would run
(the same JobSpec, mapped back to the same wire record, ``_wire``).

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
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import coredis
import trio
from coredis.exceptions import RedisError

import sandboxd_protocol as proto
from sandboxd import __version__, jobs
from sandboxd.config import Config, ConfigError, load
from sandboxd.jobs import JobError, JobOutcome, JobSpec, StepOutcome
from sandboxd.log import event, setup_logging
from sandboxd.profiles import Profile, ProfileError, load_dir
from sandboxd.result import Result
from sandboxd.service import Job, JobService, ServiceError
from sandboxd.service._metrics import JobMetrics
from sandboxd.service._service import JobInfo, PoolInfo, Statistics
from sandboxd_client._cluster import DEFAULT_MAX_QUEUE, RedisBridge, redacted
from sandboxd_protocol import cluster

from ._wire import job_outcome, job_submission

_REFRESH = 1.0  # seconds between reads of the nodes' announcements


@dataclass
class _Capacity:
    """What the Judge0 API reads of a scheduler: the cluster's, not a local one."""

    queue_length: int
    concurrency: int = 0


class _Bridge(RedisBridge):
    """The client's Redis side, its answers handed to the waiting jobs (``waiters``)."""

    def __init__(self, url: str, max_queue: int) -> None:
        super().__init__(url, max_queue=max_queue)
        self.waiters: dict[str, trio.MemorySendChannel[Any]] = {}

    async def _send(self, ev: Any) -> None:
        out = self.waiters.get(getattr(ev, "id", ""))
        if out is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                out.send_nowait(ev)  # unbounded: the reader never waits on one job


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
        self.bridge = _Bridge(cfg.redis, self.sched.queue_length)
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
        (the gateway then exits with that error); later outages are retried.
        """
        b = self.bridge
        async with coredis.Redis.from_url(self.cfg.redis, stream_timeout=None) as r:
            b.r = r
            b._submit_script = r.register_script(cluster.SUBMIT_SCRIPT)
            await r.ping()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(b._read_replies)
                    await self._refresh()
                    nursery.start_soon(self._watch)
                    event("gateway_cluster", redis=redacted(self.cfg.redis),
                          nodes=int(self._stats.counters.get("cluster_nodes", 0)))
                    task_status.started()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await b._abandon()  # our unfinished jobs are cancelled, as a daemon's

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
        nodes = await self.bridge._nodes()
        self._stats = await self.bridge._stats()
        infos: dict[str, proto.ProfileInfo] = {}
        jobs_: list[proto.JobInfo] = []
        capacity = 0
        for n in nodes:
            capacity += int(n.get("capacity", 0))
            welcome = _unpack(n.get("welcome"), proto.Welcome)
            for p in welcome.profiles if welcome is not None else ():
                if p.name not in infos or (p.available is not False
                                           and infos[p.name].available is False):
                    infos[p.name] = p  # available on some node wins
            listed = _unpack(n.get("jobs"), proto.JobList)
            jobs_.extend(listed.jobs if listed is not None else ())
        self._node_jobs = jobs_
        running = {j.id.rsplit("/", 1)[-1] for j in jobs_ if j.state == "running"}
        for ref, wire_id in self._wire.items():  # ours that a node runs now
            job = self.jobs.get(ref)
            if job is not None and self.bridge.ids.get(wire_id) in running:
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
        b = self.bridge
        b.waiters[wire_id] = send
        answer: Any = None
        self._wire[job.ref] = wire_id
        try:
            with job.scope:
                await b._submit(job_submission(
                    wire_id, spec, stream=bool(spec.on_output or spec.on_compile_output)))
                async with trio.open_nursery() as pump:
                    if spec.stdin_stream is not None:
                        pump.start_soon(self._pump_stdin, spec.stdin_stream, wire_id)
                    async for ev in receive:
                        if isinstance(ev, proto.JobAcceptance):
                            continue
                        if isinstance(ev, proto.OutputChunk):
                            job.state = "running"
                            if ev.compile and spec.on_compile_output is not None:
                                await spec.on_compile_output(ev.stream, ev.data)
                            elif not ev.compile and spec.on_output is not None:
                                await spec.on_output(ev.step, ev.stream, ev.data)
                        else:
                            answer = ev
                            break
                    pump.cancel_scope.cancel()
        finally:
            b.waiters.pop(wire_id, None)
            self._wire.pop(job.ref, None)
            cid = b.ids.get(wire_id)
            if answer is None and cid is not None:  # cancelled: in the cluster too
                b.jobs.pop(cid, None)
                b.ids.pop(wire_id, None)
                with trio.CancelScope(shield=True), trio.move_on_after(2), \
                        contextlib.suppress(Exception):
                    await b._cancel([cid])
        if isinstance(answer, proto.ErrorReport):
            raise ServiceError(answer.code, answer.message)
        if isinstance(answer, proto.JobResult):
            outcome = job_outcome(answer)
        else:
            outcome = JobOutcome(None, [StepOutcome(Result.without_run(
                "cancelled", job.cancel_reason or "cancelled"))])
        self._account(job, outcome)
        return outcome

    async def _pump_stdin(self, stdin: Any, wire_id: str) -> None:
        """An interactive job's stdin, as its client sends it, onto its stdin stream."""
        cid = self.bridge.ids.get(wire_id)
        if cid is None:
            return  # refused, or answered already
        async for data in stdin:
            await self.bridge._stdin(cid, data)
        await self.bridge._stdin(cid, None)

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
        _node, _, rest = ref.partition("/")
        owner, _, cid = rest.partition("/")
        if owner != "cluster" or not cid or not any(j.id == ref for j in self._node_jobs):
            return False
        assert self._nursery is not None  # one of ours: its node answers it `cancelled`
        self._nursery.start_soon(self.bridge._cancel, [cid])
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


def _unpack(data: Any, kind: type) -> Any:
    if not isinstance(data, bytes):
        return None
    try:
        ev = cluster.unpack(data)
    except proto.RemoteProtocolError:
        return None
    return ev if isinstance(ev, kind) else None


# -- the command ----------------------------------------------------------


async def serve(cfg: Config, profiles: dict[str, Profile], *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve HTTP over the cluster until SIGTERM (drain, then stop) or cancellation."""
    from sandboxd.front.http import HttpFront, bind_http

    service = ClusterService(cfg, profiles)
    sock = bind_http(cfg.http, cfg.http_send_timeout)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        # Built once the nodes' announcements are read: Piston's API fixes its runtime
        # list (versions from the nodes) when it is built.
        front = HttpFront(cfg, cast(JobService, service))
        if not service.versions:
            event("gateway_no_nodes", logging.WARNING,
                  note="no node has announced itself yet: jobs wait in the queue; Piston's "
                       "runtimes list no versions until the gateway restarts")
        async with trio.open_nursery() as connections:
            address = await connections.start(front.serve, sock)
            event("ready", role="gateway", http=address, redis=redacted(cfg.redis),
                  version=__version__)
            task_status.started()
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    event("draining", signal=signal.Signals(signum).name,
                          running=service.in_flight, grace=cfg.grace_period)
                    front.stop()
                    await service.drain(cfg.grace_period)
                    with trio.move_on_after(2.0):
                        await front.stopped.wait()
                    break
            connections.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    event("stopped")


def main(config_path: str | None = None, http: str | None = None,
         redis: str | None = None) -> int:
    try:
        cfg = load(config_path, http=http, redis=redis)
    except ConfigError as e:
        sys.stderr.write(f"sandboxd gateway: {e}\n")
        return 2
    if not cfg.redis or not cfg.http:
        sys.stderr.write("sandboxd gateway: needs --redis URL and --http HOST:PORT (or "
                         "`redis` and `http` in the configuration)\n")
        return 2
    setup_logging(cfg.log_level)
    try:
        profiles = load_dir(cfg.profiles_dir or None)
    except ProfileError as e:
        sys.stderr.write(f"sandboxd gateway: {e}\n")
        return 2
    try:
        trio.run(serve, cfg, profiles)
    except (OSError, RedisError, BaseExceptionGroup) as e:
        leaf = _leaf(e)
        if not isinstance(leaf, (OSError, RedisError)):
            raise
        sys.stderr.write(f"sandboxd gateway: cannot reach Redis at {redacted(cfg.redis)}: "
                         f"{leaf}\n")
        return 1
    return 0


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
