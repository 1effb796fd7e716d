"""Starting a daemon with the HTTP front door, and waiting for it to be idle.

Apart from conftest.py so that a test can import them by a name no other folder's
module has (``conftest`` is one name for every folder's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon

BASE_CONFIG: dict[str, Any] = {"pool_profiles": ["bash", "python3"], "pool_size": 1,
                               "concurrency": 2}


def start_http_daemon(tmp: Path, **config: Any) -> Daemon:
    """A daemon with the HTTP front door on a free loopback port (open unless tokens)."""
    config = {**BASE_CONFIG, **config}
    if not config.get("http_tokens"):
        config.setdefault("http_loopback_open", True)
    return Daemon(tmp, args=("--http", "127.0.0.1:0"), **config).start()


def wait_idle(d: Daemon, timeout: float = 30.0) -> None:
    """Until no job runs or waits, every pool is full and every container is a warm one."""
    assert d.proc is not None
    deadline = time.monotonic() + timeout
    while True:
        st = d.stats()
        busy = st.jobs_running + st.jobs_queued
        cold = [p for p in st.pools if p.warm < p.target]
        below = leftovers.descendants(d.proc.pid)
        mine = {pid for pid, _uid, _name in leftovers.container_processes() if pid in below}
        stray = mine - leftovers.warm_containers(d.proc.pid)
        if not busy and not cold and not stray:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"daemon not idle after {timeout}s: {busy} jobs, cold "
                                 f"pools {cold}, stray container processes {stray}")
        time.sleep(0.05)
