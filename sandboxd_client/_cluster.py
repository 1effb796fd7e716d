"""A ``redis://`` address: the client talks to a cluster's queue instead of one daemon.

Strategy: the client keeps its one engine (``Core`` over a socket speaking
the msgpack protocol), and a *bridge* plays the daemon's side of that
socket: a thread with its own event loop (asyncio, through anyio) holds one end
of a ``socketpair`` and serves the protocol on it, carrying each job through
Redis with redis-py's asyncio client and its hiredis parser: it costs about
0.07 ms per command here where coredis costs 0.2-0.3 ms (docs/cluster.md,
"Speed"), and a job's path has two of them in series on this side. So
``Client``, ``AsyncClient`` and ``sandboxctl`` get the same API, errors and
results over a cluster as over a socket, with no second implementation of
any of them.

What the bridge does with each message (``sandboxd_protocol.cluster`` has the
keys; docs/cluster.md the design):

- a job: a fresh uuid becomes its id in the cluster (so ids never collide
  between submitters), the packed submission is added to the job stream with
  this bridge's reply stream, and the job is accepted; a queue longer than
  ``max_queue`` answers ``server_busy`` instead; on the job path (``_JobPath``)
  the submit is written together with the reply stream's blocked read, so
  Redis wakes once for both (docs/cluster.md, "Speed");
- one task reads this bridge's reply stream while it has jobs out: output
  chunks (of the latest attempt, if a node died and another reran the job)
  and ``done`` entries, with the answer inline (or read from its key when
  big), passed on under the caller's id;
- a cancel sets the job's cancel key (the node polls it), as does a client
  that goes away with jobs unfinished;
- ``ps``, ``stats`` and ``kill`` gather what the live nodes announce;
  ``ping`` measures a round trip to Redis.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import sandboxd_protocol as proto
from sandboxd_protocol import cluster

__all__ = ["DEFAULT_MAX_QUEUE", "RedisBridge", "is_redis_url"]

DEFAULT_MAX_QUEUE = 10_000
"""Jobs waiting or running in the cluster past which a submission is refused as busy."""

_SCHEMES = ("redis://", "rediss://", "unix://")
_TRIM_EVERY = 64
_RETRY_FOR = 15.0  # s: how long an idempotent command waits for Redis to come back
_REPLY_TTL = 24 * 3600  # the reply stream outlives any job we wait for; refreshed by nodes


def is_redis_url(address: object) -> bool:
    return isinstance(address, str) and address.startswith(_SCHEMES)


def redacted(url: str) -> str:
    """``url`` without its password: for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest


