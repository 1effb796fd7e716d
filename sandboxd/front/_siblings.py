"""A worker's siblings (``workers = N``, sandboxd/workers.py): ``ps``, ``stats``, ``kill``
of the whole daemon, asked over each sibling's private control socket.

Strategy: with several workers, a connection lands on one of them (the kernel
hands the shared listening socket's next connection to whichever worker
accepts first), but ``ps``, ``stats`` and ``kill`` must see the daemon, not
the worker. So each worker also listens on ``<state_dir>/sandboxd-worker-<k>.sock``
(mode 0600: only the daemon's own user), speaking the same msgpack protocol,
where these three requests are answered from that worker alone. A worker that
gets one of them from a client answers from itself and asks every sibling
there, concurrently, with a fresh connection each (a few hundred microseconds:
these are operator commands, not the job path). A sibling that does not answer
within ``TIMEOUT`` (dead, or restarting) is left out: ``ps`` then lists the
jobs of the workers that answered, and ``stats`` says how many did
(``workers_answering``).

Job references carry their worker: ``w<k>-<connection>/<job id>``, so
``kill`` goes to the one worker that can own the job.

Which worker accepts a connection: every worker waits on the shared listening
socket, and the kernel wakes them all; left alone, whichever is quickest takes
it, and a burst of connections (8 clients starting at once) could land 7 to 1.
As all of a connection's jobs run on its worker, and each worker has only its
share of ``concurrency``, that would leave slots idle. So the workers publish
their connection counts in a shared page (``loads``, one int per worker, made by
the daemon process before it forks), and ``BalancedListener`` lets a worker
with more connections than the least loaded sibling wait up to ``DEFER_MAX``
before it accepts, for that sibling to take the connection first.

Every front door with a ps, stats or kill (the msgpack socket's, the HTTP front
door's ``/v1/ps``, ``/v1/stats``, ``/v1/kill`` and ``/metrics``, served by worker 0
alone) asks the whole daemon through one ``DaemonView``. ``/metrics`` also needs
each sibling's job metrics (jobs by profile and verdict, CPU seconds by profile,
the queue-wait and run-time histograms), which ``ServerStats`` has no field for:
a sibling's answer on the control socket carries them in its counters, under
names that start with ``METRIC`` (``m.jobs.<profile index>.<verdict>``,
``m.cpu.<profile index>``, ``m.<histogram>.<bucket index>|sum|count``), profiles
by their index in the sorted profile names, which every worker shares (they are
forked from one parent, after it loaded them). ``merge_stats`` leaves these
counters out of the daemon's stats; ``merge_metrics`` adds them up, histograms
bucket by bucket (every worker has the same buckets).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence

import trio

import sandboxd_protocol as proto
from sandboxd.service import Histogram, JobMetrics, JobService

TIMEOUT = 2.0
_REF = re.compile(r"w(\d+)-")
# How long a worker with more connections than a sibling lets that sibling take a new
# one (it then accepts it anyway: the sibling may be busy, or dead and restarting).
DEFER_MAX = 0.01
DEFER_STEP = 0.001
GONE = 1 << 30  # the load the daemon process writes for a dead worker


class Siblings:
    """This worker's index and tag, the control socket of every worker, and (with
    ``loads``) every worker's connection count."""

    def __init__(self, index: int, paths: Mapping[int, str],
                 loads: mmap.mmap | None = None) -> None:
        self.index = index
        self.tag = f"w{index}"
        self.paths = dict(paths)  # worker index -> its control socket (ours included)
        self.loads = memoryview(loads).cast("i") if loads is not None else None
        self._msgpack = 0  # connections of the msgpack front (Unix and TCP sockets)
        self._http = 0  # and of the HTTP front's shared socket

    def publish(self, connections: int) -> None:
        """Tell the siblings how many msgpack connections this worker serves."""
        self._msgpack = connections
        if self.loads is not None:
            self.loads[self.index] = self._msgpack + self._http

    def http_connections(self, delta: int) -> None:
        """An HTTP connection came (+1) or went (-1): counted with the msgpack ones."""
        self._http += delta
        self.publish(self._msgpack)

    def should_defer(self) -> bool:
        """Whether a sibling serves fewer connections than this worker (and should take
        the next one)."""
        loads = self.loads
        if loads is None:
            return False
        mine = loads[self.index]
        return any(loads[k] < mine for k in range(len(loads)) if k != self.index)

    @property
    def count(self) -> int:
        return len(self.paths)

    def owner_of(self, ref: str) -> int | None:
        """The worker a job reference names (``w<k>-...``), ``None`` if none does."""
        m = _REF.match(ref)
        if m is None or int(m.group(1)) not in self.paths:
            return None
        return int(m.group(1))

    async def ask(self, index: int, request: proto.Event) -> proto.Event | None:
        """Worker ``index``'s answer to ``request`` on its control socket; ``None`` if it
        gave none within ``TIMEOUT`` (or the connection failed)."""
        with trio.move_on_after(TIMEOUT):
            try:
                return await _ask(self.paths[index], request)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                    proto.ProtocolError, ConnectionError):
                return None
        return None

    async def ask_all(self, request: proto.Event) -> dict[int, proto.Event]:
        """Every other worker's answer to ``request``, by index (those that answered)."""
        answers: dict[int, proto.Event] = {}

        async def one(index: int) -> None:
            ev = await self.ask(index, request)
            if ev is not None:
                answers[index] = ev

        async with trio.open_nursery() as nursery:
            for index in self.paths:
                if index != self.index:
                    nursery.start_soon(one, index)
        return answers


