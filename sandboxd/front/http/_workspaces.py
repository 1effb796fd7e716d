"""``POST /v1/workspaces``: a CI job's workspace archive, streamed in as a raw body.

Strategy: this route is the one whose body the listener does not read whole
(``_app.STREAMED_BODIES``): the archive may be hundreds of MB, so each chunk is
written, as it arrives, to an unnamed spool file (``sandboxd.workspace.Upload``),
and the answer is an id that a ``POST /v1/jobs`` body names in ``workspace``.
The route is a plain ASGI callable, so that it can refuse a body half-way and
still drain the rest while answering (as the listener does for any refused body).

Bounds: ``max_workspace`` bytes (413 ``frame_too_large``), each chunk due within
``http_request_timeout`` (408 ``timeout``), at most ``MAX_PENDING`` archives
uploaded and not yet claimed by a job (503), each kept ``http_result_ttl``
seconds, used once, and only by the token that uploaded it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import trio

from sandboxd.workspace import Upload, WorkspaceError
from sandboxd_protocol import ErrorCode

from ._common import HttpError, error_response, token_of
from ._context import HttpContext

MAX_PENDING = 64
DRAIN_SECONDS = 5.0


@dataclass(eq=False)
class Pending:
    upload: Upload
    token: str
    created: float


class Workspaces:
    """Uploaded archives waiting for their job, by id."""

    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.pending: dict[str, Pending] = {}

    def prune(self) -> None:
        ttl = self.ctx.cfg.http_result_ttl
        now = time.monotonic()
        for wid, p in list(self.pending.items()):
            if now - p.created > ttl:
                p.upload.close()
                del self.pending[wid]

    def claim(self, wid: Any, token: str) -> Upload:
        """The archive ``wid`` for a job of ``token``; it leaves the table (used once)."""
        self.prune()
        p = self.pending.get(wid) if isinstance(wid, str) else None
        if p is None or p.token != token:
            raise HttpError(ErrorCode.INVALID_FIELD, f"workspace: no uploaded workspace "
                            f"{str(wid)[:80]!r} (POST /v1/workspaces first; each is used "
                            "once and kept http_result_ttl seconds)")
        del self.pending[wid]
        return p.upload

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        cfg = self.ctx.cfg
        self.prune()
        if len(self.pending) >= MAX_PENDING:
            return await _refuse(receive, send, ErrorCode.SERVER_BUSY,
                                 f"{MAX_PENDING} uploaded workspaces wait for their jobs; "
                                 "try again later")
        query = dict(p.split("=", 1) for p in scope.get("query_string", b"").decode()
                     .split("&") if "=" in p)
        fmt = query.get("format")
        upload: Upload | None = None
        try:
            while True:
                with trio.move_on_after(cfg.http_request_timeout) as late:
                    message = await receive()
                if late.cancelled_caught:
                    return await _refuse(receive, send, ErrorCode.TIMEOUT, "the workspace "
                                         f"stalled: no bytes for {cfg.http_request_timeout:g} s")
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                if upload is None and (chunk or not message.get("more_body", False)):
                    fmt = fmt or ("gzip" if chunk[:2] == b"\x1f\x8b" else "tar")
                    upload = Upload(os.path.join(cfg.state_dir, "sandboxd-workspaces"), fmt,
                                    cfg.max_workspace)
                if chunk and upload is not None:
                    try:
                        upload.write(chunk)
                    except WorkspaceError as e:
                        return await _refuse(receive, send, ErrorCode.FRAME_TOO_LARGE, str(e))
                if not message.get("more_body", False):
                    break
            assert upload is not None
            upload.finish()
            wid = self.ctx.mint().hex
            self.pending[wid] = Pending(upload, token_of(scope), time.monotonic())
            size, upload = upload.size, None  # the table owns it now
            response = _json(201, {"workspace": wid, "size": size, "format": fmt})
            await response(scope, receive, send)
        except WorkspaceError as e:  # a format we do not know
            await _refuse(receive, send, ErrorCode.INVALID_FIELD, f"format: {e}")
        finally:
            if upload is not None:
                upload.close()


def _json(status: int, body: dict[str, Any]) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status)


async def _refuse(receive: Any, send: Any, code: str, message: str) -> None:
    """Answer, and close, while reading and dropping what is left of the body (a full
    queue nobody reads would hang the close), for a few seconds at most."""
    response = error_response(code, message, None, {"Connection": "close"})

    async def drain() -> None:
        with trio.move_on_after(DRAIN_SECONDS):
            while True:
                m = await receive()
                if m["type"] != "http.request" or not m.get("more_body", False):
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
