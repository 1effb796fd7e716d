"""The Redis Streams front door: this daemon as one node of a cluster fed from one queue.

Strategy: submitters add jobs (packed ``JobSubmission`` records, see
``sandboxd_protocol.cluster``) to one stream; every node reads it in one
consumer group under its node id, taking only as many entries as it has free
slots (so load balances itself: a busy node takes nothing), and runs each
job through the ``JobService`` exactly as a local one. The answer is stored
once, with ``SET ... NX``, under the job's id (the id its submitter chose),
a ``done`` entry on the submitter's reply stream wakes it, and only
then is the entry acknowledged and deleted. So execution is at least once
and the answer exactly once: a job run again after a redelivery finds its
answer there, or loses the ``NX`` race, and never overwrites it.

A node that dies leaves its entries pending. A live node renews its own
pending entries while it runs them (``XCLAIM ... JUSTID`` resets their idle
time without counting a delivery), so an entry idle for ``redis_claim_idle``
belongs to a node that is gone: live nodes take it over with ``XAUTOCLAIM``
and run it again, unless it was delivered more than ``redis_max_deliveries``
times already (``XPENDING`` counts), in which case it ends as
``sandbox_error``: a job that kills every node that runs it must not loop.

Redis unreachable: local clients are served as ever; each loop here retries
with backoff and says so in the log; a finished job's answer waits for Redis
to come back (its entry stays pending meanwhile). docs/cluster.md has the
keys, the guarantees and the deployment.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import coredis
import msgpack  # type: ignore[import-untyped]
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import RedisError, ResponseError, StreamDuplicateConsumerGroupError

import sandboxd_protocol as proto
from sandboxd import __version__
from sandboxd.config import Config
from sandboxd.jobs import JobOutcome, StepOutcome
from sandboxd.log import event
from sandboxd.result import Result
from sandboxd.service import Job, JobService, ServiceError
from sandboxd_protocol import cluster

from ._resp import LeanRedis, open_lean
from ._wire import job_result, job_spec, profile_infos

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
_READ_DEFER = 0.01
"""While cluster jobs of this node run, and this node's jobs typically take no longer
than this (seconds), its next read of the job stream waits up to this long for one of
their answers, and goes in the same write: one wake-up of Redis for both instead of two
(docs/cluster.md, "Speed"). Only then: where jobs run 100 ms and more (a judge's), a
held read would add its whole wait to the next job's pickup and rarely meet an answer.
A 2 ms hold, tried for every workload, left 0.03-0.05 ms more Redis CPU per job."""
_TYPICAL_WEIGHT = 0.2
"""Weight of the newest job in the running mean of this node's jobs' durations."""


def node_id(cfg: Config) -> str:
    """This node's consumer name: ``node_id``, else ``<hostname>-<instance>``."""
    return cfg.node_id or f"{socket.gethostname()}-{cfg.instance}"


def redacted(url: str) -> str:
    """``url`` without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


@dataclass(eq=False)
class _Carried:
    """An answer (its script call) that the read loop sends with its next read."""

    command: tuple[Any, ...]
    done: trio.Event = field(default_factory=trio.Event)
    reply: Any = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Entry:
    """One stream entry this node holds: pending on it until acknowledged."""

    entry_id: bytes
    reply: str | None = None  # the submitter's reply stream
    job_id: str = ""
    job: Job | None = None
    started: float = field(default_factory=time.monotonic)


class RedisNode:
    """The queue consumer: read, run, answer once, acknowledge; claim what dead nodes left."""

    def __init__(self, cfg: Config, service: JobService) -> None:
        self.cfg = cfg
        self.service = service
        self.node = node_id(cfg)
        self.limits = proto.SizeLimits(max_frame_size=cfg.max_frame)
        self.ttl = max(1, round(cfg.redis_result_ttl))
        self.claim_idle_ms = max(1, round(cfg.redis_claim_idle * 1000))
        # Renew our own entries well within the claim time, so only a dead node's age.
        self.beat = max(0.1, min(2.0, cfg.redis_claim_idle / 4))
        self.entries: dict[bytes, _Entry] = {}  # running here: renewed while they run
        self.typical_run = 0.0  # running mean of the entries' durations, read to answer
        self.unanswered: set[bytes] = set()  # handed back to the queue if we stop
        self.slot_freed = trio.Event()
        self.done = 0
        self.claimed = 0
        self.r: Any = None
        # The cancel stream from its start (it is capped): every cancel still listed is
        # known here, so a fresh entry needs no look-up of its cancel key.
        self._cancel_last: bytes | str = "0-0"
        self._cancelled: dict[str, None] = {}  # recent cancels' job ids, oldest first
        self._early_cancels: set[str] = set()
        self._jobs: trio.Nursery | None = None
        # Answers waiting for the read loop's next write (``_carry``: it is not blocked in
        # Redis now, so it sends them soon, with its next read).
        self._carried: list[_Carried] = []
        self._carry = False
        self._batch: list[_Carried] = []  # answers for the answer connection's next write
        self._batch_sending = False

    # -- the loops --------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Consume the cluster's queue until cancelled; Redis may come and go meanwhile.

        Cancellation (the daemon stops): running jobs are cancelled by the
        service's owner; their entries are handed back to the queue at once
        (shielded, briefly), so no other node has to wait for the claim time.
        """
        r = coredis.Redis.from_url(self.cfg.redis, stream_timeout=None)
        # The job's path (the blocked read returning, the answer) on lean connections of
        # their own where the URL allows (sandboxd/front/_resp.py: why), else on coredis.
        self._lean_read = open_lean(self.cfg.redis)
        self._lean_answer = open_lean(self.cfg.redis)
        async with r:
            self.r = r
            self._answer_script = r.register_script(cluster.ANSWER_SCRIPT)
            try:
                async with trio.open_nursery() as jobs:
                    self._jobs = jobs
                    async with trio.open_nursery() as loops:
                        task_status.started()
                        event("cluster_node", node=self.node, redis=redacted(self.cfg.redis),
                              claim_idle=self.cfg.redis_claim_idle,
                              max_deliveries=self.cfg.redis_max_deliveries)
                        loops.start_soon(self._retrying, "read", self._read)
                        loops.start_soon(self._retrying, "claim", self._claim)
                        loops.start_soon(self._retrying, "heartbeat", self._heartbeat)
                        loops.start_soon(self._retrying, "cancels", self._cancels)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await self._hand_back()
                for lean in (self._lean_read, self._lean_answer):
                    if lean is not None:
                        await lean.aclose()

    async def _retrying(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop`` for ever; a Redis failure is logged and retried with backoff."""
        delay = _BACKOFF_FIRST
        while True:
            try:
                await loop()
            except (RedisError, OSError) as e:
                event("redis_unreachable", logging.WARNING, node=self.node, loop=name,
                      error=str(e) or type(e).__name__, retry_in=round(delay, 2))
                await trio.sleep(delay)
                delay = min(_BACKOFF_MAX, delay * 2)
            except Exception as e:  # our bug: local clients must not lose their daemon
                event("cluster_loop_crashed", logging.ERROR, node=self.node, loop=name,
                      error=repr(e), retry_in=round(delay, 2))
                await trio.sleep(delay)
                delay = min(_BACKOFF_MAX, delay * 2)
            else:
                delay = _BACKOFF_FIRST

    def free(self) -> int:
        """Slots no job holds, local or cluster: what this node may take now."""
        if self.service.draining:
            return 0
        # Entries read but not yet admitted by the service hold a slot too: without them a
        # node would read again before its first jobs reached the service, and take more
        # than it can run (they would wait here while another node sat idle).
        admitting = sum(1 for e in self.entries.values() if e.job is None)
        return max(0, self.cfg.concurrency - self.service.in_flight - admitting)

    async def _wait_for_room(self) -> int:
        while (n := self.free()) <= 0:
            self.slot_freed = trio.Event()
            with trio.move_on_after(0.1):  # local jobs end without telling us
                await self.slot_freed.wait()
        return n

    async def _read(self) -> None:
        r = self.r
        try:
            await r.xgroup_create(cluster.JOBS, cluster.GROUP, identifier="0", mkstream=True)
        except StreamDuplicateConsumerGroupError:
            pass
        if self._lean_read is not None:
            await self._read_lean(self._lean_read)
            return
        while True:
            n = await self._wait_for_room()
            got = await r.xreadgroup(cluster.GROUP, self.node, streams={cluster.JOBS: ">"},
                                     count=n, block=1000)
            for entry in (got or {}).get(cluster.JOBS.encode(), ()):
                self._start(entry.identifier, entry.field_values, 1)

    async def _read_lean(self, lean: LeanRedis) -> None:
        """The job stream's reads on the lean connection, each sent with the answers that
        are ready (``_Carried``): Redis reads them in one wake-up. While cluster jobs run
        here and they are short ones (``typical_run``), a read waits up to ``_READ_DEFER``
        for one of their answers to go with it; while a read is blocked in Redis, answers
        go on their own connection instead."""
        try:
            while True:
                self._carry = True
                if (self.entries and not self._carried
                        and self.typical_run <= _READ_DEFER):
                    self.slot_freed = trio.Event()
                    with trio.move_on_after(_READ_DEFER):
                        await self.slot_freed.wait()  # an answer carried, or a slot freed
                while (n := self.free()) <= 0 and not self._carried:
                    self.slot_freed = trio.Event()
                    with trio.move_on_after(0.1):  # local jobs end without telling us
                        await self.slot_freed.wait()
                carried, self._carried = self._carried, []
                commands = [c.command for c in carried]
                if n > 0:
                    commands.append(("XREADGROUP", "GROUP", cluster.GROUP, self.node,
                                     "COUNT", n, "BLOCK", 1000, "STREAMS", cluster.JOBS, ">"))
                    self._carry = False  # blocked in Redis: answers go on their own

                failed: list[ResponseError] = []

                def on_reply(i: int, reply: Any, carried: list[_Carried] = carried,
                             failed: list[ResponseError] = failed) -> None:
                    if i < len(carried):
                        carried[i].reply = reply
                        carried[i].done.set()
                    elif isinstance(reply, ResponseError):
                        failed.append(reply)  # NOGROUP (Redis lost its data...): retried
                    else:
                        for entry_id, fields in _read_entries(reply):
                            self._start(entry_id, fields, 1)

                try:
                    await lean.pipeline(commands, on_reply)
                finally:
                    for c in carried:  # not sent, or no reply: its task sends it again
                        if not c.done.is_set():
                            c.error = RedisConnectionError("the answer's write was cut off")
                            c.done.set()
                if failed:
                    raise failed[0]
        finally:
            self._carry = False
            carried, self._carried = self._carried, []
            for c in carried:
                c.error = RedisConnectionError("the read loop stopped")
                c.done.set()

    async def _claim(self) -> None:
        """Take over entries a dead node left (idle past the claim time)."""
        r = self.r
        while True:
            await trio.sleep(self.beat)
            n = self.free()
            if n <= 0:
                continue
            try:
                reply = await r.xautoclaim(cluster.JOBS, cluster.GROUP, self.node,
                                           min_idle_time=self.claim_idle_ms, start="0-0",
                                           count=n)
            except RedisError as e:
                if "NOGROUP" in str(e):
                    continue  # the reader creates it
                raise
            for entry in reply[1]:
                pending = await r.xpending(cluster.JOBS, cluster.GROUP, start=entry.identifier,
                                           end=entry.identifier, count=1)
                delivered = pending[0].delivered if pending else 1
                self.claimed += 1
                event("job_claimed", node=self.node, entry=entry.identifier.decode(),
                      delivered=delivered)
                self._start(entry.identifier, entry.field_values, delivered)

    async def _cancels(self) -> None:
        """Cancels as submitters send them (``XREAD BLOCK`` on the cancel stream), so a
        running job stops at once; the heartbeat's poll of cancel keys is the fallback for
        any missed while Redis was away."""
        while True:
            got = await self.r.xread(streams={cluster.CANCELS: self._cancel_last}, count=256,
                                     block=5000)
            for entry in (got or {}).get(cluster.CANCELS.encode(), ()):
                self._cancel_last = entry.identifier
                job_id = (entry.field_values.get(b"job") or b"").decode("ascii", "replace")
                self._cancelled[job_id] = None
                if len(self._cancelled) > 2 * cluster.CANCELS_MAXLEN:
                    del self._cancelled[next(iter(self._cancelled))]
                for e in list(self.entries.values()):
                    if e.job_id == job_id:
                        if e.job is not None:
                            e.job.cancel("cancelled by the client")
                        else:  # being admitted: cancelled once it is
                            self._early_cancels.add(job_id)

    async def _heartbeat(self) -> None:
        """Renew our entries, look for cancels, and announce this node."""
        r = self.r
        while True:
            ids = list(self.entries)
            if ids:
                await r.xclaim(cluster.JOBS, cluster.GROUP, self.node, 0, ids, justid=True)
                running = [e for e in self.entries.values() if e.job is not None]
                if running:
                    flags = await r.mget([cluster.cancel_key(e.job_id) for e in running])
                    for e, flag in zip(running, flags, strict=True):
                        if flag is not None and e.job is not None:
                            e.job.cancel("cancelled by the client")
            await r.set(cluster.node_key(self.node), self._announcement(),
                        ex=max(2, round(self.beat * 5)))
            await r.sadd(cluster.NODES, [self.node])
            await trio.sleep(self.beat)

    def _announcement(self) -> bytes:
        """What submitters see of this node: profiles (a welcome), stats, jobs."""
        st = self.service.statistics()
        welcome = proto.Welcome(server=f"sandboxd/{__version__}", limits=self.limits,
                                profiles=self._profile_infos())
        stats = proto.ServerStats(
            uptime=st.uptime, connections=0, jobs_queued=st.jobs_queued,
            jobs_running=st.jobs_running, jobs_completed=st.jobs_completed,
            pools=tuple(proto.PoolStats(profile=p.profile, warm=p.warm, target=p.target)
                        for p in st.pools),
            counters={**st.counters, "cluster_done": self.done, "cluster_claimed": self.claimed})
        jobs = proto.JobList(jobs=tuple(
            proto.JobInfo(id=f"{self.node}/{j.ref}", profile=j.profile, state=j.state,
                          elapsed=j.elapsed, client=j.client, cpu_time=j.cpu_time,
                          memory=j.memory) for j in self.service.ps())[:1000])
        return msgpack.packb({
            "node": self.node, "capacity": self.cfg.concurrency,
            "running": st.jobs_running, "done": self.done, "last_seen": time.time(),
            "welcome": cluster.pack(welcome), "stats": cluster.pack(stats),
            "jobs": cluster.pack(jobs)}, use_bin_type=True)

    def _profile_infos(self) -> tuple[proto.ProfileInfo, ...]:
        return profile_infos(self.service.profiles.values(), self.service.versions)

    # -- one job ----------------------------------------------------------

    def _start(self, entry_id: bytes, fields: Any, delivered: int) -> None:
        if entry_id in self.entries:
            return  # ours already (claimed back after Redis was away): it runs
        reply = (fields.get(b"reply") or b"").decode("ascii", "replace")
        entry = _Entry(entry_id, reply if cluster.SUBMITTER_ID.fullmatch(reply) else None)
        data = fields.get(b"job")
        self.entries[entry_id] = entry
        self.unanswered.add(entry_id)
        assert self._jobs is not None
        self._jobs.start_soon(self._job, entry, data, delivered)

    async def _job(self, entry: _Entry, data: bytes | None, delivered: int) -> None:
        try:
            await self._run_entry(entry, data, delivered)
        except (RedisError, OSError) as e:
            # Left pending, no longer renewed: claimed again (maybe by us) after the claim time.
            event("redis_unreachable", logging.WARNING, node=self.node, loop="job",
                  job=entry.job_id, error=str(e) or type(e).__name__)
        except Exception as e:
            event("cluster_job_crashed", logging.ERROR, node=self.node, job=entry.job_id,
                  error=repr(e))
        finally:
            self.entries.pop(entry.entry_id, None)
            self._early_cancels.discard(entry.job_id)
            took = time.monotonic() - entry.started
            self.typical_run += _TYPICAL_WEIGHT * (took - self.typical_run)
            self.slot_freed.set()

    async def _run_entry(self, entry: _Entry, data: bytes | None, delivered: int) -> None:
        try:
            sub = cluster.unpack(data or b"", self.limits)
            if not isinstance(sub, proto.JobSubmission):
                raise proto.RemoteProtocolError(
                    f"a job entry must hold a job, not {type(sub).__name__}",
                    code="unexpected_message", job_id=getattr(sub, "id", None))
        except proto.RemoteProtocolError as e:
            event("cluster_bad_entry", logging.WARNING, node=self.node,
                  entry=entry.entry_id.decode(), error=e.message)
            if e.job_id:
                await self._answer(entry, e.job_id, proto.ErrorReport(
                    code="invalid_job", message=f"bad job record: {e.message}", id=e.job_id))
            else:
                await self._answer(entry, None, None)  # nobody to tell: drop it
            return
        entry.job_id = sub.id
        if delivered > 1:  # a rerun: answered meanwhile, or cancelled while we were away?
            async with self.r.pipeline(transaction=False) as p:  # one round trip for both
                answered_q = p.exists([cluster.result_key(sub.id)])
                cancelled_q = p.exists([cluster.cancel_key(sub.id)])
            answered, cancelled = await answered_q, await cancelled_q
        else:  # fresh: not answered; a cancel is on the stream we read (the heartbeat's poll
            # of cancel keys catches one sent while Redis was away from us)
            answered, cancelled = 0, sub.id in self._cancelled
        if answered:
            await self._answer(entry, None, None)  # answered before a crash: acknowledge
            return
        if delivered > self.cfg.redis_max_deliveries:
            reason = (f"the job was handed to a node {delivered} times (more than "
                      f"redis_max_deliveries={self.cfg.redis_max_deliveries}): every node "
                      "that took it stopped before answering")
            event("job_poison", logging.WARNING, node=self.node, job=sub.id, delivered=delivered)
            await self._answer(entry, sub.id, self._outcome(sub.id, "sandbox_error", reason))
            return
        if cancelled:
            await self._answer(entry, sub.id,
                               self._outcome(sub.id, "cancelled", "cancelled by the client"))
            return
        job = await self._admit(entry, sub, delivered)
        if job is None:
            return
        entry.job = job
        if sub.id in self._early_cancels:
            self._early_cancels.discard(sub.id)
            job.cancel("cancelled by the client")
        try:
            try:
                outcome = await self.service.execute(job)
            except ServiceError as e:
                await self._answer(entry, sub.id, proto.ErrorReport(
                    code=e.code, message=e.message, id=sub.id))
                return
            with trio.CancelScope(shield=True):
                await self._answer(entry, sub.id, job_result(sub.id, outcome,
                                                             self.limits.max_frame_size))
                if sub.interactive_stdin:  # answered: no rerun will read it again
                    with contextlib.suppress(RedisError, OSError):
                        await self.r.delete([cluster.stdin_key(sub.id)])
        finally:
            self.service.release(job)

    async def _admit(self, entry: _Entry, sub: proto.JobSubmission, attempt: int) -> Job | None:
        """The job admitted by the service, or ``None`` once answered (or left pending)."""
        seq = itertools.count()

        async def on_output(step: int, stream: str, data: bytes) -> None:
            await self._output(entry, proto.OutputChunk(
                id=sub.id, stream=stream, data=data, seq=next(seq), step=step), attempt)

        async def on_compile_output(stream: str, data: bytes) -> None:
            await self._output(entry, proto.OutputChunk(
                id=sub.id, stream=stream, data=data, seq=next(seq), compile=True), attempt)

        while True:
            try:
                spec = job_spec(sub, self.service.profile(sub.profile),
                                on_output=on_output if sub.stream else None,
                                on_compile_output=on_compile_output if sub.stream else None,
                                stdin_stream=self._stdin(sub.id) if sub.interactive_stdin
                                else None,
                                profiles=self.service.profile)
                return self.service.submit(spec, id=sub.id, owner="cluster",
                                           client=f"cluster@{self.node}")
            except ServiceError as e:
                if e.code == "server_busy":  # local clients took the slot we saw free
                    await trio.sleep(0.05)
                    continue
                if e.code == "shutting_down":
                    return None  # stays pending; handed back as we stop
                if e.code == "duplicate_job":  # the same job runs here already
                    await self._answer(entry, None, None)
                    return None
                await self._answer(entry, sub.id, proto.ErrorReport(
                    code=e.code, message=e.message, id=sub.id))
                return None

    async def _stdin(self, job_id: str) -> AsyncIterator[bytes]:
        """An interactive job's stdin: its stdin stream from the start, until ``eof``.
        Redis away: it waits (retrying) as a program waits for input."""
        key = cluster.stdin_key(job_id)
        last: bytes | str = "0-0"
        delay = _BACKOFF_FIRST
        while True:
            try:
                got = await self.r.xread(streams={key: last}, count=64, block=5000)
            except (RedisError, OSError) as e:
                event("redis_unreachable", logging.WARNING, node=self.node, loop="stdin",
                      job=job_id, error=str(e) or type(e).__name__, retry_in=round(delay, 2))
                await trio.sleep(delay)
                delay = min(_BACKOFF_MAX, delay * 2)
                continue
            delay = _BACKOFF_FIRST
            for entry in (got or {}).get(key.encode(), ()):
                last = entry.identifier
                if b"eof" in entry.field_values:
                    return
                data = entry.field_values.get(b"data")
                if data:
                    yield data

    def _outcome(self, job_id: str, verdict: str, reason: str) -> proto.JobResult:
        return job_result(job_id, JobOutcome(None, [StepOutcome(
            Result.without_run(verdict, reason))]), self.limits.max_frame_size)

    async def _output(self, entry: _Entry, chunk: proto.OutputChunk, attempt: int) -> None:
        """One chunk on the submitter's reply stream; lost (the result has it all) if Redis
        is away or the submitter named no reply stream."""
        if entry.reply is None:
            return
        key = cluster.reply_key(entry.reply)
        try:
            async with self.r.pipeline(transaction=False) as p:
                p.xadd(key, {"job": chunk.id, "chunk": cluster.pack(chunk, self.limits),
                             "attempt": str(attempt)})
                p.expire(key, self.ttl)
        except (RedisError, OSError) as e:
            event("cluster_output_lost", logging.WARNING, job=chunk.id, error=str(e))

    async def _answer(self, entry: _Entry, job_id: str | None,
                      answer: proto.JobResult | proto.ErrorReport | None) -> None:
        """Store the answer once (NX), wake the submitter, acknowledge and delete the entry.

        One transaction, retried until Redis takes it: a node that dies before
        it leaves the entry pending (run again elsewhere); one that dies after
        it leaves nothing. ``answer=None``: acknowledge only.
        """
        record = cluster.pack(answer, self.limits) if answer is not None else None
        delay = _BACKOFF_FIRST
        while True:
            try:
                if record is not None and job_id is not None:
                    # One script, one round trip: stored once, `done` (the answer inline
                    # when small) posted by the first answer only, the entry acknowledged.
                    reply = cluster.reply_key(entry.reply) if entry.reply else cluster.JOBS
                    keys = [cluster.result_key(job_id), reply, cluster.JOBS]
                    args = [record, self.ttl, job_id, cluster.GROUP, entry.reply or "",
                            "1" if len(record) <= cluster.INLINE_ANSWER else "0",
                            entry.entry_id]
                    if self._lean_answer is not None:
                        await self._answer_lean(self._lean_answer, keys, args)
                    else:
                        await self._answer_script(keys=keys, args=args)
                else:
                    async with self.r.pipeline(transaction=True) as p:
                        p.xack(cluster.JOBS, cluster.GROUP, [entry.entry_id])
                        p.xdel(cluster.JOBS, [entry.entry_id])
                break
            except (RedisError, OSError) as e:
                event("redis_unreachable", logging.WARNING, node=self.node, loop="answer",
                      job=job_id, error=str(e) or type(e).__name__, retry_in=round(delay, 2))
                await trio.sleep(delay)
                delay = min(_BACKOFF_MAX, delay * 2)
        self.unanswered.discard(entry.entry_id)
        if record is not None:
            self.done += 1

    _lean_read: LeanRedis | None = None
    _lean_answer: LeanRedis | None = None

    async def _answer_lean(self, lean: LeanRedis, keys: list[Any], args: list[Any]) -> None:
        """The answer script: with the read loop's next read if it is not blocked in Redis
        (one write, one wake-up of Redis for both), else on the answer connection, in one
        write with the other answers ready meanwhile."""
        carried = _Carried(lean.script_args(cluster.ANSWER_SCRIPT, keys, args))
        if self._carry:
            self._carried.append(carried)
            self.slot_freed.set()  # wakes the read loop
        else:
            self._batch.append(carried)
            if not self._batch_sending:
                await self._send_batches(lean)
        await carried.done.wait()
        if carried.error is not None:
            raise carried.error
        if not isinstance(carried.reply, ResponseError):
            return
        if not str(carried.reply).startswith("NOSCRIPT"):
            raise carried.reply
        await lean.script(cluster.ANSWER_SCRIPT, keys, args)  # EVAL if the cache is empty

    async def _send_batches(self, lean: LeanRedis) -> None:
        """Send the answers queued on the answer connection, each batch in one write, until
        none is left (those queued while a batch is on its way go in the next)."""
        self._batch_sending = True
        try:
            while self._batch:
                batch, self._batch = self._batch, []

                def on_reply(i: int, reply: Any, batch: list[_Carried] = batch) -> None:
                    batch[i].reply = reply
                    batch[i].done.set()

                try:
                    await lean.pipeline([c.command for c in batch], on_reply)
                except (RedisError, OSError):
                    pass  # those without a reply get an error below: their tasks retry
                finally:
                    for c in batch:
                        if not c.done.is_set():
                            c.error = RedisConnectionError("the answer's write was cut off")
                            c.done.set()
        finally:
            self._batch_sending = False
            left, self._batch = self._batch, []
            for c in left:  # we were cancelled: their own tasks send them again
                c.error = RedisConnectionError("the answer's write was cut off")
                c.done.set()

    async def _hand_back(self) -> None:
        """Put the entries we hold and have not answered back on the queue, for others."""
        if not self.unanswered:
            return
        try:
            # A client of its own: the loops' was cut off mid-command by the cancellation
            # (a blocked XREADGROUP), and coredis drops such a connection.
            async with coredis.Redis.from_url(self.cfg.redis, stream_timeout=None) as r:
                ids = list(self.unanswered)
                async with r.pipeline(transaction=False) as p:
                    ranges = [p.xrange(cluster.JOBS, start=i, end=i, count=1) for i in ids]
                entries = [e for q in ranges for e in await q]
                async with r.pipeline(transaction=True) as p:
                    for e in entries:
                        p.xadd(cluster.JOBS, dict(e.field_values))
                    p.xack(cluster.JOBS, cluster.GROUP, ids)
                    p.xdel(cluster.JOBS, ids)
            self.unanswered.clear()
            event("cluster_handed_back", node=self.node, jobs=len(entries))
        except (RedisError, OSError) as e:
            event("cluster_hand_back_failed", logging.WARNING, node=self.node, error=str(e))


def _read_entries(got: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """A RESP2 ``XREADGROUP`` reply of one stream (``None``: timed out) as its entries,
    each an id and its fields as a map (an entry deleted meanwhile has none)."""
    out = []
    for _key, entries in got or ():
        for entry_id, flat in entries:
            flat = flat or []
            out.append((entry_id, dict(zip(flat[::2], flat[1::2], strict=True))))
    return out
