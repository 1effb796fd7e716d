"""The warm pool's filler (sandboxd/pool.py) against real containers, as root."""

from __future__ import annotations

import logging
import os

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


async def _run_jobs(pool, spec, n: int, argv: list[str]) -> list:  # type: ignore[no-untyped-def]
    from sandboxd.container import RunStep
    from sandboxd.limits import DEFAULT

    results = []
    for _ in range(n):
        box = await pool.take(spec)
        try:
            results.append(await box.run(RunStep(argv=argv, limits=DEFAULT)))
        finally:
            pool.release(box)
    return results


def _slots_of_live_inits(pool) -> list[int]:  # type: ignore[no-untyped-def]
    return sorted(box.slot for box in pool._live)


async def test_used_containers_are_remade_by_the_engine(made) -> None:  # type: ignore[no-untyped-def]
    """A used container of a shape short of its target goes to the engine (the fork
    server), which kills its init and makes the next one in the same slot and cgroup:
    every job still runs in a fresh container, with its own exact accounting, no two
    live containers ever share a slot, and the pool's close leaves nothing behind."""
    import trio

    from sandboxd.pool import Pool
    from sandboxd.spawn import ContainerSpec

    spec = ContainerSpec(slot=0, box_size=MiB, tmp_size=MiB)
    pool = Pool(made.client, made.backend, 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run, [spec])
        seen_inits = set()
        for _ in range(12):
            results = await _run_jobs(pool, spec, 1, ["/bin/sh", "-c", "echo $$; cat /proc/1/stat"])
            r = results[0]
            assert r.exit_code == 0, r
            # A fresh pid namespace each time: the job's shell is pid 2 under a new init.
            assert r.stdout.split()[0] == b"2"
            with trio.fail_after(10):
                while sum(warm for _s, warm, _t in pool.shapes()) < 2:
                    await trio.sleep(0.002)
            slots = _slots_of_live_inits(pool)
            assert len(slots) == len(set(slots)), slots
            seen_inits.update(box.init_pid for box in pool._live)
        assert pool.counters.engine_recycles >= 10, pool.counters
        assert len(seen_inits) >= 12  # new inits, not the same ones handed back
        # The engine read each new container's ready: the job process it named is the
        # init's child, waiting in its exec request.
        for box in pool._live:
            with open(f"/proc/{box.job_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            assert int(fields[1]) == box.init_pid, (box.job_pid, box.init_pid, fields)
            with open(f"/proc/{box.job_pid}/comm") as f:
                assert f.read().strip() == "sandboxd-jobexe"
        nursery.cancel_scope.cancel()
    assert pool.cgroup_count() == 0


async def test_a_fork_server_killed_with_recycles_in_hand_costs_the_pool_nothing(  # type: ignore[no-untyped-def]
        made, zygote_proc, caplog) -> None:
    """SIGKILL of the fork server (the engine) while it holds used containers: their inits
    die with it, the pool removes their cgroups and gives back their slots after
    ENGINE_GRACE, a new fork server makes the shape warm again, jobs run, and the pool's
    close leaves no cgroup, container process or mount behind."""
    import signal

    import trio

    from sandboxd.pool import Pool
    from sandboxd.spawn import ContainerSpec
    from sandboxd_testing import leftovers

    before = leftovers.snapshot()
    spec = ContainerSpec(slot=0, box_size=MiB, tmp_size=MiB)
    pool = Pool(made.client, made.backend, 3)
    caplog.set_level(logging.WARNING, logger="sandboxd.pool")
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run, [spec])
        boxes = [await pool.take(spec) for _ in range(3)]
        from sandboxd.container import RunStep
        from sandboxd.limits import DEFAULT
        for box in boxes:
            assert (await box.run(RunStep(argv=["/bin/true"], limits=DEFAULT))).exit_code == 0
        (server,) = leftovers.fork_servers(zygote_proc.pid)
        engine = made.client.engine
        os.kill(server, signal.SIGSTOP)  # it takes the requests but answers none
        for box in boxes:
            pool.release(box)
        with trio.fail_after(10):  # the releases' tasks run: each hands its box over
            while not all(box.destroyed for box in boxes):
                await trio.sleep(0.001)
        slots_in_hand = {slot for _shape, slot, _cg, _making in engine.pending.values()}
        assert {box.slot for box in boxes} <= slots_in_hand  # handed over, not destroyed here
        os.kill(server, signal.SIGKILL)
        with trio.fail_after(30):
            while engine.pending or not engine.lost:
                await trio.sleep(0.01)
        assert "the engine is gone" in caplog.text
        before_new = pool.counters.engine_recycles
        # Warm containers of the dead server are found dead when taken, and replaced.
        results = await _run_jobs(pool, spec, 6, ["/bin/sh", "-c", "echo again"])
        assert [r.stdout for r in results] == [b"again\n"] * 6
        (second,) = leftovers.fork_servers(zygote_proc.pid)
        assert second != server
        with trio.fail_after(30):
            while sum(warm for _s, warm, _t in pool.shapes()) < 3:
                await trio.sleep(0.01)
        slots = _slots_of_live_inits(pool)
        assert len(slots) == len(set(slots))
        assert made.client.engine is not engine
        assert pool.counters.engine_recycles > before_new  # the new fork server's engine
        nursery.cancel_scope.cancel()
    assert pool.cgroup_count() == 0
    await made.client.aclose()
    assert not leftovers.new_leftovers(before)


