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

Turnover through the engine (sandboxd/engine.py, docs/engine.md): a used container
whose job cgroup is proven empty goes to the native fork server instead of being
destroyed here. If its shape is short and the cgroup's quick reset succeeds at once,
the engine kills its init, waits for the death and clones the next container into
the same slot and cgroup (RECYCLE): the pool reads one reply per new container.
Otherwise the engine only kills it and says when it is dead (KILL), and the pool
resets the cgroup then, as above. The fillers ask it for new containers (MAKE) once
a shape's plan is known. Misses, warm runtimes, network egress and containers of an
earlier fork server take the path above; on cgroup v2 and in rootless daemons, whose
cgroups lend no ``cgroup.procs``, only KILL is used.

Cancellation: ``take`` cancelled while making a cold container destroys
what it made (shielded) before re-raising.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import socket
import time
from collections import deque
from dataclasses import dataclass, field

import trio

from sandboxd import threads
from sandboxd.cgroups import CgroupBackend, CgroupError, JobCgroup, keepable
from sandboxd.container import NCPU, WATCH_MAX, WATCH_MIN, Container, EngineWatch
from sandboxd.engine import DONE_LIMIT_LOST, Done, Engine, Reply
from sandboxd.isolation import identity
from sandboxd.limits import Limits
from sandboxd.result import SandboxError
from sandboxd.slots import SlotAllocator
from sandboxd.spawn import ContainerSpec, ServerLife, Spawned
from sandboxd.zygote import ZygoteClient

log = logging.getLogger("sandboxd.pool")

