"""Which worker an HTTP id belongs to, and the relay of a request to that worker
(``workers = N``, docs/configuration.md "Workers").

Strategy: every worker serves HTTP on the daemon's one listening socket, so a
connection lands on any of them; but what HTTP keeps between requests (a Judge0
submission, a ``/v1`` background job, an uploaded workspace) lives in the memory
of the worker that made it. So the ids those have say their worker: a worker
mints them as random UUIDs whose first 32 bits are congruent to its index modulo
the number of workers (still UUID v4: the version and variant bits are further
on). A request naming an id of another worker is relayed to that worker
unchanged (method, path, query, headers, body) over its private HTTP socket
(``<state_dir>/sandboxd-worker-<k>-http.sock``, mode 0600: only the daemon's
user), and that worker's answer is streamed back (a followed log too). A
Judge0 batch read asks each worker for its own tokens and merges the answers
in the order asked. The relay is one more local round trip over a kept
connection (0.7-1.1 ms more at p50 here, a Judge0 token's read), only for
requests that name an id; submissions and synchronous jobs run where they land.
A worker that cannot be reached (restarting) has lost what it held: the request
is then answered here, as an unknown id.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping

import h11
import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

HEADER = b"sandboxd-relayed"
"""Set on a relayed request: its worker answers it itself, whatever the id says."""

_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
        b"proxy-connection", b"content-length", b"host", HEADER}
_SPACE = 1 << 32


class Router:
    """Worker ``index`` of ``count``; ``paths``: every worker's private HTTP socket."""

    def __init__(self, index: int, count: int, paths: Mapping[int, str]) -> None:
        self.index = index
        self.count = count
        self.paths = dict(paths)
        # Connections to each sibling kept open between relays (HTTP keep-alive): a new
        # one per relay cost ~1 ms more here, the accept and hypercorn's set-up of it.
        self._idle: dict[int, list[tuple[trio.SocketStream, h11.Connection]]] = {}

    def mint(self) -> uuid.UUID:
        """A random UUID v4 that ``owner`` maps to this worker."""
        u = uuid.uuid4()
        head = u.int >> 96
        head = head - head % self.count + self.index
        if head >= _SPACE:
            head -= self.count
        return uuid.UUID(int=head << 96 | (u.int & (1 << 96) - 1))

    def owner(self, ident: str) -> int | None:
        """The worker ``ident`` (a UUID, with or without dashes) was minted by; None for
        what is not one (answered where it lands: unknown)."""
        head = ident[:8]
        if len(head) != 8 or len(ident) not in (32, 36):
            return None
        try:
            return int(head, 16) % self.count
        except ValueError:
            return None

    def elsewhere(self, request: Request, ident: object) -> int | None:
        """The worker to relay ``request`` to, for ``ident``: None if it is this one's (or
        the request was relayed here already)."""
        if not isinstance(ident, str) or request.headers.get(HEADER.decode()) is not None:
            return None
        k = self.owner(ident)
        return k if k is not None and k != self.index else None

    async def relay(self, k: int, request: Request, target: bytes | None = None,
                    body: bytes | None = None, drop: tuple[bytes, ...] = ()) -> Response | None:
        """Worker ``k``'s answer to ``request`` (to ``target`` instead of its own path and
        query, with ``body`` and without the headers ``drop``, if given), streamed; None if
        ``k`` cannot be reached."""
        if body is None:
            body = await request.body()
        if target is None:
            scope = request.scope
            target = scope.get("raw_path") or scope["path"].encode()
            if scope.get("query_string"):
                target += b"?" + scope["query_string"]
        headers = [(n, v) for n, v in request.scope["headers"]
                   if n.lower() not in _HOP and n.lower() not in drop]
        headers += [(b"host", b"sandboxd-worker"), (HEADER, b"1"),
                    (b"content-length", str(len(body)).encode())]
        got = await self._exchange(k, request.method, target, headers, body)
        if got is None:
            return None
        stream, conn, head = got
        pool = self._idle[k]

        async def chunks() -> AsyncIterator[bytes]:
            done = False
            try:
                while True:
                    ev = await next_event(conn, stream)
                    if isinstance(ev, h11.Data):
                        yield bytes(ev.data)
                    elif isinstance(ev, h11.EndOfMessage | h11.ConnectionClosed):
                        done = isinstance(ev, h11.EndOfMessage)
                        return
            finally:
                if done and conn.our_state is h11.DONE and conn.their_state is h11.DONE \
                        and len(pool) < 8:
                    conn.start_next_cycle()
                    pool.append((stream, conn))
                else:
                    await stream.aclose()

        answer = {n.decode("latin-1"): v.decode("latin-1") for n, v in head.headers
                  if n.lower() not in _HOP or n.lower() == b"content-length"}
        return StreamingResponse(chunks(), status_code=head.status_code, headers=answer)

    async def _exchange(self, k: int, method: str, target: bytes,
                        headers: list[tuple[bytes, bytes]], body: bytes,
                        ) -> tuple[trio.SocketStream, h11.Connection, h11.Response] | None:
        """Send one request to worker ``k`` and read its answer's head, on a kept
        connection if there is one (one the sibling closed meanwhile is dropped for the
        next), else a new one; None if ``k`` cannot be reached."""
        idle = self._idle.setdefault(k, [])
        while True:
            kept = bool(idle)
            if kept:
                stream, conn = idle.pop()
            else:
                try:
                    stream = await trio.open_unix_socket(self.paths[k])
                except OSError:
                    return None
                conn = h11.Connection(h11.CLIENT)
            try:
                await stream.send_all(b"".join([
                    conn.send(h11.Request(method=method, target=target, headers=headers)) or b"",
                    (conn.send(h11.Data(data=body)) if body else b"") or b"",
                    conn.send(h11.EndOfMessage()) or b""]))
                head = await next_event(conn, stream)
                if isinstance(head, h11.Response):
                    return stream, conn, head
                raise h11.RemoteProtocolError("no response", 502)
            except (OSError, trio.BrokenResourceError, h11.ProtocolError):
                await stream.aclose()
                if not kept:
                    return None

    async def answer(self, request: Request, ident: object) -> Response | None:
        """The answer of the worker that holds ``ident``, if that is another one and it
        can be reached; None: this worker answers."""
        k = self.elsewhere(request, ident)
        return await self.relay(k, request) if k is not None else None


async def next_event(conn: h11.Connection, stream: trio.abc.ReceiveStream) -> object:
    """``conn``'s next event, reading ``stream`` as it needs (its end: ConnectionClosed,
    or h11's ProtocolError if the peer closed mid-message)."""
    while True:
        ev = conn.next_event()
        if ev is not h11.NEED_DATA:
            return ev
        conn.receive_data(await stream.receive_some(65536))  # b"": its end