async def test_containers_the_engine_makes_that_fail_their_set_up_cost_the_pool_nothing(  # type: ignore[no-untyped-def]
        made, caplog) -> None:
    """The engine's containers are made from a plan that is not one (their inits fail
    their set-up and say why): each failure is logged, its container destroyed, the
    shape's fillers go back to the zygote's way for a while (no spinning), the shape gets
    warm all the same, and the pool's close leaves nothing behind."""
    import trio

    from sandboxd.pool import Pool
    from sandboxd.spawn import ContainerSpec
    from sandboxd_testing import leftovers

    before = leftovers.snapshot()
    junk = os.memfd_create("sandboxd-junk-plan", os.MFD_CLOEXEC)
    os.write(junk, b"not a plan at all")
    made.client.cached_plan = lambda spec: junk
    spec = ContainerSpec(slot=0, box_size=MiB, tmp_size=MiB)
    pool = Pool(made.client, made.backend, 2)
    caplog.set_level(logging.WARNING, logger="sandboxd.pool")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run, [spec])
            results = await _run_jobs(pool, spec, 4, ["/bin/sh", "-c", "echo fine"])
            assert [r.stdout for r in results] == [b"fine\n"] * 4
            with trio.fail_after(30):
                while pool.counters.spawn_failures == 0 or \
                        sum(warm for _s, warm, _t in pool.shapes()) < 2:
                    await trio.sleep(0.01)
            # Paused after the first failure: not one failure per refill.
            assert pool.counters.spawn_failures <= 2, pool.counters
            assert pool.counters.engine_recycles == 0
            nursery.cancel_scope.cancel()
    finally:
        os.close(junk)
    assert "could not make a warm container" in caplog.text
    assert pool.cgroup_count() == 0
    await made.client.aclose()
    assert not leftovers.new_leftovers(before)


async def test_a_recycled_cgroup_reports_each_job_s_own_oom_and_peak(made) -> None:  # type: ignore[no-untyped-def]
    """The baseline a job's figures are taken from is its CPU so far only
    (``JobCgroup.baseline``): OOM kills and peaks count from the cgroup's reset. So a job
    that runs in a cgroup where the one before was OOM-killed must not inherit that kill
    or that peak, and the next OOM is counted again. A recycle keeps the last job's
    memory and pids limits in place (``cgroups.keepable``): a job with other limits gets
    its own, higher or lower, and a tiny limit is not kept."""
    import dataclasses

    import trio

    from sandboxd.container import RunStep
    from sandboxd.limits import DEFAULT
    from sandboxd.pool import Pool
    from sandboxd.spawn import ContainerSpec

    spec = ContainerSpec(slot=0, box_size=MiB, tmp_size=MiB)
    pool = Pool(made.client, made.backend, 1)
    hog = ["/bin/sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"]
    small = dataclasses.replace(DEFAULT, memory=32 * MiB)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run, [spec])
        verdicts = []
        for argv in (hog, ["/bin/true"], ["/bin/true"], hog, ["/bin/true"]):
            box = await pool.take(spec)
            try:
                r = await box.run(RunStep(argv=argv, limits=small))
            finally:
                pool.release(box)
            verdicts.append((r.verdict, r.oom_killed))
            if argv is not hog:
                assert r.memory_peak < 16 * MiB, r  # its own, not the hog's 32 MiB
        assert verdicts == [("memory_limit", True), ("ok", False), ("ok", False),
                            ("memory_limit", True), ("ok", False)], verdicts
        fill = ["/bin/sh", "-c", "x=$(head -c 48000000 /dev/zero | tr '\\0' a); echo ${#x}"]
        for memory, argv, want in ((128 * MiB, fill, "ok"),  # above the kept 32 MiB
                                   (32 * MiB, fill, "memory_limit"),  # back down
                                   (2 * MiB, ["/bin/true"], None),  # tiny: not kept
                                   (128 * MiB, fill, "ok")):
            box = await pool.take(spec)
            try:
                r = await box.run(RunStep(argv=argv,
                                          limits=dataclasses.replace(DEFAULT, memory=memory)))
            finally:
                pool.release(box)
            if want is not None:
                assert r.verdict == want, (memory, r)
            if want == "ok":
                assert r.stdout == b"48000000\n" and r.memory_peak > 48_000_000, r
        assert pool.counters.cgroups_recycled >= 3, pool.counters  # the same cgroups again
        nursery.cancel_scope.cancel()
    assert pool.cgroup_count() == 0
