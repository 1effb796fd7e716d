"""Captured jobs watched by the engine (the fork server: docs/engine.md, stage 3) against
the same jobs watched by the supervisor's own task, as root, in a real pool.

The engine watches the job's CPU time and wall clock, kills it through the freezer at
a limit or when asked, reads the job cgroup's counters once the init has spoken and, for a
container nothing reads after its job, resets the cgroup and makes the next container in
the same go. Each program here has a known cost (tests/probes: burn, touch, flood), so
both paths are held to the same tight bounds (tests/integration/test_accounting.py's);
and the engine's recycle must keep every job's figures its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.root

MiB = 1 << 20
PATHS = ["engine", "supervisor"]


@asynccontextmanager
async def _pool(made: Any, path: str, size: int = 2) -> AsyncIterator[Any]:
    """A running pool of one small shape; the engine watches its captured jobs or not."""
    import trio

    from sandboxd.pool import Pool
    from sandboxd.spawn import ContainerSpec

    pool = Pool(made.client, made.backend, size)
    pool.use_engine_run = path == "engine"
    pool.spec = ContainerSpec(slot=0, box_size=64 * MiB, tmp_size=MiB)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run, [pool.spec])
        yield pool
        nursery.cancel_scope.cancel()
    assert pool.cgroup_count() == 0  # closed: every container and cgroup gone


async def _run(pool: Any, argv: list[str], *, files: dict[str, Path] | None = None,
               last_use: bool = True, **limits: Any) -> Any:
    """One job in a container of the pool, given back after (as the scheduler does)."""
    import trio

    from sandboxd.container import RunStep
    from sandboxd.limits import DEFAULT

    # The shape warm again (as a pool between jobs is): a miss is never recycled, nor a
    # container whose shape the filler has refilled meanwhile.
    with trio.fail_after(10):
        while any(warm < target for _s, warm, target in pool.shapes()):
            await trio.sleep(0.002)
    box = await pool.take(pool.spec)
    box.last_use = last_use
    try:
        return await box.run(RunStep(
            argv=argv, limits=dataclasses.replace(DEFAULT, **limits),
            files={name: p.read_bytes() for name, p in (files or {}).items()}))
    finally:
        pool.release(box)


def _watched(pool: Any, path: str, before: int) -> None:
    """The job went the way the test asked."""
    if path == "engine":
        assert pool.counters.engine_runs > before, pool.counters
    else:
        assert pool.counters.engine_runs == 0, pool.counters


def _rusage(r: Any) -> float:
    return float(r.stdout.split(b"rusage")[1])


@pytest.mark.parametrize("path", PATHS)
async def test_cpu_time_is_exact_and_the_cpu_limit_stops_the_job(made, probes, path) -> None:  # type: ignore[no-untyped-def]
    """Half a second of CPU is counted within the kernel's own account of the program
    (its getrusage) plus 10 ms; at a 1 s limit, a program that would burn 1.5 s is
    killed within 5 % of it, for its CPU."""
    async with _pool(made, path) as pool:
        r = await _run(pool, ["./burn", "0.5"], files={"burn": probes["burn"]}, cpu_time=1.0)
        assert r.verdict == "ok", r
        assert _rusage(r) <= r.cpu_time <= _rusage(r) + 0.01, r
        assert 0.475 <= r.cpu_time <= 0.525, r
        assert abs(r.user_time + r.sys_time - r.cpu_time) < 0.005, r
        r = await _run(pool, ["./burn", "1.5"], files={"burn": probes["burn"]},
                       cpu_time=1.0, wall_time=10.0)
        assert r.verdict == "time_limit" and r.reason == "cpu", r
        assert 1.0 <= r.cpu_time <= 1.05, r
        _watched(pool, path, 0)


@pytest.mark.parametrize("path", PATHS)
async def test_the_wall_limit_counts_from_the_hand_over(made, path) -> None:  # type: ignore[no-untyped-def]
    """A job that sleeps is killed at its wall limit, counted from its init's hand-over
    (its "started", which the engine takes), for its wall time; so is one that stops
    itself, which no CPU limit would ever end."""
    async with _pool(made, path) as pool:
        r = await _run(pool, ["sleep", "10"], wall_time=1.0)
        assert r.verdict == "time_limit" and r.reason == "wall", r
        assert 1.0 <= r.wall_time <= 1.1, r
        r = await _run(pool, ["sh", "-c", "kill -STOP $$; echo never"], wall_time=0.5)
        assert r.verdict == "time_limit" and r.reason == "wall", r
        assert b"never" not in r.stdout
        _watched(pool, path, 0)


@pytest.mark.parametrize("path", PATHS)
async def test_memory_output_and_exits_are_the_same_on_both_paths(made, probes, path) -> None:  # type: ignore[no-untyped-def]
    """Peak memory of a known workload, an OOM kill at the memory limit, output cut at its
    cap, separate streams, exit codes and signals: the same verdicts and figures."""
    async with _pool(made, path) as pool:
        touch = {"touch": probes["touch"]}
        r = await _run(pool, ["./touch", "200"], files=touch, memory=256 * MiB)
        assert r.verdict == "ok" and not r.oom_killed, r
        assert 200 * MiB <= r.memory_peak <= 230 * MiB, r.memory_peak / MiB
        r = await _run(pool, ["./touch", "300"], files=touch, memory=256 * MiB)
        assert r.verdict == "memory_limit" and r.oom_killed, r
        r = await _run(pool, ["./flood", str(10**9)], files={"flood": probes["flood"]},
                       output=MiB, wall_time=20.0)
        assert r.verdict == "output_limit" and r.stdout_truncated, r
        assert r.stdout == b"x" * MiB
        r = await _run(pool, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (r.verdict, r.exit_code, r.stdout, r.stderr) == (
            "runtime_error", 3, b"out\n", b"err\n"), r
        r = await _run(pool, ["sh", "-c", "kill -SEGV $$"])
        assert r.verdict == "runtime_error" and r.signal == 11, r
        # Whatever the job leaves in its PID namespace dies with it, and the cgroup is
        # proven empty before the next container may take it.
        r = await _run(pool, ["sh", "-c", "setsid sh -c 'sleep 60' </dev/null >/dev/null "
                                          "2>&1 & echo started"])
        assert r.verdict == "ok" and r.stdout == b"started\n", r
        _watched(pool, path, 0)


async def test_a_recycled_container_s_next_job_has_its_own_figures(made) -> None:  # type: ignore[no-untyped-def]
    """The engine resets the cgroup and makes the next container at the job's end (one
    exchange): the next job in that cgroup must not inherit the last one's OOM kill, peak
    or CPU, and a later OOM is counted again. A container something reads after its job
    (``last_use`` false: a compile step's files) is watched but not recycled there."""
    async with _pool(made, "engine", size=2) as pool:
        hog = ["/bin/sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"]
        true = ["/bin/true"]
        verdicts, recycled = [], []
        for argv in (true, hog, true, true, true, hog, true, true):
            before = pool.counters.engine_run_recycles
            r = await _run(pool, argv, memory=32 * MiB)
            verdicts.append((r.verdict, r.oom_killed))
            recycled.append(pool.counters.engine_run_recycles > before)
            if argv is not hog:
                assert r.memory_peak < 16 * MiB and r.cpu_time < 0.05, r
        assert verdicts == [("ok", False), ("memory_limit", True), ("ok", False),
                            ("ok", False), ("ok", False), ("memory_limit", True),
                            ("ok", False), ("ok", False)], verdicts
        # Most of the small jobs' containers were recycled at their end (a hog's cgroup
        # may hold too much page cache: the supervisor resets that one), so jobs ran in
        # cgroups the engine reset, the hogs' included.
        assert sum(recycled) >= 4, (recycled, pool.counters)
        before = pool.counters.engine_run_recycles
        r = await _run(pool, ["/bin/true"], last_use=False)
        assert r.verdict == "ok", r
        assert pool.counters.engine_run_recycles == before, pool.counters
        # Every live container has a slot of its own, recycled or not.
        slots = [box.slot for box in pool._live]
        assert len(slots) == len(set(slots)), slots


@pytest.mark.parametrize("path", PATHS)
async def test_a_cancelled_job_is_killed_at_once_and_leaves_nothing(made, path) -> None:  # type: ignore[no-untyped-def]
    """Cancelling the job's task (a client gone, ``kill``, a drain) kills the job within
    100 ms (the engine's STOP, or the supervisor's own freezer kill), and its container
    and cgroup come back fit for the next job."""
    import time

    import trio

    from sandboxd_testing import leftovers

    before = leftovers.snapshot()
    async with _pool(made, path) as pool:
        ended = []
        async with trio.open_nursery() as nursery:
            async def job() -> None:
                try:
                    await _run(pool, ["sleep", "30"], wall_time=60.0)
                finally:
                    ended.append(time.monotonic())

            nursery.start_soon(job)
            await trio.sleep(0.5)
            cancelled = time.monotonic()
            nursery.cancel_scope.cancel()
        assert ended and ended[0] - cancelled < 0.1, ended[0] - cancelled
        r = await _run(pool, ["echo", "next"])
        assert r.verdict == "ok" and r.stdout == b"next\n", r
        _watched(pool, path, 0)
    assert not leftovers.new_leftovers(before)


async def _signal_mid_job(pool: Any, zygote_proc: Any, sig: int, timeout: float,
                          **limits: Any) -> tuple[list[Any], list[Exception], float]:
    """Run ``sleep 30`` in a container of ``pool`` watched by the engine, send its fork
    server ``sig`` 0.3 s in, and wait (at most ``timeout``) for the job to end: its
    results, its NotHandedOver errors, and the seconds from the signal to its end."""
    import trio

    from sandboxd.container import NotHandedOver, RunStep
    from sandboxd.limits import DEFAULT
    from sandboxd_testing import leftovers

    box = await pool.take(pool.spec)
    box.last_use = True
    (server_pid,) = leftovers.fork_servers(zygote_proc.pid)
    errors: list[Exception] = []
    results: list[Any] = []

    async def job() -> None:
        try:
            results.append(await box.run(RunStep(
                argv=["sleep", "30"], limits=dataclasses.replace(DEFAULT, **limits))))
        except NotHandedOver as e:
            errors.append(e)
        finally:
            pool.release(box)

    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(job)
            await trio.sleep(0.3)
            assert pool.counters.engine_runs == 1
            os.kill(server_pid, sig)
            began = trio.current_time()
    return results, errors, trio.current_time() - began


async def test_the_engine_s_death_during_a_job_is_not_handed_over(made, zygote_proc) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL of the fork server (the engine) while it watches a job: the job's task takes
    the watch back, the job's init dies with the engine (PR_SET_PDEATHSIG), so the job ends
    as NotHandedOver (never a hang), which the scheduler runs again in another container
    (tests/integration/test_daemon.py); the pool makes its containers again through a
    new fork server, and the next job runs."""
    import trio

    async with _pool(made, "engine") as pool:
        _results, errors, _ = await _signal_mid_job(pool, zygote_proc, signal.SIGKILL, 20)
        assert errors and "died" in str(errors[0]), errors
        with trio.fail_after(30):
            r = await _run(pool, ["echo", "after"])
        assert r.verdict == "ok" and r.stdout == b"after\n", r
        # The pool's books are whole: nothing counted as being made that is not.
        shapes = list(pool._shapes.values())
        assert all(s.making >= 0 and s.out >= 0 for s in shapes), shapes
        with trio.fail_after(10):  # and the shape fills again, to its target and no more
            while any(warm < target for _s, warm, target in pool.shapes()):
                await trio.sleep(0.01)
        await trio.sleep(0.2)
        assert [(warm, target) for _s, warm, target in pool.shapes()] == [(2, 2)]
        assert all(s.making == 0 and s.out == 0 for s in shapes), shapes


async def test_a_wedged_engine_is_killed_and_its_job_still_ends(made, zygote_proc,  # type: ignore[no-untyped-def]
                                                              monkeypatch) -> None:
    """A fork server that lives but never answers (SIGSTOP, as a wedged one would be)
    while its engine watches a job: the job's task waits for the engine's answer only
    until the job's wall deadline and ENGINE_LATE, then kills that fork server and takes
    the watch back: the job ends as a time limit (or, if its init's death is seen first,
    as NotHandedOver, which the scheduler runs again elsewhere), where it ran past its
    wall limit and never ended before; a new fork server serves the next job."""
    import trio

    from sandboxd import container
    from sandboxd_testing import leftovers

    monkeypatch.setattr(container, "ENGINE_LATE", 1.0)
    async with _pool(made, "engine") as pool:
        (server_pid,) = leftovers.fork_servers(zygote_proc.pid)
        try:
            results, errors, ended = await _signal_mid_job(
                pool, zygote_proc, signal.SIGSTOP, 15, wall_time=1.0)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server_pid, signal.SIGCONT)  # whatever happened: never left stopped
        # Past its wall limit when its task took the watch back: killed for it there
        # (time_limit), unless its init's death with the fork server was seen first.
        assert (results and results[0].verdict == "time_limit"
                and results[0].reason == "wall") or (errors and "died" in str(errors[0])), \
            (results, errors)
        assert 1.5 < ended < 6, ended  # the wall limit, ENGINE_LATE, the death's handling
        with trio.fail_after(10):
            while server_pid in leftovers.fork_servers(zygote_proc.pid):
                await trio.sleep(0.05)
        with trio.fail_after(30):
            r = await _run(pool, ["echo", "after"])
        assert r.verdict == "ok" and r.stdout == b"after\n", r