async def _ask(path: str, request: proto.Event) -> proto.Event:
    stream = await trio.open_unix_socket(path)
    async with stream:
        conn = proto.Connection(proto.CLIENT)
        await stream.send_all(conn.send(proto.Hello(client="sandboxd-sibling")))
        sent = False
        while True:
            ev = conn.next_event()
            if ev is proto.NEED_DATA:
                data = await stream.receive_some(1 << 16)
                if not data:
                    raise ConnectionError("the sibling closed the connection")
                conn.receive_data(data)
                continue
            if isinstance(ev, proto.ConnectionClosed):
                raise ConnectionError("the sibling closed the connection")
            if isinstance(ev, proto.ErrorReport):
                raise ConnectionError(f"the sibling refused: {ev.code}: {ev.message}")
            if isinstance(ev, proto.Welcome) and not sent:
                await stream.send_all(conn.send(request))
                sent = True
                continue
            if sent:
                with contextlib.suppress(Exception):
                    await stream.send_all(conn.send(proto.Goodbye()))
                return ev


def merge_stats(own_index: int, answers: Mapping[int, proto.ServerStats],
                workers: int) -> proto.ServerStats:
    """One daemon's ``stats`` from each worker's (``answers``, ours included).

    Job and connection counts are sums; pools are summed by profile (each worker
    keeps its own warm containers); ``uptime`` is the oldest worker's. Counters
    are sums, but for means and percentiles (``*_s``), which are the highest of
    any worker (a sum of them means nothing). Per-worker figures are added as
    ``w<k>_jobs_completed``, ``w<k>_jobs_running`` and ``w<k>_connections``, with
    ``workers`` (configured) and ``workers_answering``.
    """
    pools: dict[str, list[int]] = {}
    counters: dict[str, int | float] = {}
    for st in answers.values():
        for p in st.pools:
            acc = pools.setdefault(p.profile, [0, 0])
            acc[0] += p.warm
            acc[1] += p.target
        for k, v in st.counters.items():
            if k.startswith(METRIC):  # the job metrics: merge_metrics's
                continue
            if k.endswith("_s"):
                counters[k] = max(counters.get(k, 0.0), v)
            else:
                counters[k] = counters.get(k, 0) + v
    for k, st in sorted(answers.items()):
        counters[f"w{k}_jobs_completed"] = st.jobs_completed
        counters[f"w{k}_jobs_running"] = st.jobs_running
        counters[f"w{k}_connections"] = st.connections
    counters["workers"] = workers
    counters["workers_answering"] = len(answers)
    vals = list(answers.values())
    return proto.ServerStats(
        uptime=max(s.uptime for s in vals), connections=sum(s.connections for s in vals),
        jobs_queued=sum(s.jobs_queued for s in vals),
        jobs_running=sum(s.jobs_running for s in vals),
        jobs_completed=sum(s.jobs_completed for s in vals),
        pools=tuple(proto.PoolStats(profile=name, warm=w, target=t)
                    for name, (w, t) in pools.items()),
        counters=counters)


# ------------------------------------------------------------ job metrics in counters

METRIC = "m."
# A counter map holds at most 1024 names (sandboxd_protocol's ServerStats); the
# service's own counters take a few dozen. Past this many, a sibling's
# (profile, verdict) pairs are left out of its answer (its other figures stay).
MAX_METRIC_COUNTERS = 800
_HISTOGRAMS = ("queue_wait", "run_time")
# A route's path in a counter name (letters, digits, "_" only): "_" escapes.
_ESCAPES = {"_": "_u", "/": "_s", "{": "_o", "}": "_c", ".": "_d", "-": "_h", ":": "_k"}
_UNESCAPES = {v[1]: k for k, v in _ESCAPES.items()}


