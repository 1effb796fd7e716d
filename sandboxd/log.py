"""Structured log lines: ``ts=... level=... event=... key=value ...``, one per event.

Strategy: every part of the daemon logs through ``event`` on the ``sandboxd``
logger, with its fields as data; only the daemon's start-up (``setup_logging``)
decides where the lines go and how they look, so the job service and the
front doors never format or route a log line themselves.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("sandboxd")


class _LineFormatter(logging.Formatter):
    """One structured line per event: ``ts=... level=... event=... key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        parts = [f"ts={time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created))}"
                 f".{int(record.msecs):03d}Z", f"level={record.levelname.lower()}",
                 f"event={_q(record.getMessage())}"]
        parts += [f"{k}={_q(v)}" for k, v in fields.items()]
        return " ".join(parts)


def _q(v: Any) -> str:
    s = f"{v:.6f}" if isinstance(v, float) else str(v)
    return s if s and not any(c in s for c in ' ="\n') else '"' + s.replace('"', "'") + '"'


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    log.log(level, name, extra={"fields": fields})


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    root = logging.getLogger("sandboxd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
