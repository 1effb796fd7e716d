"""Fixtures of the attack suite: one daemon per module, and what "the host is unharmed" means.

Why one daemon per module: starting one costs about half a second and warms a
pool, and the attacks are many and short. The daemon's warm containers then
outlive every test by design, so the suite-wide leftovers check (tests/conftest.py)
is given a view that hides exactly those (``leftovers.daemon_view``) and, after
each test, waits until the daemon is idle again: anything else a test leaves,
a process of a used container included, still fails that test. What the view
hides (the daemon's recycled cgroups) is checked once the module's daemon has
stopped, together with the host's SysV IPC objects.

Every test on a module's daemon also gets a canary (``guard_canary``): no
job's output may contain its token, and the file must be as it was after the
test. The helpers the tests call (``AttackDaemon``, ``assert_unharmed``...)
live in ``attacks.py``.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Iterator
from pathlib import Path

import pytest
from attacks import AttackDaemon, Canary, assert_unharmed, start_attack_daemon

from sandboxd_testing import leftovers


@pytest.fixture(scope="module")
def attack_daemon(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[AttackDaemon]:
    """One daemon for the module (configured by the module's ``DAEMON_CONFIG``, if any);
    afterwards nothing of it may be left on the host."""
    if os.geteuid() != 0:
        pytest.skip("needs root (real namespaces, cgroups and mounts)")
    before = leftovers.snapshot(ipc=True)
    config = getattr(request.module, "DAEMON_CONFIG", {})
    ad = start_attack_daemon(tmp_path_factory.mktemp("attack"), **config)
    try:
        yield ad
    finally:
        # Held by pidfd: the pids of this 32768-pid machine come round again within
        # seconds under load, so a path that exists later may be another process's.
        zygotes = {}
        for pid in leftovers.descendants(ad.pid) - {p for p, _u, _n in
                                                    leftovers.container_processes()}:
            with contextlib.suppress(OSError):  # gone meanwhile
                zygotes[pid] = os.pidfd_open(pid)
        try:
            code = ad.daemon.stop()
            assert code == 0, f"daemon exited {code}: {ad.daemon.log.read_text()[-3000:]}"
            left = leftovers.new_leftovers(before, settle=10.0,
                                           view=leftovers.only_ours(ad.instance))
            alive = {pid for pid, fd in zygotes.items() if not select.select([fd], [], [], 0)[0]}
        finally:
            for fd in zygotes.values():
                os.close(fd)
        assert not left and not alive, f"the module's daemon left things behind: {left} {alive}"


@pytest.fixture
def leftovers_view(request: pytest.FixtureRequest) -> Iterator[leftovers.View | None]:
    """For tests on the module's daemon: hide its warm containers, and wait for it to be
    idle before the check (this teardown runs first)."""
    if "attack_daemon" not in request.fixturenames:
        yield None
        return
    ad: AttackDaemon = request.getfixturevalue("attack_daemon")
    yield leftovers.daemon_view(ad.pid, ad.instance)
    ad.wait_idle()


@pytest.fixture(autouse=True)
def host_ipc_unchanged(request: pytest.FixtureRequest) -> Iterator[None]:
    """No attack may create a SysV IPC object in the host's namespace."""
    if "root" not in request.keywords or os.geteuid() != 0:
        yield
        return
    before = leftovers.ipc_objects()
    yield
    made = leftovers.ipc_objects() - before
    assert not made, f"SysV IPC objects appeared on the host: {sorted(made)}"


@pytest.fixture(params=["warm", "plain"])
def warm_and_plain(request: pytest.FixtureRequest, attack_daemon: AttackDaemon
                   ) -> Iterator[str]:
    """Run the test twice: its jobs for profiles with a warm runtime handed to the waiting
    interpreter, then started plainly (``AttackDaemon.start``)."""
    attack_daemon.start = request.param
    try:
        yield request.param
    finally:
        attack_daemon.start = None


@pytest.fixture
def host_canary(canary: tuple[Path, str]) -> Canary:
    """The suite's canary, with how it looked before the attack."""
    return Canary.of(*canary)


@pytest.fixture(autouse=True)
def guard_canary(request: pytest.FixtureRequest) -> Iterator[None]:
    """For every test on a module's daemon: a canary whose token no job may print (the
    daemon checks each result, ``AttackDaemon.job``), unchanged after the test."""
    if "attack_daemon" not in request.fixturenames or os.geteuid() != 0:
        yield
        return
    ad: AttackDaemon = request.getfixturevalue("attack_daemon")
    canary: Canary = request.getfixturevalue("host_canary")
    ad.canary = canary
    try:
        yield
    finally:
        ad.canary = None
    assert_unharmed(canary, ad)
