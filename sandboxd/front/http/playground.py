"""``/playground``: a small page that runs code through ``/v1`` (docs/http.md).

Strategy: the page (``playground.html`` beside this file) is plain HTML and
JavaScript, served as it is from the package: no build step, no dependency.
It uses only the public API, as any client would: ``GET /v1/profiles`` for the
languages, and one WebSocket ``/v1/jobs/stream`` per run, whose output it
shows as it streams in, then the verdict, CPU, wall time and memory; a second
run while one runs cancels the first. The page holds nothing secret, so the
listener serves it without a token (``_app.OPEN_PATHS``); the API calls it
makes need one where the listener asks for one (typed into the page, or given
as ``#token=...``, which a browser never sends to the server).
"""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from ._context import HttpContext

PAGE = Path(__file__).resolve().parent / "playground.html"


@functools.cache
def _page() -> bytes:
    return PAGE.read_bytes()


async def playground(request: Request) -> Response:
    return HTMLResponse(_page(), headers={
        "Cache-Control": "no-cache",
        # The page's own script and style only; it talks to this origin alone.
        "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                                   "style-src 'unsafe-inline'; connect-src 'self'; "
                                   "img-src 'self'; base-uri 'none'; form-action 'none'; "
                                   "frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff"})


def routes(ctx: HttpContext) -> list[BaseRoute]:
    return [Route("/playground", playground, methods=["GET"])]
