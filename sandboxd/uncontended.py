"""Trio's locks and limiters, taken without a pass through the scheduler when free.

Why: trio makes every ``acquire`` a checkpoint, even of a free lock, so each one
costs the supervisor a turn of its run loop (an ``epoll_wait`` with no timeout,
then the task stepped again through trio's frames). A ``/bin/true`` job took
about twenty task steps, eleven of them such checkpoints on locks that nothing
else held or on a socket send that completed at once (counted with a trio
``Instrument``, docs/benchmarks.md). ``held`` takes a free lock at once and
waits, as ``async with lock`` would, only when another task holds it or waits
for it (trio's locks stay fair: ``acquire_nowait`` refuses while anyone waits).

What is given up is the checkpoint itself: a task cancelled just before a free
``held`` notices at its next real wait, not here. Every caller reaches one soon
(the job's own I/O), which is what trio's rule protects.
"""

from __future__ import annotations

from typing import Protocol

import trio


class _Acquirable(Protocol):
    def acquire_nowait(self) -> None: ...
    async def acquire(self) -> None: ...
    def release(self) -> None: ...


class held:
    """``async with held(lock)``: ``async with lock``, without a checkpoint when free.
    ``shield``: the wait for a busy lock is not cancelled (a free one has no wait, so
    needs no cancel scope: the caller of a shielded section pays for one only then)."""

    __slots__ = ("_lock", "_shield")

    def __init__(self, lock: _Acquirable, *, shield: bool = False) -> None:
        self._lock = lock
        self._shield = shield

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            if self._shield:
                with trio.CancelScope(shield=True):
                    await self._lock.acquire()
            else:
                await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
