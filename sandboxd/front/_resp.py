"""A lean Redis connection on trio for the node's two hot commands: the blocked read of the
job stream and the answer script (sent together, pipelined, when they can: ``pipeline``).

Why not coredis for these too: under trio coredis costs 0.2-0.3 ms per command on this
machine (a writer and a reader task per connection, several event-loop turns per
command), against ~0.05 ms for one trio socket and hiredis's parser, and a cluster
job's latency has both of these commands in series (docs/cluster.md, "Speed"). Every
other command of the node (group creation, claims, heartbeats, cancels, stdin, the
hand-back) stays on coredis: they are off the job's path.

It speaks RESP2 to plain ``redis://`` and ``unix://`` URLs (user and password, ``/DB``
or ``?db=``); a URL it does not handle (``rediss://``: TLS, or other query options)
makes ``open_lean`` return ``None`` and the node uses coredis for these commands as well.
A connection is used by one task at a time (a lock); any failure or cancellation in
the middle of a command closes it (its reply would be out of step), and the next
command connects again. Failures surface as coredis's own ``ConnectionError`` /
``ResponseError``, which the node's retry loops already handle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import ResponseError

from sandboxd_protocol import cluster

__all__ = ["LeanRedis", "open_lean"]


def open_lean(url: str) -> LeanRedis | None:
    """A lean connection for ``url``, or ``None`` if the URL needs more than it does."""
    u = urlsplit(url)
    query = parse_qs(u.query)
    if set(query) - {"db"}:
        return None
    try:
        db = int(query["db"][0]) if "db" in query else int(u.path.strip("/") or 0) \
            if u.scheme == "redis" else 0
    except ValueError:
        return None
    user = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password else None
    if u.scheme == "redis":
        return LeanRedis(host=u.hostname or "localhost", port=u.port or 6379, path=None,
                         db=db, user=user, password=password)
    if u.scheme == "unix" and u.path:
        return LeanRedis(host=None, port=None, path=u.path, db=db, user=user,
                         password=password)
    return None


class LeanRedis:
    """One connection, one command at a time; reconnects on the next command after a
    failure."""

    def __init__(self, *, host: str | None, port: int | None, path: str | None, db: int,
                 user: str | None, password: str | None) -> None:
        self._host, self._port, self._path = host, port, path
        self._db, self._user, self._password = db, user, password
        self._stream: trio.abc.Stream | None = None
        self._reader: Any = None
        self._lock = trio.Lock()
        self._shas: dict[str, str] = {}

    async def _connect(self) -> None:
        try:
            if self._path is not None:
                stream: trio.abc.Stream = await trio.open_unix_socket(self._path)
            else:
                assert self._host is not None and self._port is not None
                stream = await trio.open_tcp_stream(self._host, self._port)
        except OSError as e:
            raise RedisConnectionError(f"cannot connect to Redis: {e}") from None
        self._stream = stream
        self._reader = hiredis.Reader()
        if self._password is not None:
            auth = ("AUTH", self._user, self._password) if self._user else \
                ("AUTH", self._password)
            await self._roundtrip(auth)
        if self._db:
            await self._roundtrip(("SELECT", self._db))

    async def _reply(self) -> Any:
        assert self._stream is not None
        while True:
            reply = self._reader.gets()
            if reply is not False:
                return reply
            data = await self._stream.receive_some(1 << 16)
            if not data:
                raise RedisConnectionError("Redis closed the connection")
            self._reader.feed(data)

    async def _roundtrip(self, args: tuple[Any, ...]) -> Any:
        assert self._stream is not None
        await self._stream.send_all(cluster.resp_command(args))
        reply = await self._reply()
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def execute(self, *args: Any) -> Any:
        """One command's reply (RESP2, bytes); ``ResponseError`` for an error reply."""
        async with self._lock:
            try:
                if self._stream is None:
                    await self._connect()
                return await self._roundtrip(args)
            except ResponseError:
                raise  # the connection is in step: a whole reply was read
            except BaseException as e:  # cut mid-command: the next reply would be this one's
                await self.aclose()
                if isinstance(e, (trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
                    raise RedisConnectionError(f"connection to Redis lost: {e}") from None
                raise

    async def pipeline(self, commands: list[tuple[Any, ...]],
                       on_reply: Callable[[int, Any], None]) -> None:
        """Send ``commands`` in one write and hand each reply to ``on_reply(index, reply)``
        as it arrives (an error reply as a ``ResponseError`` value, not raised).

        Why: Redis reads them in one event and answers each at once, so a node's answers
        and its next blocked read of the job stream cost Redis one wake-up, and the
        answers' callers hear back before the read returns. A failure or cancellation
        midway closes the connection and raises; replies handed out before it stand.
        """
        async with self._lock:
            try:
                if self._stream is None:
                    await self._connect()
                assert self._stream is not None
                await self._stream.send_all(b"".join(cluster.resp_command(c) for c in commands))
                for i in range(len(commands)):
                    reply = await self._reply()
                    on_reply(i, ResponseError(str(reply))
                             if isinstance(reply, hiredis.ReplyError) else reply)
            except BaseException as e:
                await self.aclose()
                if isinstance(e, (trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
                    raise RedisConnectionError(f"connection to Redis lost: {e}") from None
                raise

    def script_args(self, source: str, keys: list[Any], args: list[Any]) -> tuple[Any, ...]:
        """``EVALSHA`` of ``source`` as a command for ``pipeline``; on a ``NOSCRIPT`` reply
        (Redis restarted: its script cache is empty) call ``script``, which sends it."""
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode()).hexdigest()
        return ("EVALSHA", sha, len(keys), *keys, *args)

    async def script(self, source: str, keys: list[Any], args: list[Any]) -> Any:
        """``EVALSHA``, or ``EVAL`` once where Redis lost its script cache (a restart)."""
        try:
            return await self.execute(*self.script_args(source, keys, args))
        except ResponseError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", source, len(keys), *keys, *args)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
