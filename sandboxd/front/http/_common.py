"""What the HTTP APIs share besides ``HttpContext``: errors as JSON, text-or-base64 fields,
and the listener's per-token gate and background nursery.

Errors carry the msgpack protocol's codes (PROTOCOL.md §7), so a client sees the
same ``unknown_profile`` or ``server_busy`` whichever door it used; ``STATUS``
maps each code to its HTTP status, in one place.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse

from sandboxd_protocol import ErrorCode

from ._context import HttpContext

STATUS: dict[str, int] = {
    ErrorCode.MALFORMED: 400,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.UNKNOWN_MESSAGE: 404,
    ErrorCode.INVALID_FIELD: 422,
    ErrorCode.UNEXPECTED_MESSAGE: 405,
    ErrorCode.DUPLICATE_JOB: 409,
    ErrorCode.UNKNOWN_JOB: 404,
    ErrorCode.BAD_SEQUENCE: 400,
    ErrorCode.TOO_MANY_JOBS: 429,
    ErrorCode.TOO_MANY_REQUESTS: 429,
    ErrorCode.UNSUPPORTED_VERSION: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.UNKNOWN_PROFILE: 422,
    ErrorCode.LIMIT_EXCEEDED: 422,
    ErrorCode.INVALID_JOB: 422,
    ErrorCode.SERVER_BUSY: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.TIMEOUT: 408,
    ErrorCode.INTERNAL_ERROR: 500,
}
"""HTTP status of each error code (docs/http.md lists them)."""

RETRY_AFTER = {429: "1", 503: "1"}


class HttpError(Exception):
    """A request refused: ``code`` is a protocol error code, answered as JSON."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = message
        self.status = status or STATUS.get(self.code, 400)


def error_body(code: str, message: str) -> dict[str, str]:
    return {"error": str(code), "message": message}


def error_response(code: str, message: str, status: int | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": code, "message": ...}`` with the code's status (and Retry-After when
    trying again later may help)."""
    status = status or STATUS.get(str(code), 400)
    hdrs = dict(headers or {})
    if status in RETRY_AFTER:
        hdrs.setdefault("Retry-After", RETRY_AFTER[status])
    if status == 401:
        hdrs.setdefault("WWW-Authenticate", 'Bearer realm="sandboxd"')
    return JSONResponse(error_body(code, message), status_code=status, headers=hdrs)


class BadJson(ValueError):
    """A text that is not JSON as RFC 8259 has it; its message says why."""


def _no_constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON value")


def parse_json(data: bytes | str) -> Any:
    """JSON text (bytes in UTF-8, or UTF-16/32 with their BOM, as ``json.loads`` detects)
    as Python values; ``BadJson`` for anything that is not JSON.

    Why not ``json.loads`` alone: it raises more than ``JSONDecodeError`` on input a
    client controls (``RecursionError`` for deep nesting, ``ValueError`` for an integer
    of more than 4300 digits, ``UnicodeDecodeError``), each of which reached the app as
    a 500 (found by fuzz/fuzz_daemon.py); and it accepts what JSON does not, which the
    validators downstream then trip on: ``NaN`` and ``Infinity``, and strings holding
    lone UTF-16 surrogates (``"\\ud800"``, or their bytes: ``json.loads`` decodes bytes
    with ``surrogatepass``), which no encoder can write back.
    """
    try:
        text = data if isinstance(data, str) else data.decode(json.detect_encoding(data))
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadJson("it is nested too deeply") from None
    except BadJson:
        raise
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise BadJson(str(e)) from None
    if "\\u" in text and _lone_surrogate(value):
        raise BadJson("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is "
                      "not a character")
    return value


def _lone_surrogate(value: Any) -> bool:
    """Whether any string in ``value`` (keys included) has an unpaired surrogate; no
    recursion, since the value may nest as deep as the parser allowed."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


async def read_json(request: Request) -> Any:
    """The request's body as JSON (the listener has read it already, within its bounds)."""
    try:
        return parse_json(await request.body())
    except BadJson as e:
        raise HttpError(ErrorCode.MALFORMED, f"the body is not valid JSON: {e}") from None


