"""What every HTTP API of the front door shares: the job service and the daemon's settings.

Each API module (``v1``, ``judge0``, ``piston``) exports
``routes(ctx: HttpContext) -> list[starlette.routing.BaseRoute]``; the app that
mounts them (``_app``) builds one ``HttpContext`` per listener.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sandboxd.config import Config
from sandboxd.service import JobService

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from sandboxd.front._siblings import DaemonView

    from ._route import Router


@dataclass(eq=False)
class HttpContext:
    service: JobService
    cfg: Config
    # Owners of HTTP jobs in the service ("http-<n>"): each request or WebSocket
    # takes a fresh one, so that job ids chosen by clients never collide.
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    # With workers (docs/configuration.md, "workers"): the whole daemon's ps, stats,
    # kill and job metrics (front/_siblings.py); None: this process's service is all.
    daemon: DaemonView | None = None
    # With workers: which worker an id of a stored result belongs to, and the relay to it
    # (_route.py); None: every id is this process's.
    router: Router | None = None

    def owner(self, api: str) -> str:
        # With workers, prefixed as a msgpack connection's are (``w<k>-``): a job's ``ref``
        # is then unique across workers, and ``kill`` finds its worker.
        tag = f"w{self.router.index}-" if self.router is not None else ""
        return f"{tag}{api}-{next(self._seq)}"

    async def relayed(self, request: Request, ident: object) -> Response | None:
        """With workers, another worker's answer to ``request`` if ``ident`` (an id of a
        stored result) is that worker's; None: this process answers."""
        return None if self.router is None else await self.router.answer(request, ident)

    def mint(self) -> uuid.UUID:
        """A new id for something kept between requests: one that says its worker."""
        return uuid.uuid4() if self.router is None else self.router.mint()
