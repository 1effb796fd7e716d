"""The cluster tests' fixtures: a real redis-server per test
(``sandboxd_testing.redis_server``), and the leftovers check's view.

The view: a module with a node that outlives its tests (test_gateway's
``cluster``) hides exactly that node's warm containers, once it is idle; every
test hides what other test runs on this machine make meanwhile (their
containers and cgroups are not ours: the check is host-wide).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxd_testing import leftovers
from sandboxd_testing.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def not_foreign(snap: leftovers.Snapshot) -> leftovers.Snapshot:
    """``snap`` without other runs' containers and cgroups (as tests/http's view)."""
    mine = f"sandboxd-t{os.getpid()}-"
    listed = {pid for pid, _uid, _name in snap["procs"]}  # type: ignore[attr-defined]
    parents = leftovers.parents()
    foreign = leftovers.supervised_elsewhere()
    for pid in listed:
        inst = leftovers.instance_of(pid)
        if inst is not None and not f"sandboxd-{inst}".startswith(mine):
            foreign |= {pid, parents.get(pid, 0)}
    out = dict(snap)
    out["procs"] = [p for p in snap["procs"] if p[0] not in foreign]  # type: ignore[attr-defined]
    out["cgroups"] = {c for c in snap["cgroups"]  # type: ignore[attr-defined]
                      if any(part.startswith(mine) for part in c.split("/"))}
    return out


def wait_idle(d: Any, timeout: float = 30.0) -> None:
    """Until the node runs and queues nothing, its pools are full again and every used
    container is gone (as tests/http's)."""
    deadline = time.monotonic() + timeout
    while True:
        st = d.stats()
        below = leftovers.descendants(d.proc.pid)
        mine = {pid for pid, _uid, _name in leftovers.container_processes() if pid in below}
        stray = mine - leftovers.warm_containers(d.proc.pid)
        if (not st.jobs_running + st.jobs_queued and not stray
                and all(p.warm >= p.target for p in st.pools)):
            return
        assert time.monotonic() < deadline, f"the node is not idle: {st}, stray {stray}"
        time.sleep(0.05)


@pytest.fixture
def leftovers_view(request: pytest.FixtureRequest) -> Iterator[leftovers.View | None]:
    if "cluster" not in request.fixturenames:
        yield not_foreign  # the test's own daemons are stopped before the check
        return
    node = request.getfixturevalue("cluster")["node"]
    assert node.proc is not None
    yield leftovers.daemon_view(node.proc.pid, node.config["instance"])
    wait_idle(node)