#: How long after its engine's death the pool waits before it reuses the slots the engine
#: held: the SIGKILL that death sends each of their inits (PR_SET_PDEATHSIG) is on its way
#: then, not yet proven delivered; a second is ample for it.
ENGINE_GRACE = 1.0
#: How long a shape's fillers leave the engine alone after it failed to make a container.
ENGINE_PAUSE = 1.0

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
    engine_recycles: int = 0  # used containers the engine turned into new ones
    engine_runs: int = 0  # captured jobs the engine watched (RUN)
    engine_run_recycles: int = 0  # of those, containers held by it and remade (``_go``)


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
    engine_pause: float = 0.0  # monotonic: the fillers use the zygote's way until then
    out: int = 0  # its warm containers taken by jobs and not yet given back

    def short(self) -> bool:
        """Fewer containers waiting or under way than the target, those out with jobs
        counted: each comes back at its job's end and is then remade (RECYCLE), so a
        death meanwhile (``Pool._refill``) does not make its replacement a second way."""
        return len(self.warm) + self.making + self.out < self.target


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
        self._engines: set[Engine] = set()  # those whose replies a task of ours reads
        #: Whether used containers may go to the engine (tests turn it off to compare).
        self.use_engine = True
        #: Whether the engine may watch captured jobs (``_run_by_engine``; tests compare).
        self.use_engine_run = True
        self._engine_makes = True  # false once a cgroup lends no cgroup.procs (v2)

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
        for eng in list(self._engines):
            for key, entry in list(eng.pending.items()):
                if isinstance(entry, tuple) and entry[3] is None:  # held after a run
                    with contextlib.suppress(OSError):
                        eng.go(key, False)
                        eng.pending[key] = (*entry[:3], False)
            await self._engine_drain(eng)
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
        if self._engine_make(shape):
            return  # ``making`` stays counted until the engine's reply
        t = time.monotonic()
        box = None
        try:
            box = await self._make(shape.spec)
            box.pool_shape = shape
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
            if shape.short():  # else its filler sleeps on (a take that finds none wakes it)
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
                shape.out += 1
                box.pool_out = True
                box.engine_run = self._run_by_engine
                return box
            self._spawn_destroy(box)
        self.counters.misses += 1
        # A warm runtime pays off only when started ahead of the job: made now, the
        # container starts the job plainly (the executor runs either kind).
        box = await self._make(dataclasses.replace(spec, warm=None))
        box.engine_run = self._run_by_engine
        return box

    def release(self, box: Container) -> None:
        """Destroy a used (or unwanted) container: handed to the engine here and now when
        it can be (its quick reset and one packet, all synchronous: a task of its own per
        job cost the supervisor more than the work), else in the background."""
        if box.engine_took:  # held by the engine after its run (True: already told)
            if box.engine_took is not True:
                self._go(box)
            return
        if self._nursery is None or self._closing or box not in self._live:
            return
        self._count_back(box)
        if not self._hand_to_engine(box):
            self._nursery.start_soon(self._destroy_here, box, True)

    def _spawn_destroy(self, box: Container) -> None:
        if self._nursery is not None and not self._closing:
            self._nursery.start_soon(self._destroy, box, True)

    def _count_back(self, box: Container) -> None:
        """A container taken for a job is back: its shape counts it out no more."""
        if box.pool_out:
            box.pool_out = False
            box.pool_shape.out -= 1

    async def _destroy(self, box: Container, recycle: bool) -> None:
        if box not in self._live:
            return
        self._count_back(box)
        if recycle and self._hand_to_engine(box):
            return
        await self._destroy_here(box, recycle)

    async def _destroy_here(self, box: Container, recycle: bool) -> None:
        """Kill it on the event loop (the engine may not take it), then ``_dead``."""
        if box not in self._live:  # destroyed meanwhile (the pool's close)
            return
        self._live.discard(box)
        await box.destroy(remove_cgroup=False)
        self.counters.destroyed += 1
        await self._dead(box.slot, box.cgroup, recycle)

    async def _dead(self, slot: int, cg: JobCgroup, recycle: bool) -> None:
        """A container is proven dead: its slot is free, its cgroup reset (or removed),
        and a shape short of containers gets one."""
        self.slots.give(slot)
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
        mine = self._refill()
        if mine is not None:
            await self._fill_one(mine)

    def _refill(self) -> _Shape | None:
        """After a death: the first shape short of containers, counted as making one more,
        for the caller to make (None if the engine was asked, or none is short).

        Refill once a job is over rather than when it starts: making a container costs a
        few ms of CPU, which would otherwise compete with the job itself. The caller makes
        the first missing container itself (its slot and cgroup are free now), which saves
        a task and a wake-up of the filler per job; the filler makes any others.
        """
        short = [s for s in self._shapes.values() if s.target > 0 and s.short()]
        mine = short[0] if short else None
        for shape in short[1:]:  # a full shape's filler has nothing to do: not woken
            shape.kick.set()
        if mine is None or self._closing:
            return None
        mine.making += 1
        return None if self._engine_make(mine) else mine

    def _dead_quickly(self, slot: int, cg: JobCgroup) -> bool:
        """``_dead`` without a task, when the cgroup's quick reset does (most deaths the
        engine reports); False, with the slot and cgroup untouched, if it does not."""
        try:
            if not cg.reset_quick():
                return False
        except (CgroupError, OSError):
            return False
        self.slots.give(slot)
        self._free_cgroups.append(cg)
        self.counters.cgroups_recycled += 1
        mine = self._refill()
        if mine is not None and self._nursery is not None:
            self._nursery.start_soon(self._fill_one, mine)
        return True

    # ---------------------------------------------------------------- engine

    def _engine(self, server: ServerLife | None = None) -> Engine | None:
        """The current fork server's engine, if the pool may use it (and ``server``, a
        container's, is that fork server), its replies read by a task of ours."""
        eng = self.zygote.engine
        if not self.use_engine or self._closing or self._nursery is None or eng is None \
                or eng.lost:
            return None
        if server is not None and (eng.life is not server or eng.life.gone()):
            return None  # made by an earlier fork server, or this one is gone
        if eng not in self._engines:
            self._engines.add(eng)
            self._nursery.start_soon(self._engine_reader, eng)
        return eng

    def _hand_to_engine(self, box: Container) -> bool:
        """Give a used container to the engine: RECYCLE if its shape wants another and its
        cgroup's quick reset succeeds now, else KILL (the reset then follows the death).
        False, with nothing done but maybe that quick reset (the caller's path does it
        again), if it may not go (see the module docstring)."""
        if not box.emptied or box.has_egress or box.server is None:
            return False
        eng = self._engine(box.server)
        if eng is None:
            return False
        shape: _Shape | None = box.pool_shape
        cg = box.cgroup
        plan = None
        # Recycled while the shape is short, so that it never holds more than its target;
        # otherwise killed.
        if shape is not None and shape.spec.warm is None and shape.short() \
                and time.monotonic() >= shape.engine_pause:
            plan = self.zygote.cached_plan(shape.spec)
        try:
            procs = cg.procs_files() if plan is not None else []
            # Reset now, with the old init still alive: it is outside the job cgroup and
            # holds none of its files, and the job's processes are proven gone (emptied).
            # The job's memory and pids limits stay for the next container of its shape,
            # whose job most likely has the same (cgroups.keepable: never tiny ones).
            if shape is not None and plan is not None and procs and cg.reset_quick(
                    keepable(box.limits_written)):
                eng.recycle(box.pidfd, plan, identity.slot_map(box.slot), procs,
                            (shape, box.slot, cg, True))
                shape.making += 1
                self.counters.cgroups_recycled += 1
            else:
                eng.kill(box.pidfd, (shape, box.slot, cg, False))
        except (CgroupError, OSError):
            return False
        self._live.discard(box)
        box.hand_off()
        self.counters.destroyed += 1
        return True

    def _run_by_engine(self, box: Container, limits: Limits, sent: float
                       ) -> EngineWatch | None:
        """Have the engine watch the captured job just handed to ``box`` (docs/engine.md,
        stage 3), and, if nothing runs in it after the job (``last_use``), hold it at the
        job's end with its cgroup reset, for the release to remake or kill (``_go``: the
        reset and the next container then cost no exchange of their own). None if the
        engine may not: the job is then watched by its own task, as before."""
        if not self.use_engine_run or box.has_egress or box.server is None:
            return None
        eng = self._engine(box.server)
        if eng is None:
            return None
        cg = box.cgroup
        try:
            files = cg.run_files()
        except (CgroupError, OSError):
            return None
        if files is None:
            return None
        shape: _Shape | None = box.pool_shape
        recycle = None
        written = box.limits_written
        # Held by the engine after the job (its cgroup reset, the container remade or
        # killed at the release: ``_go``) when its reset writes no limit (keepable: the
        # job's own) and nothing reads the container after the job.
        if box.last_use and shape is not None and shape.spec.warm is None \
                and written is not None and keepable(written) == written:
            plan = self.zygote.cached_plan(shape.spec)
            procs = cg.procs_files() if plan is not None else []
            if plan is not None and procs:
                recycle = (box.pidfd, plan, identity.slot_map(box.slot), procs)
        wait = EngineWatch(box, shape if recycle is not None else None, eng)
        try:
            wait.key = eng.run(box.chan.fileno(), files, limits.cpu_time, limits.wall_time,
                               sent, (NCPU, WATCH_MIN, WATCH_MAX), wait, recycle)
        except (OSError, ValueError):
            return None
        self.counters.engine_runs += 1
        return wait

    def _run_done(self, eng: Engine, wait: EngineWatch, done: Done | None) -> None:
        """The engine's answer to a RUN (None: it refused it, having no room): the run's
        counters parsed now, before a held container's reset moves the cgroup's bases on;
        a held container leaves the pool's hands here, its slot and cgroup the engine's
        until its release (``_go``)."""
        if done is None:
            wait.refused = True
            wait.event.set()
            return
        box = wait.box
        cg = box.cgroup
        try:
            wait.stats = cg.stats_from(done.texts, ended=done.empty)
        except CgroupError as e:
            wait.error = e
            log.error("pool: the engine's counters of %s: %s", cg.name, e)
        if done.held:
            with contextlib.suppress(CgroupError):  # counters unparsed: bases as they were
                cg.engine_reset(bool(done.flags & DONE_LIMIT_LOST))
            # Held there until its release (``_go``); its slot and cgroup are in the
            # engine's hands (the death of the engine gives them back: _engine_lost).
            eng.pending[wait.key + 1] = (wait.shape, box.slot, cg, None)
            self.counters.destroyed += 1
            self._live.discard(box)
            box.engine_took = (eng, wait.key + 1)  # its task reads "exited", then lets go
        wait.done = done
        wait.event.set()

    def _go(self, box: Container) -> None:
        """A container the engine holds after its run is released: remade in its slot and
        cgroup if its shape is short (as ``_hand_to_engine``'s RECYCLE), else killed."""
        eng, key = box.engine_took
        box.engine_took = True  # still not ours; told once
        self._count_back(box)
        entry = eng.pending.get(key)
        if entry is None or entry[3] is not None:  # the engine died (_engine_lost), or told
            return
        shape, slot, cg, _ = entry
        make = shape is not None and not self._closing and self._nursery is not None \
            and shape.short() and time.monotonic() >= shape.engine_pause
        try:
            eng.go(key, make)
        except OSError:  # gone: its death (_engine_lost) gives back the slot and cgroup
            return
        eng.pending[key] = (shape, slot, cg, make)
        if make:
            shape.making += 1
            self.counters.cgroups_recycled += 1
            self.counters.engine_run_recycles += 1

    def _engine_make(self, shape: _Shape) -> bool:
        """Ask the engine for a new container of ``shape`` (a slot and cgroup taken here);
        False if it cannot be asked (no engine, the plan not known yet, a warm runtime,
        a cgroup that lends no cgroup.procs, or a failure of its within ENGINE_PAUSE)."""
        if shape.spec.warm is not None or not self._engine_makes \
                or time.monotonic() < shape.engine_pause:
            return False
        plan = self.zygote.cached_plan(shape.spec)
        eng = self._engine() if plan is not None else None
        if eng is None or plan is None:
            return False
        try:
            slot = self.slots.take()
        except SandboxError:
            return False
        cg = None
        try:
            cg = self._cgroup()
            procs = cg.procs_files()
            if not procs:  # cgroup v2: its init cannot move the job process (pool._make)
                self._engine_makes = False
                raise CgroupError("no cgroup.procs files to lend")
            eng.make(plan, identity.slot_map(slot), procs, (shape, slot, cg, True))
        except (CgroupError, OSError):
            self.slots.give(slot)
            if cg is not None:
                self._free_cgroups.append(cg)
            return False
        return True

    async def _engine_reader(self, eng: Engine) -> None:
        """Take the engine's replies; on its death, what it held comes back to the pool."""
        try:
            while True:
                await trio.lowlevel.wait_readable(eng.sock)
                while (reply := eng.receive()) is not None:
                    await self._engine_reply(eng, reply)
        except EOFError as e:
            if not self._closing:
                await self._engine_lost(eng, str(e))

    async def _engine_drain(self, eng: Engine, timeout: float = 5.0) -> None:
        """At close: take every reply still owed (their containers are destroyed), or
        give up on the engine after ``timeout`` (its fork server's end kills the rest)."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(timeout):
                try:
                    while eng.pending:
                        while (reply := eng.receive()) is not None:
                            await self._engine_reply(eng, reply)
                        if eng.pending:
                            await trio.lowlevel.wait_readable(eng.sock)
                except EOFError:
                    pass
            await self._engine_lost(eng, "the pool closed with replies still owed", dead=False)

    async def _engine_reply(self, eng: Engine, reply: Reply | Done) -> None:
        entry = eng.pending.pop(reply.key, None)
        if isinstance(entry, EngineWatch):
            self._run_done(eng, entry, reply if isinstance(reply, Done) else None)
            return
        if entry is None or isinstance(reply, Done):
            # Not ours, or a run's end for another request (bugs of the engine's): nothing
            # to attach it to.
            if isinstance(reply, Reply):
                for fd in (reply.pidfd, reply.chan):
                    if fd >= 0:
                        os.close(fd)
            log.error("pool: the engine answered an unknown request %d", reply.key)
            return
        shape, slot, cg, making = entry
        if not making:  # a KILL's: the init is dead
            if self._closing or self._nursery is None:
                await self._dead(slot, cg, False)
            elif not self._dead_quickly(slot, cg):
                self._nursery.start_soon(self._dead, slot, cg, True)
            return
        shape.making -= 1
        if reply.pid <= 0:
            # No new container; the old init, if any, is dead (the engine waited for it)
            # and the cgroup was reset before it went: both free again. The shape's
            # fillers use the zygote's way for a while (its errors are logged there).
            self.counters.spawn_failures += 1
            log.warning("pool: the engine could not make a container: %s",
                        os.strerror(reply.err))
            self.slots.give(slot)
            self._free_cgroups.append(cg)
            shape.engine_pause = time.monotonic() + ENGINE_PAUSE
            shape.kick.set()
            return
        # Its kind given, so that Python does not ask the kernel (three calls).
        chan = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=reply.chan)
        spawned = Spawned(reply.pid, reply.pidfd, chan,
                          job_uid=identity.slot_map(slot).host_job, server=eng.life, moved=True)
        box = Container(spawned, cg)
        box.slot = slot
        self._live.add(box)
        try:
            if reply.job_pid:
                box.ready_read(reply.job_pid)  # the engine read its ready
            else:
                await box.wait_ready(now=True)
        except Exception as e:  # typed or not, this reader must go on: the pool depends on it
            self.counters.spawn_failures += 1
            log.warning("pool: could not make a warm container: %s", e)
            shape.engine_pause = time.monotonic() + ENGINE_PAUSE  # and not spin on it
            if self._closing or self._nursery is None:
                await self._destroy(box, recycle=False)
            else:  # destroyed on our path (never used, so not emptied: not the engine's)
                self._nursery.start_soon(self._destroy, box, True)
            return
        self.counters.created += 1
        self.counters.refills += 1
        self.counters.engine_recycles += 1
        if self._closing:
            await self._destroy(box, recycle=False)
            return
        box.pool_shape = shape
        shape.warm.append(box)
        if shape.short():
            shape.kick.set()

    async def _engine_lost(self, eng: Engine, why: str, dead: bool = True) -> None:
        """The engine (its fork server) is gone, or given up on: each container it held
        dies with it (PR_SET_PDEATHSIG kills every init it made or was killing). After
        ENGINE_GRACE, their cgroups are removed (whatever is left in them killed) and
        their slots given back; the fillers make new containers. Given up on while it
        lives (``dead`` false: the pool closing past its deadline), it kills what it
        makes from then on, but when is not proven: those slots stay locked until this
        process ends, rather than be given to another container too soon."""
        self._engines.discard(eng)
        lost = []
        for entry in eng.pending.values():
            if isinstance(entry, EngineWatch):  # its job died with the engine's inits
                entry.event.set()
            else:
                lost.append(entry)
        eng.pending.clear()
        eng.close()
        if not lost:
            return
        log.warning("pool: the engine is gone (%s) with %d containers in hand", why, len(lost))
        with trio.CancelScope(shield=True):
            if dead:
                await trio.sleep(ENGINE_GRACE)
            for shape, slot, cg, making in lost:
                if making:
                    shape.making -= 1
                with contextlib.suppress(CgroupError, OSError):
                    await threads.run_sync(cg.remove)
                if dead:
                    self.slots.give(slot)
                if shape is not None:
                    shape.kick.set()

    # ----------------------------------------------------------------- stats

    def cgroup_count(self) -> int:
        """Job cgroups in existence: those of live containers, of those the engine is
        remaking, and the recycled ones."""
        held = sum(not isinstance(w, EngineWatch) for e in self._engines
                   for w in e.pending.values())
        return len(self._live) + len(self._free_cgroups) + held

    def shapes(self) -> list[tuple[ContainerSpec, int, int]]:
        """(shape, warm now, target) for every shape in use."""
        return [(s.spec, len(s.warm), s.target) for s in self._shapes.values()]


def _alive(box: Container) -> bool:
    """False once the container's init has exited (its pidfd is readable), or its fork
    server has (the init then has its SIGKILL coming: spawn.ServerLife)."""
    if box.server is not None:
        return box.server.alive_with(box.pidfd)
    p = select.poll()
    p.register(box.pidfd, select.POLLIN)
    return not p.poll(0)
