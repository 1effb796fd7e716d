"""Fixtures of the HTTP front door's tests: one real daemon per module, started with
``--http 127.0.0.1:0``, and an ``httpx`` client on it.

A module may set ``DAEMON_CONFIG`` (more configuration keys) for its daemon. As in the
attack suite, the daemon's warm containers outlive every test, so the leftovers check
gets a view that hides exactly those and waits for the daemon to be idle first; what
the view hides is checked once the module's daemon has stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import leftovers
import pytest
from daemon import Daemon

pytestmark = pytest.mark.root

BASE_CONFIG: dict[str, Any] = {"pool_profiles": ["bash", "python3"], "pool_size": 1,
                               "concurrency": 2}


def start_http_daemon(tmp: Path, **config: Any) -> Daemon:
    """A daemon with the HTTP front door on a free loopback port (open unless tokens)."""
    config = {**BASE_CONFIG, **config}
    if not config.get("http_tokens"):
        config.setdefault("http_loopback_open", True)
    return Daemon(tmp, args=("--http", "127.0.0.1:0"), **config).start()


def only_ours(instance: str) -> leftovers.View:
    """After our daemon stopped: its cgroups, and container processes no other live
    supervisor or daemon owns (other test runs may make theirs meanwhile)."""
    mark = f"sandboxd-{instance}"

    def view(snap: leftovers.Snapshot) -> leftovers.Snapshot:
        elsewhere = leftovers.supervised_elsewhere() | leftovers.of_other_instances(instance)
        out = dict(snap)
        out["procs"] = [p for p in snap["procs"] if p[0] not in elsewhere]  # type: ignore[attr-defined]
        out["cgroups"] = {c for c in snap["cgroups"]  # type: ignore[attr-defined]
                          if mark in c.split("/")}
        return out

    return view


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


@pytest.fixture(scope="module")
def http_daemon(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("needs root (real namespaces, cgroups and mounts)")
    before = leftovers.snapshot()
    d = start_http_daemon(tmp_path_factory.mktemp("sandboxd-http"),
                          **getattr(request.module, "DAEMON_CONFIG", {}))
    try:
        wait_idle(d)
        yield d
    finally:
        code = d.stop()
        assert code == 0, f"daemon exited {code}: {d.log.read_text()[-3000:]}"
        left = leftovers.new_leftovers(before, settle=10.0, view=only_ours(d.config["instance"]))
        assert not left, f"the module's daemon left things behind: {left}"


@pytest.fixture
def leftovers_view(request: pytest.FixtureRequest) -> Iterator[leftovers.View | None]:
    if "http_daemon" not in request.fixturenames:
        yield None
        return
    d: Daemon = request.getfixturevalue("http_daemon")
    assert d.proc is not None
    yield leftovers.daemon_view(d.proc.pid, d.config["instance"])
    wait_idle(d)


@pytest.fixture
def base_url(http_daemon: Daemon) -> str:
    return f"http://{http_daemon.http_address}"


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c
