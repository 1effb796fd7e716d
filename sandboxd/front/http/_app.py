"""The HTTP listener: hypercorn (trio worker) serving one starlette app of every API.

Strategy: one ASGI callable, ``HttpFront``, wraps the app and applies, before any
API sees a request, the rules of the transport, so that every API (``/v1``,
Judge0's, Piston's) gets them alike:

- a route answers with and without a trailing slash (the path is normalized);
- the token (``Authorization: Bearer``, a bare ``Authorization: TOKEN`` as
  Piston's clients send it, or ``X-Auth-Token`` as header or query parameter,
  or ``token`` in the query for WebSocket clients that cannot set headers) unless
  the listener is open (a loopback address with ``http_loopback_open``): 401 ``unauthorized``;
- at most ``http_max_connections`` requests and WebSockets at once (503
  ``server_busy``), and ``http_token_concurrency`` per token (429
  ``too_many_requests``);
- the body read whole before the API runs, in chunks, never past
  ``http_max_body`` (413 ``frame_too_large``) nor past the budget all bodies
  share (503), within ``http_request_timeout`` (408 ``timeout``, then the
  connection closes): a slow or huge upload never reaches an API.

What hypercorn bounds itself: headers (their size; their time, the keep-alive
timeout), idle connections, WebSocket message size. A client that stops
reading is dropped by the kernel after ``http_send_timeout`` (TCP_USER_TIMEOUT
on the listening socket, which accepted sockets inherit), since hypercorn's
sends cannot be cancelled.

APIs are modules of this package listed in ``APIS``, each exporting
``routes(ctx)``; their routes are written without a trailing slash.
"""

from __future__ import annotations

import hmac
import importlib
import logging
import os
import socket
import types
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from itertools import chain
from math import inf
from typing import Any
from urllib.parse import parse_qs

import h11
import hypercorn.protocol
import hypercorn.trio.run
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, EndBody
from hypercorn.protocol.events import Response as ResponseEvent
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import TCPServer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount, Route

from sandboxd.config import Config, is_loopback, split_address
from sandboxd.front._siblings import BalancedListener, DaemonView, Siblings
from sandboxd.log import event
from sandboxd.result import SandboxError
from sandboxd.service import JobService
from sandboxd_protocol import ErrorCode

from . import _metrics
from ._common import (
    CONNECTION,
    TOKEN_SCOPE_KEY,
    Connection,
    FrontContext,
    Gate,
    HttpError,
    error_response,
)
from ._route import Router

APIS: tuple[str, ...] = ("v1", "judge0", "piston", "playground")
"""The API modules of this package that the listener mounts (each: ``routes(ctx)``)."""

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WEBSOCKET"})
# Paths that need no token and take no per-token slot: a load balancer's probe, and the
# playground's page (static; the API calls it makes need the token).
OPEN_PATHS = frozenset({"/v1/health", "/playground"})
# Routes that read their own body as it comes (a workspace archive may be hundreds of MB,
# past http_max_body): the route bounds its size and time itself (_workspaces.py).
STREAMED_BODIES = frozenset({("POST", "/v1/workspaces")})
# A request whose body is below this is never refused for the shared budget.
BUDGET_EXEMPT = 256 << 10
# After refusing a body (413, 408), how long its rest is read and dropped, so that the
# client reads the answer rather than a reset connection.
LINGER = 2.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def bind(address: str, send_timeout: float) -> socket.socket:
    """The listening socket for ``HOST:PORT`` (port 0: any free one), or ``SandboxError``.

    Bound here rather than by hypercorn so that the daemon knows the real port
    before it says ``ready``, and so that every accepted connection inherits
    TCP_USER_TIMEOUT: hypercorn's sends are shielded from cancellation, and only
    the kernel can end one to a client that never reads.
    """
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise SandboxError(f"cannot listen for HTTP on {address}: {e.strerror}") from None
    family, _type, _proto, _name, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                        max(1, int(send_timeout * 1000)))
        sock.bind(sockaddr)
        sock.listen(512)
    except OSError as e:
        sock.close()
        raise SandboxError(f"cannot listen for HTTP on {address}: {e.strerror}") from None
    return sock


