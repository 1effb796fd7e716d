"""What every HTTP API of the front door shares: the job service and the daemon's settings.

Each API module (``v1``, ``judge0``, ``piston``) exports
``routes(ctx: HttpContext) -> list[starlette.routing.BaseRoute]``; the app that
mounts them (``_app``) builds one ``HttpContext`` per listener.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sandboxd.config import Config
from sandboxd.service import JobService

if TYPE_CHECKING:
    from sandboxd.front._siblings import DaemonView


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

    def owner(self, api: str) -> str:
        return f"{api}-{next(self._seq)}"
