"""sandboxd.threads.run_sync: to_thread.run_sync's semantics, at less CPU."""

from __future__ import annotations

import threading

import pytest
import trio

from sandboxd import threads


def test_returns_the_result_from_another_thread() -> None:
    async def main() -> None:
        got = await threads.run_sync(lambda a, b: (a + b, threading.get_ident()), 2, 3)
        assert got[0] == 5
        assert got[1] != threading.get_ident()

    trio.run(main)


def test_raises_the_functions_exception() -> None:
    def boom() -> None:
        raise OSError(5, "cgroup write failed")

    async def main() -> None:
        with pytest.raises(OSError, match="cgroup write failed"):
            await threads.run_sync(boom)

    trio.run(main)


def test_a_cancelled_call_runs_to_its_end_and_the_cancel_follows() -> None:
    """A cgroup write must not be abandoned halfway: the caller waits for it."""
    started, release = threading.Event(), threading.Event()
    done: list[bool] = []

    def slow() -> str:
        started.set()
        release.wait(10)
        done.append(True)
        return "written"

    async def main() -> None:
        got: list[str] = []
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                async def call() -> None:
                    got.append(await threads.run_sync(slow))
                    await trio.lowlevel.checkpoint()  # the cancel is raised here
                    got.append("not reached")

                n.start_soon(call)
                await trio.to_thread.run_sync(started.wait)
                scope.cancel()
                await trio.sleep(0.05)
                assert not done  # still waiting for the thread, not abandoned
                release.set()
        assert scope.cancelled_caught
        assert done == [True] and got == ["written"]

    trio.run(main)
