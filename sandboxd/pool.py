"""The warm pool: containers already made, namespaced, mounted and waiting, per shape.

Strategy: a *shape* is everything fixed when a container is made (its
``ContainerSpec`` without the slot). For each shape in use the pool keeps
``size`` containers whose job process already waits for a job (identity,
capabilities and Landlock already applied), so a pool hit costs a job
nothing but the hand-over. A taker gets a warm container if one is ready,
or else makes one on the spot (a cold start, never an error). A shape may
include a warm runtime (``ContainerSpec.warm``, sandboxd/runtimes/): its
containers then also hold the interpreter already started, waiting for the
job; a miss of such a shape makes a plain container, which starts the job's
interpreter as any job would. Every taken
container is single use: ``release`` destroys it in the background, proves
its cgroup empty and recycles the cgroup (deleted memory cgroups linger in
the kernel, so we do not churn them), returns its uid slot, and the filler
makes a fresh one.

Slots: each container gets a slot of its own (its host uids), taken from a
``slots.SlotAllocator`` before it is made and given back once it is proven
dead, so that no two live containers of the host ever share a uid, even
across daemons and ``run-once`` (slots.py says where the lock lives).

Cancellation: ``take`` cancelled while making a cold container destroys
what it made (shielded) before re-raising.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import select
import time
from collections import deque
from dataclasses import dataclass, field

import trio

from sandboxd import threads
from sandboxd.cgroups import CgroupBackend, CgroupError, JobCgroup
from sandboxd.container import Container
from sandboxd.result import SandboxError
from sandboxd.slots import SlotAllocator
from sandboxd.spawn import ContainerSpec
from sandboxd.zygote import ZygoteClient

log = logging.getLogger("sandboxd.pool")

@dataclass
class PoolCounters:
    hits: int = 0
    misses: int = 0
    created: int = 0
    destroyed: int = 0
    spawn_failures: int = 0
    cgroups_recycled: int = 0
    refill_seconds: float = 0.0  # total time spent making warm containers
    refills: int = 0


def shape_of(spec: ContainerSpec) -> ContainerSpec:
    # A job's spec has no slot yet (the pool gives one): no copy to make then.
    return spec if spec.slot == 0 else dataclasses.replace(spec, slot=0)


@dataclass
class _Shape:
    spec: ContainerSpec
    target: int
    warm: deque[Container] = field(default_factory=deque)
    making: int = 0
    kick: trio.Event = field(default_factory=trio.Event)


class Pool:
    def __init__(self, zygote: ZygoteClient, backend: CgroupBackend, size: int,
                 slots: SlotAllocator | None = None) -> None:
        self.zygote = zygote
        self.backend = backend
        self.size = size
        self.slots = slots or SlotAllocator()
        self.counters = PoolCounters()
        self._shapes: dict[ContainerSpec, _Shape] = {}
        self._free_cgroups: list[JobCgroup] = []
        self._cg_seq = 0
        self._nursery: trio.Nursery | None = None
        self._live: set[Container] = set()
        self._closing = False

    # ------------------------------------------------------------- lifecycle

    async def run(self, shapes: list[ContainerSpec] = (), *,  # type: ignore[assignment]
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the pool; ``task_status.started()`` once the initial shapes are warm.

        Cancellation: on cancel, every container the pool holds is destroyed
        (shielded) and every cgroup removed.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for spec in shapes:
                    self.ensure(spec)
                with trio.move_on_after(60):
                    await self.wait_warm()
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self.close()

    async def wait_warm(self) -> None:
        while any(len(s.warm) < s.target for s in self._shapes.values()):
            await trio.sleep(0.01)

    async def close(self) -> None:
        self._closing = True
        for shape in self._shapes.values():
            while shape.warm:
                await self._destroy(shape.warm.popleft(), recycle=False)
        for box in list(self._live):
            await self._destroy(box, recycle=False)
        for cg in self._free_cgroups:
            with contextlib.suppress(CgroupError, OSError):
                cg.remove()
        self._free_cgroups.clear()

    def ensure(self, spec: ContainerSpec, target: int | None = None) -> None:
        """Keep ``target`` (default: the pool size) warm containers of this shape."""
        key = shape_of(spec)
        if key not in self._shapes and self._nursery is not None and not self._closing:
            shape = _Shape(key, self.size if target is None else target)
            self._shapes[key] = shape
            if shape.target > 0:
                self._nursery.start_soon(self._filler, shape)

    # ---------------------------------------------------------------- making

    def _cgroup(self) -> JobCgroup:
        if self._free_cgroups:
            return self._free_cgroups.pop()
        self._cg_seq += 1
        return self.backend.create(f"sandboxd-box-{self._cg_seq}")

    async def _make(self, spec: ContainerSpec) -> Container:
        slot = self.slots.take()
        cg = self._cgroup()
        box: Container | None = None
        try:
            # Its init moves the job process into ``cg`` itself where the backend lends the
            # cgroup.procs files (v1): no write here, no RCU grace period waited for.
            spawned = await self.zygote.spawn(shape_of(spec), slot, cg.procs_files())
            box = Container(spawned, cg)
            box.slot = slot
            self._live.add(box)
            await box.wait_ready(spec.warm)
            self.counters.created += 1
            return box
        except BaseException:
            self.counters.spawn_failures += 1
            with trio.CancelScope(shield=True):
                if box is not None:
                    await self._destroy(box, recycle=False)
                else:
                    self.slots.give(slot)
                    self._free_cgroups.append(cg)
            raise

    async def _filler(self, shape: _Shape) -> None:
        async with trio.open_nursery() as nursery:
            while not self._closing:
                while len(shape.warm) + shape.making < shape.target:
                    shape.making += 1
                    nursery.start_soon(self._fill_one, shape)
                await shape.kick.wait()
                shape.kick = trio.Event()

    async def _fill_one(self, shape: _Shape) -> None:
        t = time.monotonic()
        box = None
        try:
            box = await self._make(shape.spec)
        except Exception as e:
            # A SandboxError is the host's or the container's (logged, tried again); any
            # other is our bug, logged with its traceback. Neither ends the pool: raised
            # here, it would end the daemon with every job in it.
            if isinstance(e, SandboxError):
                log.warning("pool: could not make a warm container: %s", e)
            else:
                log.error("pool: making a warm container failed: %r", e, exc_info=e)
            await trio.sleep(0.5)  # do not spin on a broken host
            return
        finally:
            shape.making -= 1
            if box is None:
                shape.kick.set()  # the filler tries again
        self.counters.refill_seconds += time.monotonic() - t
        self.counters.refills += 1
        if self._closing:
            await self._destroy(box, recycle=False)
        else:
            shape.warm.append(box)
            if len(shape.warm) + shape.making < shape.target:  # else its filler sleeps on
                shape.kick.set()

    # --------------------------------------------------------------- leasing

    async def take(self, spec: ContainerSpec) -> Container:
        """A ready container of this shape: warm if one waits, otherwise made now."""
        shape = self._shapes.get(shape_of(spec))
        while shape is not None and shape.warm:
            box = shape.warm.popleft()
            if not shape.warm:
                shape.kick.set()  # dry: refill now, though it competes with this job
            if _alive(box):
                self.counters.hits += 1
                return box
            self._spawn_destroy(box)
        self.counters.misses += 1
        # A warm runtime pays off only when started ahead of the job: made now, the
        # container starts the job plainly (the executor runs either kind).
        return await self._make(dataclasses.replace(spec, warm=None))

    def release(self, box: Container) -> None:
        """Destroy a used (or unwanted) container in the background."""
        self._spawn_destroy(box)

    def _spawn_destroy(self, box: Container) -> None:
        if self._nursery is not None and not self._closing:
            self._nursery.start_soon(self._destroy, box, True)

    async def _destroy(self, box: Container, recycle: bool) -> None:
        if box not in self._live:
            return
        self._live.discard(box)
        await box.destroy(remove_cgroup=False)
        self.counters.destroyed += 1
        self.slots.give(box.slot)
        cg = box.cgroup
        try:
            if not recycle or self._closing:
                raise CgroupError("not recycling")
            if not cg.reset_quick():
                await threads.run_sync(cg.reset)
            self._free_cgroups.append(cg)
            self.counters.cgroups_recycled += 1
        except (CgroupError, OSError):
            with contextlib.suppress(CgroupError, OSError):
                await threads.run_sync(cg.remove)
        # Refill once a job is over rather than when it starts: making a container
        # costs a few ms of CPU, which would otherwise compete with the job itself.
        # This task makes the first missing container itself (its slot and cgroup are
        # free now), which saves a task and a wake-up of the filler per job; the filler
        # makes any others.
        short = [s for s in self._shapes.values()
                 if s.target > 0 and len(s.warm) + s.making < s.target]
        mine = short[0] if short else None
        for shape in short[1:]:  # a full shape's filler has nothing to do: not woken
            shape.kick.set()
        if mine is not None and not self._closing:
            mine.making += 1
            await self._fill_one(mine)

    # ----------------------------------------------------------------- stats

    def cgroup_count(self) -> int:
        """Job cgroups in existence: those of live containers plus the recycled ones."""
        return len(self._live) + len(self._free_cgroups)

    def shapes(self) -> list[tuple[ContainerSpec, int, int]]:
        """(shape, warm now, target) for every shape in use."""
        return [(s.spec, len(s.warm), s.target) for s in self._shapes.values()]


def _alive(box: Container) -> bool:
    """False once the container's init has exited (its pidfd is readable), or its fork
    server has (the init then has its SIGKILL coming: spawn.ServerLife)."""
    p = select.poll()
    p.register(box.pidfd, select.POLLIN)
    return not p.poll(0) and not (box.server is not None and box.server.gone())
