"""The warm pool's filler (sandboxd/pool.py) against real containers, as root."""

from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.root

MiB = 1 << 20


async def test_a_failure_to_make_a_container_never_ends_the_pool(made, caplog) -> None:  # type: ignore[no-untyped-def]
    """Whatever making a warm container raises (a SandboxError of the host's, or a bug of
    ours: here a RuntimeError), the filler logs it and makes another; raised, it ended
    the pool's nursery, and with it the daemon and every job in it."""
    import trio

    from sandboxd.pool import Pool
    from sandboxd.spawn import ContainerSpec

    real = made.client.spawn
    failures = [RuntimeError("a bug of ours"), None]

    async def spawn(spec, slot=None, procs=()):  # type: ignore[no-untyped-def]
        if failures and (e := failures.pop(0)) is not None:
            raise e
        return await real(spec, slot, procs)

    made.client.spawn = spawn
    pool = Pool(made.client, made.backend, 2)
    caplog.set_level(logging.WARNING, logger="sandboxd.pool")
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run, [ContainerSpec(slot=0, box_size=MiB, tmp_size=MiB)])
        with trio.fail_after(30):
            while sum(warm for _shape, warm, _target in pool.shapes()) < 2:
                await trio.sleep(0.05)
        assert pool.counters.spawn_failures == 1
        nursery.cancel_scope.cancel()
    assert "making a warm container failed: RuntimeError('a bug of ours')" in caplog.text
    assert pool.cgroup_count() == 0  # closed: every container destroyed, cgroups removed
