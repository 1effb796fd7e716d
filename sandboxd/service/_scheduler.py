"""Admission, concurrency and CPU pinning: the order in which jobs get containers.

Strategy: one ``Scheduler`` for the daemon: a bounded queue (``admit``: past
it, the front door answers busy at once) in front of a FIFO capacity limiter
(the concurrency); for pinned jobs a ``CpuAllocator`` that gives each run step
a CPU no other pinned step has meanwhile. ``runner(job)`` is the
``jobs.StepRunner`` of one job: it waits its turn, leases a container from
the pool, runs the step and keeps the used container on the job, to be
destroyed only once the answer is on its way (``Job.release``).

This module knows nothing of transports or wire formats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import trio

from sandboxd import jobs
from sandboxd.cgroups import CgroupError
from sandboxd.container import Container, NotHandedOver, RunStep
from sandboxd.interactive import PairRunner, Ran
from sandboxd.log import event
from sandboxd.pool import Pool
from sandboxd.result import Result, SandboxError
from sandboxd.spawn import ContainerSpec
from sandboxd.uncontended import held


@dataclass(eq=False)
class Job:
    """One admitted job: what ``ps`` shows of it, and the handle that cancels it.

    ``ref`` is unique in the daemon (``kill`` takes it); ``id`` is the one its
    submitter chose, unique only among that submitter's jobs.
    """

    ref: str
    id: str
    profile: str
    client: str
    spec: jobs.JobSpec
    submitted: float = field(default_factory=time.monotonic)
    state: str = "queued"
    queue_wait: float = 0.0
    container: Container | None = None  # the one running a step now, for ps's live usage
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    cancel_reason: str = ""
    used: list[Container] = field(default_factory=list)

    def cancel(self, reason: str) -> None:
        """End the job soon; its answer is ``cancelled`` with ``reason``. Idempotent."""
        if not self.cancel_reason:
            self.cancel_reason = reason
        self.scope.cancel()

    def release(self, pool: Pool) -> None:
        while self.used:
            pool.release(self.used.pop())


class CpuAllocator:
    """One CPU per pinned step, none shared between pinned steps; FIFO when all are taken.

    Pinning makes a judge's CPU time depend on the program, not on what else
    runs: no migrations, a cache of its own among pinned jobs. Unpinned steps
    still float over every CPU (a host that judges should pin every job). The
    highest-numbered free CPU goes first: CPU 0 takes most of the host's
    housekeeping, and a run that finds the CPU its predecessor used finds the
    same conditions.
    """

    def __init__(self, cpus: list[int]) -> None:
        self.cpus = sorted(cpus)
        self._free = set(self.cpus)
        self._slots = trio.Semaphore(len(self.cpus))  # FIFO: first to wait, first served

    @contextlib.asynccontextmanager
    async def cpu(self) -> AsyncIterator[int]:
        """A CPU of its own until the block ends.

        Cancellation: while waiting, nothing is held; once granted, the CPU is
        handed back however the block ends.
        """
        await self._slots.acquire()
        cpu = max(self._free)
        self._free.remove(cpu)
        try:
            yield cpu
        finally:
            self._free.add(cpu)
            self._slots.release()


class Scheduler:
    """A bounded queue in front of the concurrency limit; counts what ``stats`` reports."""

    def __init__(self, pool: Pool, concurrency: int, queue_length: int,
                 cpus: list[int] | None = None) -> None:
        self.pool = pool
        self.concurrency = concurrency
        self.limiter = trio.CapacityLimiter(concurrency)
        self.cpus = CpuAllocator(cpus or sorted(os.sched_getaffinity(0)))
        self.queue_length = queue_length
        self.jobs: dict[str, Job] = {}
        self.verdicts: Counter[str] = Counter()
        self.queue_waits: deque[float] = deque(maxlen=2000)
        self.completed = 0
        self.busy_refusals = 0
        self.compiles = 0  # compile steps run: a batch of N tests must add exactly 1
        self.pinned_steps = 0

    @property
    def queued(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state == "queued")

    @property
    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state == "running")

    def admit(self) -> bool:
        """Room for one more job: ``concurrency`` may run and ``queue_length`` more may wait."""
        return len(self.jobs) < self.concurrency + self.queue_length

    def runner(self, job: Job) -> jobs.StepRunner:
        async def run_step(spec: ContainerSpec, step: RunStep, collect: bool,
                           pin: bool = False) -> tuple[Result, dict[str, bytes] | None]:
            t = time.monotonic()
            async with held(self.limiter), contextlib.AsyncExitStack() as stack:
                if pin:  # inside the limiter: at most `concurrency` wait for a CPU
                    step = dataclasses.replace(step, cpuset=str(
                        await stack.enter_async_context(self.cpus.cpu())))
                    self.pinned_steps += 1
                if collect:
                    self.compiles += 1
                if job.state == "queued":
                    job.queue_wait = time.monotonic() - t
                    self.queue_waits.append(job.queue_wait)
                job.state = "running"
                files = None
                for attempt in (1, 2):  # a second container if the first's init was gone
                    container = await self.pool.take(spec)
                    job.container = container
                    # Nothing of it is read after the run: the engine may recycle it then.
                    container.last_use = not collect and step.artifacts is None
                    try:
                        result = await container.run(step)
                        if collect and result.verdict == "ok":
                            files = await container.collect()
                        if step.artifacts is not None:
                            await container.collect_artifacts(step.artifacts)
                        break
                    except NotHandedOver as e:
                        result = Result.sandbox_error(e.reason)
                        if attempt == 2 or not step.retryable:
                            break
                        event("job_handed_again", logging.WARNING, job=job.ref,
                              reason=e.reason)
                    except SandboxError as e:
                        result = Result.sandbox_error(e.reason)
                        break
                    except CgroupError as e:  # the host's (a pinned job without cpuset)
                        result = Result.sandbox_error(str(e))
                        break
                    finally:
                        job.container = None
                        # Its job is over and killed; destroying the rest waits until the
                        # answer is on its way (Job.release), off the critical path.
                        job.used.append(container)
            return result, files

        return run_step

    def pair_runner(self, job: Job) -> PairRunner:
        """The ``interactive.PairRunner`` of one job: two containers, one concurrency slot
        (the interactor mostly waits for the solution), the solution pinned if asked."""
        async def run_pair(solution: ContainerSpec, interactor: ContainerSpec,
                           body: Callable[[Container, Container, str | None],
                                          Awaitable[tuple[Ran, Ran]]],
                           pin: bool = False) -> tuple[Ran, Ran]:
            t = time.monotonic()
            async with held(self.limiter), contextlib.AsyncExitStack() as stack:
                cpuset = None
                if pin:
                    cpuset = str(await stack.enter_async_context(self.cpus.cpu()))
                    self.pinned_steps += 1
                if job.state == "queued":
                    job.queue_wait = time.monotonic() - t
                    self.queue_waits.append(job.queue_wait)
                job.state = "running"
                sol_box = await self.pool.take(solution)
                job.used.append(sol_box)  # released with the job's, however this ends
                int_box = await self.pool.take(interactor)
                job.used.append(int_box)
                job.container = sol_box
                try:
                    return await body(sol_box, int_box, cpuset)
                except CgroupError as e:  # the host's, not the job's
                    failed = Ran(Result.sandbox_error(str(e)), None)
                    return failed, failed
                finally:
                    job.container = None

        return run_pair
