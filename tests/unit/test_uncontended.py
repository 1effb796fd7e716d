"""``held``: trio's lock and limiter without a checkpoint when free, fair when not."""

from __future__ import annotations

import trio
import trio.testing

from sandboxd.uncontended import held


async def test_a_free_lock_is_taken_without_a_pass_through_the_scheduler() -> None:
    for lock in (trio.Lock(), trio.CapacityLimiter(1)):
        with trio.testing.assert_no_checkpoints():
            async with held(lock):
                pass
        with trio.testing.assert_checkpoints():  # trio's own: what ``held`` saves
            async with lock:
                pass


async def test_a_held_lock_is_waited_for_in_turn() -> None:
    for lock in (trio.Lock(), trio.CapacityLimiter(1)):
        order: list[str] = []

        async def take(name: str, lock: trio.Lock | trio.CapacityLimiter = lock,
                       order: list[str] = order) -> None:
            async with held(lock):
                order.append(name)
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            for name in "abc":
                nursery.start_soon(take, name)
                await trio.sleep(0.001)  # a takes it; b, then c, wait in that order
        assert order == ["a", "b", "c"]
        assert not (lock.locked() if isinstance(lock, trio.Lock) else lock.borrowed_tokens)


async def test_a_shielded_wait_for_a_busy_lock_outlives_a_cancel() -> None:
    """``held(lock, shield=True)``: a caller cancelled while it waits still gets the lock
    (a job's result is sent whatever happens to its task); unshielded, it is cancelled."""
    for shield in (True, False):
        lock = trio.Lock()
        got: list[bool] = []

        async def take(lock: trio.Lock = lock, shield: bool = shield,
                       got: list[bool] = got) -> None:
            with trio.CancelScope() as scope:
                scope.cancel()  # cancelled before it waits
                async with held(lock, shield=shield):
                    got.append(True)

        async with trio.open_nursery() as nursery:
            await lock.acquire()
            nursery.start_soon(take)
            await trio.sleep(0.01)
            lock.release()
        assert got == ([True] if shield else []), shield
        assert not lock.locked()
