"""sandboxd's own HTTP API, ``/v1``: docs/http.md describes it, ``/v1/openapi.json`` too.

Strategy: every route decodes JSON into the service's terms (``job_spec``),
calls the ``JobService`` and encodes the answer (``job_result``), as the
msgpack front door does with its frames; admission, running, verdicts and
counting are the service's.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandboxd import __version__

from ._context import HttpContext


def routes(ctx: HttpContext) -> list[BaseRoute]:
    api = V1(ctx)
    return [
        Route("/v1/health", api.health, methods=["GET"]),
    ]


class V1:
    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.service = ctx.service

    async def health(self, request: Request) -> Response:
        draining = self.service.draining
        body: dict[str, Any] = {"status": "draining" if draining else "ok",
                                "version": __version__}
        return JSONResponse(body, status_code=503 if draining else 200)