def address_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def presented_token(scope: Scope, headers: dict[str, str] | None = None) -> str | None:
    """The token a request presents, wherever it is allowed to put it; ``None`` if none
    (``headers``: the request's, as ``_headers`` gives them, if already at hand)."""
    if headers is None:
        headers = _headers(scope)
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if auth.strip() and not value.strip():  # a bare key, as Piston's clients send theirs
        return auth.strip()
    if headers.get("x-auth-token"):
        return headers["x-auth-token"].strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    for name in ("X-Auth-Token", *(("token",) if scope["type"] == "websocket" else ())):
        if query.get(name):
            return query[name][0]
    return None


class HttpFront:
    """The listener's state (counts, budgets, metrics) and the ASGI callable over the app."""

    def __init__(self, cfg: Config, service: JobService,
                 daemon: DaemonView | None = None, router: Router | None = None,
                 siblings: Siblings | None = None) -> None:
        self.cfg = cfg
        self.service = service
        self.siblings = siblings  # with workers: how the shared socket's accepts balance
        # With workers: ps, stats, kill and /metrics ask every worker (front/_siblings.py),
        # and a request naming another worker's stored result goes there (_route.py).
        self.daemon = daemon
        host, _port = split_address(cfg.http)
        self.open = cfg.http_loopback_open and is_loopback(host)
        self.tokens = tuple(t.encode() for t in cfg.http_tokens)
        self.ctx = FrontContext(service=service, cfg=cfg, gate=Gate(cfg.http_token_concurrency),
                                daemon=daemon, router=router)
        self.buffered = 0
        self.budget = cfg.http_max_buffered or 4 * cfg.http_max_body
        # route, method, status: in the service's metrics, which a worker's siblings read
        self.requests: Counter[tuple[str, str, str]] = service.metrics.http
        self.stopping = trio.Event()
        self.stopped = trio.Event()
        self.app = self._build()

    @property
    def in_flight(self) -> int:
        return self.service.metrics.http_in_flight

    @in_flight.setter
    def in_flight(self, n: int) -> None:
        self.service.metrics.http_in_flight = n

    def _build(self) -> Starlette:
        routes = [Route("/metrics", self._metrics, methods=["GET"])]
        for name in APIS:
            routes += importlib.import_module(f"{__package__}.{name}").routes(self.ctx)
        app = Starlette(routes=routes, exception_handlers={
            HTTPException: self._http_exception, HttpError: self._http_error,
            Exception: self._crash})
        app.router.redirect_slashes = False  # the listener strips them instead
        # The routes of a fixed path (every API's busy ones: /v1/jobs, /submissions), by
        # path and method, for _dispatch; and the handlers Starlette's ExceptionMiddleware
        # would give them.
        self._direct: dict[tuple[str, str], tuple[Route, str]] = {}
        for path, method in _fixed_paths(routes):
            found = _first_match(routes, path, method)
            if found is not None:  # the route Starlette's router would pick, and its mount's
                self._direct[path, method] = found
        self._handlers: dict[Any, Any] = {HTTPException: self._http_exception,
                                          HttpError: self._http_error}
        return app

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app for an HTTP request, past Starlette's own layers where the route is
        known from the path alone.

        Starlette runs every request through ServerErrorMiddleware, ExceptionMiddleware
        and its router, a coroutine and a closure or two each, ~60 us of every job's CPU
        here. Here: the route's own handler, with what those layers put in the scope
        (the exception handlers; app, router, route, endpoint, path parameters) and
        what ServerErrorMiddleware does with an exception (``_crash``'s answer if
        nothing was sent yet, then raised again for hypercorn's log), so that the
        answer is the same either way.
        """
        direct = self._direct.get((scope["path"], scope["method"]))
        if direct is None:
            return await self.app(scope, receive, send)
        route, mount = direct
        if mount:  # as Mount.matches leaves it: the route's root path is the mount's
            root = scope.get("root_path", "")
            scope.update(app_root_path=scope.get("app_root_path", root),
                         root_path=root + mount)
        scope.update(app=self.app, router=self.app.router, route=route,
                     endpoint=route.endpoint, path_params={})
        scope["starlette.exception_handlers"] = (self._handlers, {})
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await route.app(scope, receive, sending)
        except Exception as exc:
            if not started:
                response = await self._crash(Request(scope), exc)
                await response(scope, receive, send)
            raise

    # ------------------------------------------------------------ errors

    @staticmethod
    async def _http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_response(ErrorCode.UNKNOWN_MESSAGE,
                                  f"no such route: {request.url.path}", 404)
        if exc.status_code == 405:
            return error_response(ErrorCode.UNEXPECTED_MESSAGE,
                                  f"{request.method} is not allowed on {request.url.path}", 405,
                                  headers=dict(exc.headers or {}))
        return error_response(ErrorCode.MALFORMED, str(exc.detail), exc.status_code)

    @staticmethod
    async def _http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpError)
        return error_response(exc.code, exc.message, exc.status)

    @staticmethod
    async def _crash(request: Request, exc: Exception) -> Response:
        event("http_crashed", logging.ERROR, path=request.url.path, error=repr(exc))
        return error_response(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------ /metrics

    async def _metrics(self, request: Request) -> Response:
        if self.daemon is None:
            return Response(_metrics.render(self), media_type=_metrics.CONTENT_TYPE)
        st, metrics = await self.daemon.daemon_stats_and_metrics()
        return Response(_metrics.render(self, st, metrics, workers=st.counters),
                        media_type=_metrics.CONTENT_TYPE)

    # ------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            return await self.app(scope, receive, send)
        if kind not in ("http", "websocket"):
            return
        scope = dict(scope)
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope["path"] = path.rstrip("/") or "/"
        status = ""

        async def sent(message: Message) -> None:
            nonlocal status
            t = message["type"]
            if t in ("http.response.start", "websocket.http.response.start"):
                status = str(message["status"])
            elif t == "websocket.accept":
                status = "101"
            elif t == "websocket.close" and not status:
                status = "403"
            await send(message)

        try:
            await self._serve(scope, receive, sent)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET") if kind == "http" else "WEBSOCKET"
            if method not in METHODS:  # a label per made-up method would grow for ever
                method = "other"
            self.requests[label, method, status or "0"] += 1

    async def _refuse(self, scope: Scope, send: Send, code: str, message: str,
                      status: int | None = None, close: bool = False) -> None:
        headers = {"Connection": "close"} if close else None
        response = error_response(code, message, status, headers)
        if scope["type"] == "websocket":  # the denial response extension, else a close
            if "websocket.http.response" in scope.get("extensions", {}):
                await send({"type": "websocket.http.response.start",
                            "status": response.status_code, "headers": response.raw_headers})
                await send({"type": "websocket.http.response.body", "body": response.body})
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    def _authorized(self, scope: Scope, token: str | None) -> bool:
        if scope["path"] == "/metrics" and self.cfg.metrics_token:
            return token is not None and hmac.compare_digest(
                token.encode(), self.cfg.metrics_token.encode())
        if token is None:
            return self.open
        return any(hmac.compare_digest(token.encode(), t) for t in self.tokens)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.cfg
        if self.in_flight >= cfg.http_max_connections:
            return await self._deny(scope, receive, send, ErrorCode.SERVER_BUSY,
                                    "too many requests at once (http_max_connections="
                                    f"{cfg.http_max_connections}); try again later")
        self.in_flight += 1
        try:
            path = scope["path"]
            headers = _headers(scope)  # once: the body's length is read from them too
            token = presented_token(scope, headers)
            if path not in OPEN_PATHS and not self._authorized(scope, token):
                what = "a valid token" if token is None or path != "/metrics" or not \
                    cfg.metrics_token else "the metrics token"
                return await self._deny(scope, receive, send, ErrorCode.UNAUTHORIZED,
                                        f"{what} is required (Authorization: Bearer TOKEN)"
                                        if token is None else "the token is not valid")
            key = token or ""
            gated = path not in OPEN_PATHS and path != "/metrics"
            if gated and not self.ctx.gate.acquire(key):
                return await self._deny(scope, receive, send, ErrorCode.TOO_MANY_REQUESTS,
                                        "too many requests in flight for this token "
                                        f"(http_token_concurrency="
                                        f"{cfg.http_token_concurrency})")
            try:
                scope[TOKEN_SCOPE_KEY] = key
                if scope["type"] == "websocket" or (
                        scope.get("method"), path) in STREAMED_BODIES:
                    return await self.app(scope, receive, send)
                held = 0
                try:
                    body = await self._read_body(scope, receive, send, headers)
                    if body is None:
                        return
                    held = len(body)
                    await self._dispatch(scope, _replay(body, receive), send)
                finally:
                    self.buffered -= held
            finally:
                if gated:
                    self.ctx.gate.release(key)
        finally:
            self.in_flight -= 1

    async def _deny(self, scope: Scope, receive: Receive, send: Send, code: str,
                    message: str) -> None:
        """Refuse a request before its body is read: a WebSocket gets its denial; an HTTP
        request its answer and a close, its body read and dropped meanwhile
        (``_refuse_body``). Answered with the body unread and the connection kept, a
        request whose body never came held its connection for ever, past every timeout
        (found by fuzz/fuzz_daemon.py, with a flood of requests past
        ``http_max_connections``)."""
        if scope["type"] == "websocket":
            await self._refuse(scope, send, code, message)
        else:
            await self._refuse_body(scope, receive, send, code, message)

    async def _refuse_body(self, scope: Scope, receive: Receive, send: Send, code: str,
                           message: str) -> None:
        """Answer a request whose body is refused, reading and dropping the rest meanwhile.

        Reading on matters: hypercorn hands the body over through a short queue,
        and closing the connection after the answer waits for room in it (for
        the disconnect message); a full queue nobody reads would hang the send.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_linger, receive)
            await self._refuse(scope, send, code, message, close=True)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send,
                         headers: dict[str, str]) -> bytes | None:
        """The whole body; or ``None`` once the client is answered (or gone).

        The bytes count against the shared budget as they arrive; the caller
        gives back ``len(body)`` when the request ends.
        """
        cfg = self.cfg
        cap = cfg.http_max_body
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            await self._refuse_body(scope, receive, send, ErrorCode.FRAME_TOO_LARGE,
                                    f"the body ({length} bytes) is over http_max_body ({cap} "
                                    "bytes)")
            return None
        chunks: list[bytes] = []
        size = 0
        refusal: tuple[str, str] | None = None
        try:
            with trio.move_on_after(cfg.http_request_timeout) as late:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    if size + len(chunk) > cap:
                        refusal = (ErrorCode.FRAME_TOO_LARGE,
                                   f"the body is over http_max_body ({cap} bytes)")
                        break
                    if (size + len(chunk) > BUDGET_EXEMPT
                            and self.buffered + len(chunk) > self.budget):
                        refusal = (ErrorCode.SERVER_BUSY, "too many request bodies in flight; "
                                   "send it again later")
                        break
                    if chunk:
                        chunks.append(chunk)
                        size += len(chunk)
                        self.buffered += len(chunk)
                    if not message.get("more_body", False):
                        body, size = b"".join(chunks), 0  # the caller gives it back
                        return body
            if late.cancelled_caught:
                event("http_body_timeout", logging.WARNING, path=scope["path"], received=size)
                await self._refuse_body(scope, receive, send, ErrorCode.TIMEOUT, "the body did "
                                        f"not arrive within {cfg.http_request_timeout:g} s")
                return None
            assert refusal is not None
            await self._refuse_body(scope, receive, send, *refusal)
            return None
        finally:
            self.buffered -= size  # refused or gone: its bytes leave the budget now

    # ------------------------------------------------------------ serving

    def hypercorn_config(self, *socks: socket.socket) -> HypercornConfig:
        cfg = self.cfg
        hc = HypercornConfig()
        hc.bind = [f"fd://{s.detach()}" for s in socks]  # hypercorn's from now on
        hc.keep_alive_timeout = cfg.http_keepalive_timeout
        hc.graceful_timeout = cfg.grace_period + 2.0
        hc.websocket_max_message_size = cfg.http_max_body
        hc.h11_max_incomplete_size = 64 << 10
        hc.max_app_queue_size = 4
        hc.backlog = 512
        hc.accesslog = None
        quiet = logging.getLogger("sandboxd.http.hypercorn")
        quiet.setLevel(logging.WARNING)
        if not any(isinstance(f, _ErrorFields) for f in quiet.filters):
            quiet.addFilter(_ErrorFields())
        hc.errorlog = quiet
        return hc

    async def serve(self, sock: socket.socket, private: socket.socket | None = None, *,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on ``sock`` (and a worker's ``private`` socket, for its siblings' relays)
        until ``stop()``; ``task_status.started`` with ``sock``'s address.

        After ``stop()``: no new connections, idle ones closed, requests in
        flight get the grace period; background jobs run on until they end (the
        daemon's drain bounds them, and its cancellation ends them).
        """
        global _SIBLINGS, _SHARED_FD
        address = address_of(sock)
        if self.siblings is not None:
            _SIBLINGS, _SHARED_FD = self.siblings, sock.fileno()
        config = self.hypercorn_config(sock, *([private] if private is not None else []))
        try:
            async with trio.open_nursery() as nursery:
                self.ctx.nursery = nursery
                await nursery.start(partial(hypercorn_serve, self, config,
                                            shutdown_trigger=self.stopping.wait))
                task_status.started(address)
        finally:
            self.stopped.set()

    def stop(self) -> None:
        self.stopping.set()


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # the leaf says where; trio's nurseries do not
    return exc


def _where(exc: BaseException) -> str:
    """``file.py:line`` of the innermost frame of ``exc``'s traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}" \
        if tb is not None else "?"


class _ContainedTCPServer(TCPServer):
    """hypercorn's connection handler, with a failure of its own ending its connection
    only.

    hypercorn runs every connection's handler in one nursery, beside the
    listener: an exception out of one (a bug in hypercorn's protocol code, which
    a client can trigger) ends them all, and the daemon with them. Found by
    fuzz/fuzz_daemon.py with hypercorn 0.18: a WebSocket text message over
    ``websocket_max_message_size`` leaves its partial text in the connection's
    buffer, and a binary message after it is written into that text buffer
    (``TypeError``). The connection is closed (``TCPServer.run``'s own
    ``finally``), its app task cancelled (a job of it with it), and the failure
    logged; errors of the app itself never get here (hypercorn logs them,
    "Error in ASGI Framework").
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.idle_task = _IdleTimer(self)  # type: ignore[assignment]
        self.connection = Connection()

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:  # the client's side is at its end (or broken): say so to its requests
            self.idle_task.end()  # type: ignore[attr-defined]
            self.connection.close()

    async def run(self) -> None:
        CONNECTION.set(self.connection)  # this task's context, which its requests' copy
        # A worker's connection count, which its siblings balance accepts by; not a
        # sibling's relay (a Unix socket), which lands here by its id, not by choice.
        counted = _SIBLINGS is not None and self.stream.socket.family != socket.AF_UNIX
        if counted:
            _SIBLINGS.http_connections(+1)  # type: ignore[union-attr]
        try:
            await super().run()
        except Exception as e:  # a group too, unless it holds a Cancelled
            leaf = _leaf(e)
            event("http_connection_failed", logging.WARNING, error=repr(leaf)[:300],
                  at=_where(leaf))
        finally:
            if counted:
                _SIBLINGS.http_connections(-1)  # type: ignore[union-attr]


hypercorn.trio.run.TCPServer = _ContainedTCPServer  # type: ignore[misc]

# With workers: the siblings, and the shared HTTP socket's descriptor, for which
# hypercorn's accept loop gets a ``BalancedListener`` (as the msgpack sockets have): a
# worker serving more connections than a sibling lets that sibling take the next one
# first. hypercorn makes its listeners itself, with ``trio.SocketListener`` looked up
# on the ``trio`` its run module imported: that name alone is given another meaning.
_SIBLINGS: Siblings | None = None
_SHARED_FD = -1


class _TrioForHypercorn(types.ModuleType):
    """trio, as hypercorn.trio.run sees it: its own but for ``SocketListener``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)

    @staticmethod
    def SocketListener(sock: trio.socket.SocketType) -> trio.abc.Listener[Any]:
        if _SIBLINGS is not None and sock.fileno() == _SHARED_FD:
            # on a descriptor of its own (the same listening socket): hypercorn's
            # socket object closes its own when it ends
            return BalancedListener(socket.socket(fileno=os.dup(_SHARED_FD)), _SIBLINGS)
        return trio.SocketListener(sock)


hypercorn.trio.run.trio = _TrioForHypercorn("trio")  # type: ignore[attr-defined]


class _IdleTimer:
    """hypercorn's keep-alive timer (its ``TrioSingleTask`` running
    ``TCPServer._idle_timeout``), as one task per connection whose deadline moves.

    hypercorn stops the timer when a request comes and starts it again when the
    connection is idle, each time a task cancelled and a new one started: ~90 us
    of every request's CPU here (py-spy, bench/bench_http.py), about a tenth of
    what HTTP adds to a job. The behaviour is the same: the connection closes
    after ``keep_alive_timeout`` idle, or once idle after the server's shutdown
    began; never while a request is in progress.
    """

    def __init__(self, server: TCPServer) -> None:
        self.server = server
        self.scope: trio.CancelScope | None = None
        self.idle = False
        self.terminated = False
        self.ended = False

    async def restart(self, task_group: Any, action: Any) -> None:
        self.idle = True
        if self.scope is None:
            self.scope = trio.CancelScope()
            task_group._nursery.start_soon(self._watch)
        self.scope.deadline = -inf if self.terminated else \
            trio.current_time() + self.server.config.keep_alive_timeout

    async def stop(self) -> None:
        self.idle = False
        if self.scope is not None:
            self.scope.deadline = inf

    def end(self) -> None:
        """The connection's reading is over (the client closed it, or it broke): nothing
        is left to time, and the connection closes on its own way out. (hypercorn's
        timer, stopped while a request runs, is never started again after such an end;
        one that runs ends at its deadline.)"""
        self.ended = True
        if self.scope is not None:
            self.scope.cancel()

    async def _watch(self) -> None:
        assert self.scope is not None
        with self.scope:  # ends at the deadline, while idle
            await self.server.context.terminated.wait()
            self.terminated = True
            if not self.idle:
                await trio.sleep_forever()  # until idle: restart() ends it at once
        if not self.ended:
            with trio.CancelScope(shield=True):
                await self.server._initiate_server_close()


class _CoalescingH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, writing a response's head together with its first
    body bytes, and not writing the empty end of a response with a length.

    hypercorn writes the head, the body and the end each on its own: three sends
    (one empty) for a JSON answer, a system call and a wake-up of the client apiece.
    The bytes on the wire are the same; hypercorn (``HTTPStream``) sends the head
    only when the first body message (or the end) is there, so holding it back
    delays nothing.
    """

    _head: bytes | None = None

    def _bytes(self, event: Any) -> bytes:
        try:
            return self.connection.send(event) or b""
        except h11.LocalProtocolError:  # as hypercorn's _send_h11_event
            if self.connection.their_state != h11.ERROR:
                raise
            return b""

    async def stream_send(self, event: Any) -> None:
        if isinstance(event, ResponseEvent) and event.status_code >= 200:
            headers = list(chain(event.headers, self.config.response_headers("h11")))
            if self.keep_alive_requests >= self.config.keep_alive_max_requests:
                headers.append((b"connection", b"close"))
            self._head = self._bytes(h11.Response(headers=headers,
                                                  status_code=event.status_code))
        elif isinstance(event, Body | EndBody):
            head, self._head = self._head or b"", None
            data = head + self._bytes(h11.Data(data=event.data) if isinstance(event, Body)
                                      else h11.EndOfMessage())
            if data:
                await self.send(RawData(data=data))
        else:
            await super().stream_send(event)


hypercorn.protocol.H11Protocol = _CoalescingH11Protocol  # type: ignore[misc]


class _ErrorFields(logging.Filter):
    """Puts the exception of a hypercorn error line ("Error in ASGI Framework") into the
    line's fields: the daemon's one-line format drops ``exc_info``, which left such a
    line with nothing to say what failed, or where."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = _leaf(record.exc_info[1])
            record.fields = {**getattr(record, "fields", {}), "error": repr(exc)[:500],
                             "at": _where(exc)}
            record.exc_info = None
            record.exc_text = None
        return True


def _fixed_paths(routes: list[Any], prefix: str = "") -> list[tuple[str, str]]:
    """(path, method) of every route without path parameters, in mounts too."""
    out = []
    for r in routes:
        if isinstance(r, Route) and not r.param_convertors:
            out += [(prefix + r.path, method) for method in r.methods or ()]
        elif isinstance(r, Mount) and not r.param_convertors.keys() - {"path"}:
            out += _fixed_paths(r.routes, prefix + r.path)
    return out


def _first_match(routes: list[Any], path: str, method: str,
                 prefix: str = "") -> tuple[Route, str] | None:
    """The route of a fixed path that Starlette's router picks for ``method path`` (the
    first full match, through mounts), with the path of the mount it is in ("": none);
    ``None`` if it would pick another kind of route (a partial match, an app)."""
    scope = {"type": "http", "path": path, "root_path": prefix, "method": method}
    for r in routes:
        match, child = r.matches(scope)
        if match is Match.FULL:
            if isinstance(r, Route) and not r.param_convertors:
                return r, prefix
            if isinstance(r, Mount) and not r.param_convertors.keys() - {"path"}:
                return _first_match(r.routes, path, method, child["root_path"])
            return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body once, then the client's own messages (the
    disconnect an API may watch for)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _linger(receive: Receive) -> None:
    """Read and drop what is left of a refused body, until the client is gone or for
    ``LINGER`` seconds at most."""
    with trio.move_on_after(LINGER):
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