def _route_name(route: str) -> str:
    return "".join(_ESCAPES.get(c) or (c if c.isascii() and c.isalnum() else f"_x{ord(c):02x}")
                   for c in route)


def _route_of(name: str) -> str:
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c != "_" or i + 1 >= len(name):
            out.append(c)
            i += 1
        elif name[i + 1] == "x":
            out.append(chr(int(name[i + 2:i + 4], 16)))
            i += 4
        else:
            out.append(_UNESCAPES.get(name[i + 1], "?"))
            i += 2
    return "".join(out)


def encode_metrics(metrics: JobMetrics, profiles: Sequence[str]) -> dict[str, int | float]:
    """``metrics`` as counters (``METRIC`` names); ``profiles``: the sorted profile names.

    A job of a profile not among them (none: every job's profile is one of the
    daemon's) is left out."""
    index = {name: i for i, name in enumerate(profiles)}
    out: dict[str, int | float] = {}
    for name in _HISTOGRAMS:
        h: Histogram = getattr(metrics, name)
        for i, n in enumerate(h.counts):
            out[f"{METRIC}{name}.{i}"] = n
        out[f"{METRIC}{name}.sum"] = h.sum
        out[f"{METRIC}{name}.count"] = h.count
    for profile, seconds in metrics.cpu_seconds.items():
        if profile in index:
            out[f"{METRIC}cpu.{index[profile]}"] = float(seconds)
    if metrics.http_in_flight:
        out[f"{METRIC}http_in_flight"] = metrics.http_in_flight
    for (route, method, status), n in metrics.http.items():
        name = f"{METRIC}http.{method}.{status}.{_route_name(route)}"
        if len(out) >= MAX_METRIC_COUNTERS // 2:
            break
        if len(name) <= 64:  # a counter name's limit (no route of ours comes near it)
            out[name] = n
    for (profile, verdict), n in metrics.jobs.items():
        if len(out) >= MAX_METRIC_COUNTERS:
            break
        if profile in index:
            out[f"{METRIC}jobs.{index[profile]}.{verdict}"] = n
    return out


def decode_metrics(counters: Mapping[str, int | float], profiles: Sequence[str]) -> JobMetrics:
    """The job metrics a sibling's counters carry (``encode_metrics``'s inverse)."""
    m = JobMetrics()
    for key, v in counters.items():
        if not key.startswith(METRIC):
            continue
        if key.startswith(f"{METRIC}http."):
            fields = key[len(METRIC):].split(".")
            if len(fields) == 4:
                m.http[_route_of(fields[3]), fields[1], fields[2]] += int(v)
            continue
        if key == f"{METRIC}http_in_flight":
            m.http_in_flight = int(v)
            continue
        parts = key[len(METRIC):].split(".")
        try:
            if parts[0] in _HISTOGRAMS and len(parts) == 2:
                h: Histogram = getattr(m, parts[0])
                if parts[1] == "sum":
                    h.sum = float(v)
                elif parts[1] == "count":
                    h.count = int(v)
                else:
                    h.counts[int(parts[1])] = int(v)
            elif parts[0] == "cpu" and len(parts) == 2:
                m.cpu_seconds[profiles[int(parts[1])]] = float(v)
            elif parts[0] == "jobs" and len(parts) == 3:
                m.jobs[profiles[int(parts[1])], parts[2]] = int(v)
        except (ValueError, IndexError):
            continue  # a name this worker cannot read (another version's): left out
    return m


def merge_metrics(parts: Iterable[JobMetrics]) -> JobMetrics:
    """The sum of several workers' job metrics; histograms bucket by bucket."""
    total = JobMetrics()
    for m in parts:
        total.jobs.update(m.jobs)
        total.cpu_seconds.update(m.cpu_seconds)
        total.http.update(m.http)
        total.http_in_flight += m.http_in_flight
        for name in _HISTOGRAMS:
            acc: Histogram = getattr(total, name)
            h: Histogram = getattr(m, name)
            acc.counts = [a + b for a, b in zip(acc.counts, h.counts, strict=True)]
            acc.sum += h.sum
            acc.count += h.count
    return total


# ------------------------------------------------------------ the whole daemon