class RedisBridge:
    """The daemon's side of the client's socket, played against Redis, in a thread."""

    def __init__(self, url: str, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.url = url
        self.where = redacted(url)
        self.max_queue = max_queue
        self.submitter = uuid.uuid4().hex
        self.reply = cluster.reply_key(self.submitter)
        self.conn = proto.Connection(proto.SERVER)
        self.jobs: dict[str, tuple[str, bool]] = {}  # cluster id -> (caller's id, stream)
        self.ids: dict[str, str] = {}  # caller's id -> cluster id
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._seq: Counter[str] = Counter()
        self._attempt: dict[str, int] = {}
        self._path: _JobPath | None = None
        self._accepting: dict[str, Any] = {}  # cluster id -> an event set once answered

    # -- the thread -------------------------------------------------------

    def open(self, timeout: float | None) -> socket.socket:
        """Start the bridge; the client's end of the socket once Redis answered a ping.

        Raises ``OSError`` (or ``TimeoutError``) when Redis cannot be reached:
        the caller reports it as a ``ConnectError``.
        """
        try:
            import anyio  # noqa: F401
            import redis.asyncio  # noqa: F401
        except ImportError as e:
            raise OSError(f"redis:// addresses need the Redis client: pip install "
                          f"'sandboxd[cluster]' ({e})") from None
        ours, theirs = socket.socketpair()
        self._thread = threading.Thread(target=self._main, args=(theirs,), daemon=True,
                                        name=f"sandboxd-redis-{self.submitter[:8]}")
        self._thread.start()
        if not self._ready.wait(timeout):
            ours.close()
            raise TimeoutError(f"no answer from Redis at {self.where} in {timeout} s")
        if self._error is not None:
            ours.close()
            err = self._error
            raise OSError(str(err) or type(err).__name__) from err
        return ours

    def join(self, timeout: float) -> None:
        """Wait (a little) for the bridge to finish after the client closed its end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _main(self, sock: socket.socket) -> None:
        import anyio

        try:
            anyio.run(self._serve, sock)
        except BaseException as e:  # the client sees its socket close
            if not self._ready.is_set():
                self._error = e
        finally:
            self._ready.set()
            sock.close()

    async def _serve(self, sock: socket.socket) -> None:
        import anyio
        import redis.asyncio

        stream = await anyio.abc.UNIXSocketStream.from_socket(sock)
        self._lock = anyio.Lock()
        self._stream = stream
        failure: BaseException | None = None
        # No socket timeout: the reply stream's read blocks (10 s at a time) by design.
        # RESP2 (redis-py's default), whose XREAD reply ``_entries`` reads.
        async with redis.asyncio.Redis.from_url(self.url, socket_timeout=None) as r:
            self.r = r
            self._submit_script = r.register_script(cluster.SUBMIT_SCRIPT)
            try:
                try:
                    await r.ping()
                except Exception as e:
                    self._error = e
                    self._ready.set()
                    return
                self._path = _JobPath.open(self)
                if self._path is not None:
                    try:
                        await self._path.connect()
                    except Exception:
                        self._path = None  # redis-py answered: it carries the jobs then
                self._ready.set()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._path.run if self._path is not None
                                  else self._read_replies)
                    try:
                        await self._serve_client()
                    finally:
                        tg.cancel_scope.cancel()
            except Exception as e:  # never out of `async with r` (it would wrap it)
                failure = e
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await self._abandon()
                    if self._path is not None:
                        await self._path.aclose()
        if failure is not None:
            raise failure

    async def _serve_client(self) -> None:
        import anyio

        conn = self.conn
        while True:
            ev = conn.next_event()
            if ev is proto.NEED_DATA:
                try:
                    data = await self._stream.receive(1 << 16)
                except (anyio.EndOfStream, anyio.BrokenResourceError,
                        anyio.ClosedResourceError):
                    data = b""
                conn.receive_data(data)
                continue
            if isinstance(ev, (proto.ConnectionClosed, proto.Goodbye)):
                return
            await self._dispatch(ev)

    async def _send(self, ev: Any) -> None:
        import anyio

        async with self._lock:
            data = self.conn.send(ev)
            if data:
                with anyio.CancelScope(shield=True):
                    await self._stream.send(data)

    # -- the client's messages --------------------------------------------

    async def _dispatch(self, ev: Any) -> None:
        if isinstance(ev, proto.Hello):
            nodes = await self._nodes()  # once: two commands per client, not four
            await self._send(proto.Welcome(server=self._server_name(nodes),
                                           limits=self.conn.limits,
                                           profiles=self._profiles(nodes)))
        elif isinstance(ev, proto.JobSubmission):
            await self._submit(ev)
        elif isinstance(ev, proto.Cancellation):
            cid = self.ids.get(ev.id)
            if cid is not None:  # idempotent: safe to send again after a lost reply
                await self._retrying(lambda: self._cancel([cid]))
        elif isinstance(ev, (proto.StdinChunk, proto.EndOfStdin)):
            cid = self.ids.get(ev.id)
            if cid is not None:
                await self._stdin(cid, ev.data if isinstance(ev, proto.StdinChunk) else None)
        elif isinstance(ev, proto.Ping):
            await self._retrying(self.r.ping)
            await self._send(proto.Pong(nonce=ev.nonce))
        elif isinstance(ev, proto.JobListRequest):
            nodes = await self._nodes()
            jobs = [j for n in nodes for j in _unpack(n.get("jobs"), proto.JobList, _NO_JOBS).jobs]
            await self._send(proto.JobList(jobs=tuple(jobs)))
        elif isinstance(ev, proto.KillRequest):
            await self._send(proto.KillResult(job=ev.job, found=await self._kill(ev.job)))
        elif isinstance(ev, proto.StatsRequest):
            await self._send(await self._stats())

    async def _retrying(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call()`` again while Redis is away (a restart takes it a second or two), up to
        ``_RETRY_FOR`` s: for commands whose repetition is harmless, idempotent ones and
        the submit (a job queued twice is answered once). A cancel or a ping that met a
        restart would otherwise end the client's whole connection."""
        import anyio
        import redis.exceptions

        delay = 0.05
        deadline = anyio.current_time() + _RETRY_FOR
        while True:
            try:
                return await call()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                if anyio.current_time() >= deadline:
                    raise
                await anyio.sleep(delay)
                delay = min(1.0, delay * 2)

    async def _submit(self, sub: proto.JobSubmission) -> None:
        def refuse(code: str, message: str) -> proto.ErrorReport:
            return proto.ErrorReport(code=code, message=message, id=sub.id)

        import anyio

        cid = uuid.uuid4().hex
        # Its answer may come in the very read that follows the submit on the job path:
        # the reader holds it until the acceptance is sent (the protocol's order).
        self._accepting[cid] = accepted = anyio.Event()
        try:
            await self._queue(sub, cid, refuse)
        finally:
            del self._accepting[cid]
            accepted.set()

    async def _queue(self, sub: proto.JobSubmission, cid: str,
                     refuse: Callable[[str, str], proto.ErrorReport]) -> None:
        try:
            record = cluster.pack(dataclasses.replace(sub, id=cid))
            self.jobs[cid] = (sub.id, sub.stream)
            self.ids[sub.id] = cid
            # The queue's length checked and the job added in one round trip (a script),
            # with the reply stream's read when the job path can take it.
            # A submit cut by a lost connection (Redis restarting) may or may not have
            # queued the job: it is sent again, under the same id, while Redis comes back
            # (``_retrying``). Refused instead, a job queued all the same would run for
            # nobody; sent twice, it runs at least once and is answered once (the answer
            # is stored once per id, docs/cluster.md "Delivery guarantees").
            try:
                got = await self._path.submit(record) if self._path is not None else None
            except ConnectionError:
                got = None
            if got is None:
                got = await self._retrying(lambda: self._submit_script(
                    keys=[cluster.JOBS], args=[self.max_queue, record, self.submitter]))
            queued, n = got
            if not queued:
                self.jobs.pop(cid, None)
                self.ids.pop(sub.id, None)
                await self._send(refuse("server_busy", f"the cluster's queue holds {n} "
                                        f"jobs (max_queue={self.max_queue})"))
                return
        except Exception as e:
            self.jobs.pop(cid, None)
            self.ids.pop(sub.id, None)
            await self._send(refuse("internal_error", f"cannot queue the job in Redis at "
                                    f"{self.where}: {e}"))
            return
        await self._send(proto.JobAcceptance(id=sub.id))

    async def _stdin(self, cid: str, data: bytes | None) -> None:
        """More of an interactive job's stdin (``None``: its end) on its stdin stream, which
        the node running it reads; sent in order, as the client gave it."""
        key = cluster.stdin_key(cid)
        async with self.r.pipeline(transaction=False) as p:
            p.xadd(key, {"data": data} if data is not None else {"eof": "1"})
            p.expire(key, _REPLY_TTL)
            await p.execute()

    async def _cancel(self, cids: list[str]) -> None:
        """The cancel key (for a node that takes the job later) and a notice on the cancel
        stream (for the node running it now), in one round trip."""
        async with self.r.pipeline(transaction=False) as p:
            for cid in cids:
                p.set(cluster.cancel_key(cid), b"1", ex=_REPLY_TTL)
                p.xadd(cluster.CANCELS, {"job": cid}, maxlen=cluster.CANCELS_MAXLEN,
                       approximate=True)
            await p.execute()

    async def _abandon(self) -> None:
        """The client went away: its unfinished jobs are cancelled, as a daemon would."""
        if self.jobs:
            with contextlib.suppress(Exception):
                await self._cancel(list(self.jobs))
        with contextlib.suppress(Exception):
            await self.r.delete(self.reply)

    # -- answers ----------------------------------------------------------

    async def _read_replies(self) -> None:
        """Read this bridge's reply stream for ever (Redis may come and go)."""
        import anyio

        last: bytes | str = "0-0"
        unread = 0
        delay = 0.05
        while True:
            try:
                got = await self.r.xread({self.reply: last}, count=256, block=10_000)
                delay = 0.05
            except Exception:
                await anyio.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            entries = _entries(got)
            for entry_id, fields in entries:
                last = entry_id
                await self._reply(fields)
            unread += len(entries)
            # Trimmed now and then, not after every read: one command less per job. Read
            # entries wait there meanwhile (at most _TRIM_EVERY; the stream expires anyway).
            if unread >= _TRIM_EVERY:
                with contextlib.suppress(Exception):
                    await self.r.xtrim(self.reply, minid=last, approximate=False)
                    unread = 0

    async def _reply(self, fields: Any) -> None:
        cid = (fields.get(b"job") or b"").decode("ascii", "replace")
        accepting = self._accepting.get(cid)
        if accepting is not None:
            await accepting.wait()
        mine = self.jobs.get(cid)
        if mine is None:
            return  # ended already (a rerun's second "done"), or never ours
        caller_id, streaming = mine
        if b"done" in fields:
            await self._answer(cid, caller_id, fields.get(b"answer"))
        elif streaming and b"chunk" in fields:
            attempt = int(fields.get(b"attempt") or 1)
            if attempt < self._attempt.get(cid, 0):
                return  # a node that was given up on, still writing
            self._attempt[cid] = attempt
            try:
                chunk = cluster.unpack(fields[b"chunk"])
            except proto.RemoteProtocolError:
                return
            if isinstance(chunk, proto.OutputChunk):
                seq = self._seq[cid]
                self._seq[cid] += 1
                await self._send(dataclasses.replace(chunk, id=caller_id, seq=seq))

    async def _answer(self, cid: str, caller_id: str, data: bytes | None) -> None:
        """Pass the job's answer on: the one inline in its ``done`` entry, else the stored
        one (a big answer rides only there)."""
        import anyio

        for _ in range(0 if data is not None else 50):  # Redis away a moment: it is there
            try:
                data = await self.r.get(cluster.result_key(cid))
                break
            except Exception:
                await anyio.sleep(0.1)
        self.jobs.pop(cid, None)
        self.ids.pop(caller_id, None)
        self._seq.pop(cid, None)
        self._attempt.pop(cid, None)
        try:
            answer = cluster.unpack(data) if data is not None else None
        except proto.RemoteProtocolError as e:
            answer = proto.ErrorReport(code="internal_error", id=caller_id,
                                       message=f"a node stored an unreadable answer: {e}")
        if not isinstance(answer, (proto.JobResult, proto.ErrorReport)):
            answer = proto.ErrorReport(code="internal_error", id=caller_id,
                                       message="the job's answer is gone from Redis (expired?)")
        await self._send(dataclasses.replace(answer, id=caller_id))

    # -- what the nodes announce ------------------------------------------

    async def _nodes(self) -> list[dict[str, Any]]:
        names = sorted(n.decode() for n in await self.r.smembers(cluster.NODES))
        if not names:
            return []
        records = await self.r.mget([cluster.node_key(n) for n in names])
        out = []
        for name, rec in zip(names, records, strict=True):
            if rec is None:
                with contextlib.suppress(Exception):
                    await self.r.srem(cluster.NODES, name)  # gone: its record expired
                continue
            node = cluster.node_record(rec)
            if node is not None:
                out.append(node)
        return out

    def _server_name(self, nodes: list[dict[str, Any]]) -> str:
        for node in nodes:
            welcome = _unpack(node.get("welcome"), proto.Welcome, None)
            if welcome is not None:
                return f"{welcome.server} (cluster at {self.where})"[:256]
        return f"sandboxd cluster at {self.where}"[:256]

    def _profiles(self, nodes: list[dict[str, Any]]) -> tuple[proto.ProfileInfo, ...]:
        for node in nodes:
            welcome = _unpack(node.get("welcome"), proto.Welcome, None)
            if welcome is not None:
                return welcome.profiles
        return ()

    async def _kill(self, ref: str) -> bool:
        """``ps`` lists a cluster job as ``<node>/cluster/<id>``: its cancel stops it."""
        cid = cluster.kill_target(ref)
        if cid is None:
            return False
        listed = any(j.id == ref for n in await self._nodes()
                     for j in _unpack(n.get("jobs"), proto.JobList, _NO_JOBS).jobs)
        if listed:
            await self._cancel([cid])
        return listed

    async def _stats(self) -> proto.ServerStats:
        """Every live node's counters added up, with the queue's length and oldest job."""
        nodes = await self._nodes()
        async with self.r.pipeline(transaction=False) as p:
            p.xlen(cluster.JOBS)
            p.xrange(cluster.JOBS, min="-", max="+", count=1)
            queue, oldest = await p.execute()
        now = time.time()
        age = max(0.0, now - int(oldest[0][0].split(b"-")[0]) / 1000) if oldest else 0.0
        return cluster.cluster_stats(nodes, queue, age, now)


_NO_JOBS = proto.JobList(jobs=())


class _JobPath:
    """The job's path on one raw connection: each submit is written together with the
    reply stream's blocked read (when none is waiting already), so Redis wakes once for
    both (docs/cluster.md, "Speed").

    Why not redis-py here: a pipeline's replies come back all at once, and the read's
    comes only when the job is answered; here one reader task hands each reply to its
    caller as it arrives (RESP2, hiredis's parser), so the submit's answer is not held
    back by the read queued behind it. The reply stream is read only while jobs are
    outstanding: an idle client costs Redis nothing. ``None`` from ``open`` for a URL it
    does not speak (``rediss://``, query options other than ``db``): the bridge then
    uses redis-py alone, as before.
    """

    def __init__(self, bridge: RedisBridge, host: str | None, port: int, path: str | None,
                 auth: tuple[str, ...], db: int) -> None:
        import collections

        self.bridge = bridge
        self._where = (host, port, path)
        self._setup = ([("AUTH", *auth)] if auth else []) + ([("SELECT", db)] if db else [])
        self._stream: Any = None
        self._reader: Any = None
        self._slots: collections.deque[Callable[[Any], Awaitable[None]]] = collections.deque()
        self._reading = False  # a blocked XREAD of the reply stream is outstanding
        self._last: bytes | str = "0-0"
        self._unread = 0
        self._sha = ""

    @classmethod
    def open(cls, bridge: RedisBridge) -> _JobPath | None:
        from urllib.parse import parse_qs, unquote, urlsplit

        u = urlsplit(bridge.url)
        query = parse_qs(u.query)
        if set(query) - {"db"} or u.scheme not in ("redis", "unix"):
            return None
        try:
            db = int(query["db"][0]) if "db" in query else \
                int(u.path.strip("/") or 0) if u.scheme == "redis" else 0
        except ValueError:
            return None
        password = unquote(u.password) if u.password else None
        auth: tuple[str, ...] = () if password is None else \
            (unquote(u.username), password) if u.username else (password,)
        if u.scheme == "redis":
            return cls(bridge, u.hostname or "localhost", u.port or 6379, None, auth, db)
        return cls(bridge, None, 0, u.path, auth, db) if u.path else None

    async def connect(self) -> None:
        """Connect (and authenticate): ``OSError`` or ``ConnectionError`` if Redis is not
        there, a ``ResponseError`` for a refused password."""
        import hashlib

        import anyio
        import hiredis

        host, port, path = self._where
        stream = await (anyio.connect_unix(path) if path is not None
                        else anyio.connect_tcp(host, port))
        reader = hiredis.Reader()
        try:
            for command in self._setup:
                await stream.send(cluster.resp_command(command))
                while (reply := reader.gets()) is False:
                    reader.feed(await stream.receive(1 << 16))
                if isinstance(reply, hiredis.ReplyError):
                    raise ConnectionError(f"Redis refused {command[0]}: {reply}")
        except BaseException:
            await stream.aclose()
            raise
        self._stream, self._reader = stream, reader
        self._sha = hashlib.sha1(cluster.SUBMIT_SCRIPT.encode()).hexdigest()
        self._send_lock = anyio.Lock()

    async def run(self) -> None:
        """Hand out replies in order, for ever; reconnect (with backoff) when Redis goes
        away, and read the reply stream again from where it was if jobs are waiting."""
        import anyio
        import hiredis

        delay = 0.05
        while True:
            try:
                if self._stream is None:
                    await self.connect()
                    delay = 0.05
                    if self.bridge.jobs:
                        await self._arm()
                while True:
                    while (reply := self._reader.gets()) is False:
                        data = await self._stream.receive(1 << 16)
                        self._reader.feed(data)
                    slot = self._slots.popleft()
                    await slot(_ReplyError(str(reply)) if isinstance(reply, hiredis.ReplyError)
                               else reply)
            except (OSError, ConnectionError, anyio.EndOfStream, anyio.BrokenResourceError,
                    anyio.ClosedResourceError, hiredis.ProtocolError):
                await self._lost()
                await anyio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.aclose()

    async def _lost(self) -> None:
        """The connection broke: callers waiting for a reply get an error; the reply
        stream is read again from ``_last`` on the next connection."""
        stream, self._stream = self._stream, None
        self._reading = False
        slots, self._slots = list(self._slots), type(self._slots)()
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.aclose()
        for slot in slots:
            with contextlib.suppress(Exception):
                await slot(ConnectionError("connection to Redis lost"))

    async def _write(self, commands: list[tuple[Any, ...]],
                     slots: list[Callable[[Any], Awaitable[None]]]) -> None:
        async with self._send_lock:  # one writer at a time; slots in the order written
            if self._stream is None:
                raise ConnectionError("not connected to Redis")
            self._slots.extend(slots)
            await self._stream.send(b"".join(cluster.resp_command(c) for c in commands))

    def _read_command(self) -> list[tuple[Any, ...]]:
        self._reading = True
        read = ("XREAD", "COUNT", 256, "BLOCK", 10_000, "STREAMS", self.bridge.reply, self._last)
        if self._unread < _TRIM_EVERY:
            return [read]
        # Trimmed now and then, not after every read: read entries wait there meanwhile (at
        # most _TRIM_EVERY; the stream expires anyway).
        self._unread = 0
        return [("XTRIM", self.bridge.reply, "MINID", self._last), read]

    async def _arm(self) -> None:
        commands = self._read_command()
        await self._write(commands, [_ignore] * (len(commands) - 1) + [self._on_read])

    async def _on_read(self, reply: Any) -> None:
        if isinstance(reply, BaseException):  # lost, or an error reply: read again later
            self._reading = False
            if isinstance(reply, _ReplyError):
                raise ConnectionError(f"reading the reply stream: {reply}")
            return
        entries = [(i, dict(zip(flat[::2], flat[1::2], strict=True)))
                   for i, flat in _entries(reply)]
        if entries:  # before anything awaits: a read sent meanwhile starts after these
            self._last = entries[-1][0]
            self._unread += len(entries)
        self._reading = False
        for _entry_id, fields in entries:
            await self.bridge._reply(fields)
        if self.bridge.jobs and not self._reading and self._stream is not None:
            await self._arm()

    async def submit(self, record: bytes) -> Any:
        """The submit script's reply; ``None`` when this path cannot take it now (a read
        is blocked on it: the caller uses its other connection)."""
        import anyio

        if self._reading or self._stream is None:
            return None
        args = (self.bridge.max_queue, record, self.bridge.submitter)
        got = anyio.Event()
        box: list[Any] = []

        async def on_reply(reply: Any) -> None:
            box.append(reply)
            got.set()

        read = self._read_command()
        await self._write([("EVALSHA", self._sha, 1, cluster.JOBS, *args), *read],
                          [on_reply, *[_ignore] * (len(read) - 1), self._on_read])
        await got.wait()
        reply = box[0]
        if isinstance(reply, _ReplyError) and str(reply).startswith("NOSCRIPT"):
            return None  # Redis restarted: the other connection loads the script again
        if isinstance(reply, BaseException):
            raise reply
        return reply


class _ReplyError(Exception):
    """An error reply from Redis."""


async def _ignore(_reply: Any) -> None:
    return None


def _entries(got: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """An ``XREAD`` of one stream (RESP2: ``[[key, [(id, fields), ...]]]``) as its entries."""
    return [e for _key, entries in got or () for e in entries]


def _unpack(data: Any, kind: type, default: Any) -> Any:
    ev = cluster.node_part({"x": data}, "x", kind)
    return default if ev is None else ev