# ------------------------------------------------------------- data fields


def describe(v: Any) -> str:
    """A JSON value's type, as a JSON user names it."""
    if v is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(v), type(v).__name__)


def data_field(value: Any, where: str, cap: int) -> bytes:
    """Bytes given as UTF-8 text or base64, said per field.

    A string is text; an object says which: ``{"text": "..."}`` or
    ``{"base64": "..."}``. More than ``cap`` bytes is ``invalid_field``.
    """
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, dict) and len(value) == 1 and "text" in value:
        if not isinstance(value["text"], str):
            raise HttpError(ErrorCode.INVALID_FIELD,
                            f"{where}.text must be a string, not {describe(value['text'])}")
        data = value["text"].encode()
    elif isinstance(value, dict) and len(value) == 1 and "base64" in value:
        raw = value["base64"]
        if not isinstance(raw, str):
            raise HttpError(ErrorCode.INVALID_FIELD,
                            f"{where}.base64 must be a string, not {describe(raw)}")
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(ErrorCode.INVALID_FIELD, f"{where}.base64 is not valid base64") \
                from None
    else:
        raise HttpError(ErrorCode.INVALID_FIELD, f"{where} must be a string (UTF-8 text) or "
                        f'{{"text": ...}} or {{"base64": ...}}, not {describe(value)}')
    if len(data) > cap:
        raise HttpError(ErrorCode.INVALID_FIELD, f"{where} must be at most {cap} bytes, "
                        f"got {len(data)}")
    return data


def output_fields(name: str, data: bytes) -> dict[str, str]:
    """``{name: text}``, plus ``{name}_b64`` with the exact bytes when they are not UTF-8
    (the text then has U+FFFD where they were): what ``sandboxctl run --json`` prints."""
    try:
        return {name: data.decode()}
    except UnicodeDecodeError:
        return {name: data.decode("utf-8", "replace"),
                f"{name}_b64": base64.b64encode(data).decode()}


# ------------------------------------------------------------ the listener's


@dataclass(eq=False)
class Gate:
    """Requests, WebSockets and background jobs in flight per token (``""``: no token)."""

    limit: int
    held: Counter[str] = field(default_factory=Counter)

    def acquire(self, token: str) -> bool:
        if self.held[token] >= self.limit:
            return False
        self.held[token] += 1
        return True

    def release(self, token: str) -> None:
        self.held[token] -= 1
        if self.held[token] <= 0:
            del self.held[token]


@dataclass(eq=False)
class FrontContext(HttpContext):
    """The listener's ``HttpContext``: also its per-token gate and a nursery for work that
    outlives a request (a ``wait=false`` job), which lives as long as the listener."""

    gate: Gate = field(default_factory=lambda: Gate(64))
    nursery: trio.Nursery | None = None


TOKEN_SCOPE_KEY = "sandboxd.token"
"""The ASGI scope key under which the listener leaves the request's token ("" if none)."""


def token_of(scope: dict[str, Any]) -> str:
    return str(scope.get(TOKEN_SCOPE_KEY, ""))


class Connection:
    """The TCP connection a request came on, as the listener's connection handler
    (``_app._ContainedTCPServer``) sees it: ``closed`` once the client's side is read to
    its end, and what to call then.

    Why: ``/v1/jobs`` cancels its job when the client goes away. ASGI says so only
    through ``receive()``, which needs a task per request to wait on it (a nursery,
    a task, a cancellation: ~50 us of every job's CPU); a callback here costs nothing.
    """

    __slots__ = ("closed", "on_close")

    def __init__(self) -> None:
        self.closed = False
        self.on_close: list[Callable[[], None]] = []

    def close(self) -> None:
        self.closed = True
        for callback in list(self.on_close):
            callback()


CONNECTION: ContextVar[Connection | None] = ContextVar("sandboxd_http_connection", default=None)
"""The request's ``Connection``: set in the connection handler's task, which the request's
task inherits (trio copies the context into the tasks a task starts); ``None`` when the
app runs under another server."""