class DaemonView:
    """ps, stats, kill and job metrics of the whole daemon, as one worker sees them:
    its own, joined with what its siblings answer (only its own without workers).

    One per worker, shared by its front doors (the daemon hands the msgpack
    front's to the HTTP front door), so both answer alike. ``connections``: the
    worker's msgpack connection count, which its stats report."""

    def __init__(self, service: JobService, siblings: Siblings | None,
                 connections: Callable[[], int] = lambda: 0) -> None:
        self.service = service
        self.siblings = siblings
        self.connections = connections
        self.profile_names = sorted(service.profiles)

    def stats(self, *, metrics: bool = False) -> proto.ServerStats:
        """This worker's stats; ``metrics``: with its job metrics in the counters (the
        answer to a sibling, on the control socket)."""
        st = self.service.statistics()
        counters = st.counters
        if metrics:
            counters = {**counters, **encode_metrics(self.service.metrics, self.profile_names)}
        return proto.ServerStats(
            uptime=st.uptime, connections=self.connections(), jobs_queued=st.jobs_queued,
            jobs_running=st.jobs_running, jobs_completed=st.jobs_completed,
            pools=tuple(proto.PoolStats(profile=p.profile, warm=p.warm, target=p.target)
                        for p in st.pools),
            counters=counters)

    def job_list(self) -> proto.JobList:
        """This worker's jobs."""
        return proto.JobList(jobs=tuple(
            proto.JobInfo(id=j.ref, profile=j.profile, state=j.state, elapsed=j.elapsed,
                          client=j.client, cpu_time=j.cpu_time, memory=j.memory)
            for j in self.service.ps()))

    async def daemon_job_list(self) -> proto.JobList:
        """``ps`` of every worker that answers (only this one's without workers)."""
        own = self.job_list()
        if self.siblings is None:
            return own
        answers = await self.siblings.ask_all(proto.JobListRequest())
        jobs = list(own.jobs)
        for _k, ev in sorted(answers.items()):
            if isinstance(ev, proto.JobList):
                jobs.extend(ev.jobs)
        return proto.JobList(jobs=tuple(jobs))

    async def _all_stats(self) -> dict[int, proto.ServerStats]:
        assert self.siblings is not None
        answers = await self.siblings.ask_all(proto.StatsRequest())
        per = {k: ev for k, ev in answers.items() if isinstance(ev, proto.ServerStats)}
        per[self.siblings.index] = self.stats()
        return per

    async def daemon_stats(self) -> proto.ServerStats:
        """``stats`` summed over every worker that answers (this one's without workers)."""
        if self.siblings is None:
            return self.stats()
        return merge_stats(self.siblings.index, await self._all_stats(), self.siblings.count)

    async def daemon_stats_and_metrics(self) -> tuple[proto.ServerStats, JobMetrics]:
        """``daemon_stats`` and the job metrics summed over the same workers."""
        if self.siblings is None:
            return self.stats(), self.service.metrics
        per = await self._all_stats()
        own = self.siblings.index
        metrics = merge_metrics([self.service.metrics, *(
            decode_metrics(st.counters, self.profile_names)
            for k, st in per.items() if k != own)])
        return merge_stats(own, per, self.siblings.count), metrics

    async def daemon_kill(self, ref: str) -> bool:
        """``kill``: by this worker, or by the sibling the reference names."""
        siblings = self.siblings
        owner = siblings.owner_of(ref) if siblings is not None else None
        if siblings is None or owner is None or owner == siblings.index:
            return self.service.kill(ref)
        ev = await siblings.ask(owner, proto.KillRequest(job=ref))
        return isinstance(ev, proto.KillResult) and ev.found


_CLOSED = {errno.EBADF, errno.ENOTSOCK}
_IGNORED = {errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO, errno.ENETDOWN, errno.ENOPROTOOPT,
            errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP,
            errno.ENETUNREACH}


class BalancedListener(trio.abc.Listener[trio.SocketStream]):
    """A listening socket shared with the siblings; accepts after the less loaded ones
    had their chance (``Siblings.should_defer``, at most ``DEFER_MAX``)."""

    def __init__(self, sock: socket.socket, siblings: Siblings) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.siblings = siblings

    async def accept(self) -> trio.SocketStream:
        deferred = 0.0
        while True:
            try:
                await trio.lowlevel.wait_readable(self.sock)
            except OSError as e:  # closed meanwhile
                raise trio.ClosedResourceError from e
            if deferred < DEFER_MAX and self.siblings.should_defer():
                await trio.sleep(DEFER_STEP)
                deferred += DEFER_STEP
                continue
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:  # a sibling took it
                deferred = 0.0
                continue
            except OSError as e:
                if e.errno in _CLOSED:
                    raise trio.ClosedResourceError from None
                if e.errno not in _IGNORED:
                    raise
                continue
            return trio.SocketStream(trio.socket.from_stdlib_socket(conn))

    async def aclose(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()
        await trio.lowlevel.checkpoint()
