"""Fixtures of the HTTP front door's tests: one real daemon per module, started with
``--http 127.0.0.1:0``, and an ``httpx`` client on it.

A module may set ``DAEMON_CONFIG`` (more configuration keys) for its daemon. As in the
attack suite, the daemon's warm containers outlive every test, so the leftovers check
gets a view that hides exactly those and waits for the daemon to be idle first; what
the view hides is checked once the module's daemon has stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from http_helpers import start_http_daemon, wait_idle

from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

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
        left = leftovers.new_leftovers(before, settle=10.0,
                                       view=leftovers.only_ours(d.config["instance"]))
        assert not left, f"the module's daemon left things behind: {left}"


def not_foreign(snap: leftovers.Snapshot) -> leftovers.Snapshot:
    """Hide what other test runs on this machine make meanwhile: containers another live
    supervisor owns or another daemon's cgroups hold, and cgroups not of this run (every
    daemon of this run is named ``t<pid>-...``)."""
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


@pytest.fixture
def leftovers_view(request: pytest.FixtureRequest) -> Iterator[leftovers.View | None]:
    if "http_daemon" not in request.fixturenames:
        yield not_foreign  # a test with a daemon of its own, stopped before the check
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
