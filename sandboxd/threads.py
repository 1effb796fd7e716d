"""The supervisor's per-job hand-offs to a worker thread, at less CPU than trio's own.

``trio.to_thread.run_sync`` costs ~51 µs of process CPU per call here (measured:
a no-op, 3000 calls), and a job makes up to two of them (its process's move into
its cgroup on an idle daemon, the used cgroup's reset when page cache must be
reclaimed). Part of that is what sandboxd does not use: a thread name formatted
for every call and set, then reset, with ``pthread_setname_np`` (a write to
``/proc/self/task/TID/comm`` each), the capacity limiter, the contextvars copy.
``run_sync`` keeps the rest, on trio's public low-level API: its cache of idle
threads (``start_thread_soon``), the result handed back to the waiting task
through the run's token; ~37 µs per call, measured the same way.

Semantics are those of ``to_thread.run_sync`` without ``abandon_on_cancel``: the
call runs to its end even if the task is cancelled meanwhile (a cgroup must not be
left half-written), and the cancellation is raised at the caller's next checkpoint.
No limit on threads at once: callers are bounded by the jobs running (each makes
at most one call at a time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")


async def run_sync(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread; its result, or its exception raised here."""
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(outcome: object) -> None:
        token.run_sync_soon(trio.lowlevel.reschedule, task, outcome)

    trio.lowlevel.start_thread_soon(lambda: fn(*args), deliver)  # type: ignore[arg-type]
    return await trio.lowlevel.wait_task_rescheduled(  # type: ignore[no-any-return]
        lambda _: trio.lowlevel.Abort.FAILED)
