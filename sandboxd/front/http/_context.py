"""What every HTTP API of the front door shares: the job service and the daemon's settings.

Each API module (``v1``, ``judge0``, ``piston``) exports
``routes(ctx: HttpContext) -> list[starlette.routing.BaseRoute]``; the app that
mounts them (``_app``) builds one ``HttpContext`` per listener.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from sandboxd.config import Config
from sandboxd.service import JobService


@dataclass(eq=False)
class HttpContext:
    service: JobService
    cfg: Config
    # Owners of HTTP jobs in the service ("http-<n>"): each request or WebSocket
    # takes a fresh one, so that job ids chosen by clients never collide.
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def owner(self, api: str) -> str:
        return f"{api}-{next(self._seq)}"
