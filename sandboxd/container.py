"""The supervisor's side of one container: hand it a job, watch it, measure it, destroy it.

Strategy: a ``Container`` wraps what ``spawn.spawn`` returned (the init's
pid, pidfd and control channel; sandboxd/spawn.py makes containers) plus
the job cgroup the job process was
placed in as soon as it reported ready. ``run`` writes the step's limits to
the cgroup, sends files, argv and the stdio descriptors, then watches three
things at once: the output pipes (capped; optionally streamed), a watchdog
that reads the cgroup's CPU counter on a schedule that shrinks as the limit
nears (so that no job runs more than a few ms of CPU past it), and the init's
report of the job's exit. Any limit kills the whole cgroup with the freezer.

A warm container (``wait_ready`` with a ``WarmStart``: sandboxd/runtimes/)
has its interpreter started before the job, with the job's stdio made then:
``run`` writes stdin into the memfd the interpreter already holds, hands the
bootstrap the exec request without descriptors, and reads the pipes made at
warm-up. The cgroup's CPU baseline is read at the hand-over, as for every job,
so the interpreter's start-up is not the job's; its memory is (the peak).

Wall time runs from the moment the init handed the job over (its monotonic
clock, which is ours too: no time namespace) to the moment it reaped the job
process. CPU time, user/system split and peak memory come from the cgroup,
so children and threads count.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from sandboxd import channel, egress, threads
from sandboxd.cgroups import (
    CgroupError,
    CgroupLimits,
    CgroupStats,
    JobCgroup,
    MemoryInUse,
    dynmods_favoured,
)
from sandboxd.isolation import _libc, rlimits
from sandboxd.limits import Limits
from sandboxd.result import Measured, Result, SandboxError, decide
from sandboxd.spawn import Spawned, WarmStart, job_env, job_message, warm_message
from sandboxd.uncontended import held
from sandboxd.workspace import Artifacts, Upload, collect, unpack

OutputCallback = Callable[[str, bytes], Awaitable[None]]

# The watchdog never sleeps less than this near the CPU limit, nor more than
# WATCH_MAX far from it (a job may gain CPUs when others finish).
WATCH_MIN = 0.001
WATCH_MAX = 0.25
READ_CHUNK = 1 << 16
#: The largest output cap (each of stdout and stderr) the init captures itself (``run``):
#: its answer is one frame on the channel, which holds both.
CAPTURE_MAX = 64 << 20
WARM_TIMEOUT = 30.0  # seconds an interpreter may take to start in a warm container
NCPU = os.cpu_count() or 1
log = logging.getLogger("sandboxd.container")
# How long past a watched job's wall deadline (or a STOP) the engine's answer may be late
# before the engine is taken for wedged (a stopped or stuck fork server): its fork server
# is then killed, and its death ends every run it watched as it does (NotHandedOver).
# Without it, a job whose engine never answered ran past its wall limit and never ended.
ENGINE_LATE = 5.0


@dataclass(slots=True)
class RunStep:
    """One execution in one container: what to run and under which limits."""

    argv: list[str]
    limits: Limits
    files: dict[str, bytes] = field(default_factory=dict)
    stdin: bytes = b""
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/box"
    on_output: OutputCallback | None = None  # streaming: called with each chunk
    # ``on_output`` only records (never waits on a reader): the job keeps the one-task
    # watch (``_supervise_one``), which calls it with each chunk as it reads.
    output_inline: bool = False
    stdin_stream: AsyncIterator[bytes] | None = None  # interactive stdin instead of ``stdin``
    cpuset: str | None = None  # CPUs the job may run on (e.g. "1": pinned), None: any
    address_space: int | None = None  # RLIMIT_AS per process (memory_mode "address_space")
    # Wired stdio (an interactive problem: sandboxd/interactive.py): descriptors the
    # caller made (a pipe's end each) that become the job's stdin / stdout instead of
    # ``stdin`` and a captured pipe. ``run`` owns them from the call on: it closes them
    # once handed over (or on failure), so that the other end sees EOF when the job ends.
    stdin_fd: int | None = None
    stdout_fd: int | None = None
    workspace: Upload | None = None  # an archive to unpack into /box before the hand-over
    box_caps: tuple[int, int] = (65536, 64 << 20)  # its caps: entries, bytes
    artifacts: ArtifactRequest | None = None  # globs to collect from /box after the run
    network: egress.Plan | None = None  # outbound TCP it may make (sandboxd/egress.py); None: none

    @property
    def retryable(self) -> bool:
        """A failed hand-over (``NotHandedOver``) spent nothing of it: no wired descriptor
        (closed with the attempt), no workspace unpacked into that container's /box, no
        network attached to it. Another container can run it as if the first never was."""
        return (self.stdin_fd is None and self.stdout_fd is None and self.workspace is None
                and self.network is None)


class NotHandedOver(SandboxError):
    """The container's init was gone before it got the job (its fork server died, say,
    taking every warm init with it, between the pool's check and the hand-over), or died
    under it before any of its output went out (to a streaming callback): nothing of the
    job ran, or nothing anyone saw (its container, /box and all, is gone), so a
    ``retryable`` step may run again on another container, as if the first never was.

    The second case is the same race one step later: the init's socket took the job
    (its buffer did) while the SIGKILL its fork server's death sends it was pending.
    An init dies under a job only by the sandbox's own failure: the job cannot signal
    it (PID 1 of its namespace, another uid) nor charge it memory (not in its cgroup)."""


@dataclass(slots=True)
class ArtifactRequest:
    """The job's artifact globs and caps; ``found`` is filled in after the run."""

    globs: tuple[str, ...]
    max_files: int
    max_bytes: int
    found: Artifacts | None = None


@dataclass(eq=False)
class EngineWatch:
    """A captured job the engine watches (``Pool._run_by_engine``, docs/engine.md's stage
    3): ``event`` is set once its answer is in (``done``, an ``engine.Done``; None if the
    engine died first), with the run's counters (``stats``) or why they could not be
    parsed (``error``); ``refused``: the engine had no room, the job is watched here."""

    box: Container
    shape: Any
    eng: Any = None
    key: int = 0
    event: trio.Event = field(default_factory=trio.Event)
    done: Any = None
    stats: CgroupStats | None = None
    error: Exception | None = None
    refused: bool = False

    def stop(self) -> None:
        """Have the engine kill the job now (OSError if it cannot be asked)."""
        self.eng.stop(self.key)


class Container:
    """One single-use container, seen from the supervisor.

    Cancellation: if ``run`` is cancelled, the job's cgroup is killed (shielded)
    before the cancellation propagates; ``destroy`` must still be called.
    """

    def __init__(self, spawned: Spawned, cgroup: JobCgroup) -> None:
        self.init_pid = spawned.pid
        self.pidfd = spawned.pidfd
        self.created = spawned.created
        self.cgroup = cgroup
        self.job_uid = spawned.job_uid
        self.server = spawned.server  # its fork server: this container dies with it
        self._moved = spawned.moved  # its init moved the job process into ``cgroup``
        self.chan = channel.AsyncChannel(spawned.sock)
        self.job_pid: int | None = None
        self.slot = -1  # the uid slot, when a pool allocated one
        self.used = False
        self._base: CgroupStats | None = None
        self._deadline = 0.0
        self.destroyed = False
        self._killed_for: str | None = None
        self._kill_lock = trio.Lock()
        # Set once the job process was reaped and its cgroup then found (or made) empty:
        # nothing can enter it afterwards but our own moves, so ``destroy`` need not
        # read cgroup.procs again (the pool's reset proves emptiness once more anyway).
        self._emptied = False
        self.warm: WarmStart | None = None  # the interpreter waiting for the job, if any
        self._stdio: list[int] = []  # a warm container's: stdin memfd, stdout, stderr read ends
        self.ended_at: float | None = None  # monotonic: the job process reaped (``run``)
        self.killed_at: float | None = None  # monotonic: when ``kill`` first ended it
        self._egress: egress.Egress | None = None  # the job's network, if it has one
        self.pool_shape: Any = None  # the pool's shape this warm container was made for
        self.pool_out = False  # taken from that shape's warm ones, not yet given back
        self.limits_written: CgroupLimits | None = None  # its job's, in its cgroup (``run``)
        # The engine's watch of a captured job (docs/engine.md, stage 3): the pool's way to
        # ask for it (``Pool._run_by_engine``), set when the pool hands this container out;
        # whether nothing runs in it after the job (the scheduler's: then the engine may
        # hold it at the job's end, its cgroup reset, for the pool to remake); the run it
        # watches now.
        self.engine_run: Callable[[Container, Limits, float], EngineWatch | None] | None = None
        self.last_use = False
        self._watch: EngineWatch | None = None
        # Whether the engine took this container after its run (``Pool._run_done``): its
        # slot and cgroup are the engine's; (engine, key) until the pool's release.
        self.engine_took: Any = False
        self._end_stats: CgroupStats | None = None  # the engine's, of the emptied cgroup

    @property
    def emptied(self) -> bool:
        """The job process was reaped and its cgroup then found (or made) empty."""
        return self._emptied

    @property
    def has_egress(self) -> bool:
        return self._egress is not None

    def hand_off(self) -> None:
        """Let go of this container once its init's pidfd went to the engine, which kills
        and waits for the init (sandboxd/engine.py): our descriptors close now."""
        self.destroyed = True
        os.close(self.pidfd)
        self.chan.close()
        for fd in self._stdio:
            os.close(fd)
        self._stdio = []

    async def wait_ready(self, warm: WarmStart | None = None, now: bool = False) -> None:
        """Wait until the init has built the container and the job process waits for a job;
        with ``warm``, until that interpreter has started and waits for it instead.
        ``now``: its channel is known readable (the engine waited for it), so its first
        read is a plain call, not a wait that registers the new descriptor with trio."""
        try:
            got = await self.chan.recv_nowait() if now else None
            msg, fds = got if got is not None else await self.chan.recv()
        except (channel.ChannelClosed, OSError) as e:
            # Its init died while it set up (its fork server killed, say): this container
            # fails, typed, and the pool makes another; raw, it ended the whole daemon.
            raise SandboxError(f"container setup failed: the init died: {e}") from e
        if msg.get("t") != "ready" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise SandboxError(f"container setup failed: {msg.get('where', '?')}: "
                               f"{msg.get('message', msg)}")
        try:
            job_pid = _libc.pidfd_pid(fds[0])
        finally:
            os.close(fds[0])
        self.ready_read(job_pid)
        try:
            if not self._moved:
                await _move(self.cgroup, self.job_pid)
        except CgroupError as e:  # it died since (its init killed, say): typed, as above
            raise SandboxError(f"container setup failed: moving its job process into its "
                               f"cgroup: {e}") from e
        if warm is not None:  # in its cgroup first: what the interpreter holds is the job's
            await self._warm_up(warm)

    def ready_read(self, job_pid: int) -> None:
        """Its ``ready`` read (by ``wait_ready``, or by the engine, for a plain container
        whose init moved its job process already: all ``wait_ready`` would do): the job
        process's pid found with it, -1 if that process is gone."""
        if job_pid <= 0:
            raise SandboxError("container setup failed: the job process died before its job")
        self.job_pid = job_pid

    async def _warm_up(self, warm: WarmStart) -> None:
        """Start ``warm``'s interpreter, with the stdio the job will have (made now)."""
        stdin = os.memfd_create("sandboxd-stdin", os.MFD_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self._stdio = [stdin, out_r, err_r]
        self._give_stdio(out_w, err_w)
        try:
            await self.chan.send(warm_message(warm), [stdin, out_w, err_w])
        finally:
            os.close(out_w)
            os.close(err_w)
        with trio.move_on_after(WARM_TIMEOUT) as timeout:
            await self._recv("warmed")
        if timeout.cancelled_caught:
            raise SandboxError(f"the warm runtime did not start within {WARM_TIMEOUT:g} s")
        self.warm = warm

    # ------------------------------------------------------------------ run

    @property
    def killed_for(self) -> str | None:
        """Why ``kill`` first ended the job ("cpu", "wall", "output", "cancel"...), if it did."""
        return self._killed_for

    async def kill(self, reason: str) -> None:
        """Kill every process of the job (freezer first) and remember why. Idempotent."""
        if self._killed_for is None:
            self._killed_for = reason
            self.killed_at = time.monotonic()
        if self._watch is not None:  # the engine watches the job: it kills (its STOP)
            with contextlib.suppress(OSError):  # gone: its death kills the job anyway
                self._watch.stop()
            return
        await self.kill_rest()

    async def run(self, step: RunStep) -> Result:
        if self.used or (self.warm is not None and (step.stdin_fd is not None
                                                   or step.stdout_fd is not None)):
            _close_wired(step)
            raise SandboxError("a container runs one job only" if self.used else
                               "wired stdio needs a plain start, not a warm runtime")
        self.used = True
        limits = step.limits
        # The job process is already in the cgroup: a new cpuset moves it (and all it
        # will fork) onto those CPUs before it execs the job.
        try:
            written = CgroupLimits(memory=limits.memory, pids=limits.pids, cpuset=step.cpuset)
            self.cgroup.set_limits(written)
            self.limits_written = written
            base = self._base = self.cgroup.baseline()
        except MemoryInUse:
            # The waiting job process (or its warm interpreter) already holds more than
            # the limit: it could not run one instruction of the job within it.
            _close_wired(step)
            await self.kill_rest()
            return _no_room(limits, "the job's process held more than the limit before "
                                    "the job started")
        except BaseException:
            _close_wired(step)  # not yet handed over: nothing else closes them
            raise
        # Made at the pool's low priority; the job, and the init that relays it,
        # run at the normal one, ahead of the refills that run meanwhile.
        for pid in (self.init_pid, self.job_pid):
            if pid:
                try:  # not contextlib.suppress: four Python calls a job, on the hot path
                    os.setpriority(os.PRIO_PROCESS, pid, 0)
                except OSError:
                    pass
        if step.workspace is not None:
            # Before the hand-over, from the host: nothing of the job runs here yet.
            max_files, max_bytes = step.box_caps
            box = self.open_box()
            await trio.to_thread.run_sync(lambda: unpack(
                step.workspace.fd, step.workspace.fmt, box,  # type: ignore[union-attr]
                max_files=max_files, max_bytes=max_bytes))
        if step.network is not None:
            try:
                self._egress = await egress.attach(self.pidfd, self.init_pid, step.network)
            except OSError as e:
                raise SandboxError(f"network set-up: {e}") from e
        rl = rlimits.Rlimits(cpu_seconds=limits.cpu_time, file_size=limits.file_size,
                             open_files=limits.open_files, stack=limits.stack,
                             address_space=step.address_space)
        # A job that neither streams, nor reads interactive stdin, nor has stdio wired
        # elsewhere: its init makes its stdio and reads its output (``_supervise_captured``).
        # An inline recorder (``output_inline``) is called after the job, in the order the
        # init read the two streams ("order").
        captured = (self.warm is None and (step.on_output is None or step.output_inline)
                    and step.stdin_fd is None and step.stdout_fd is None
                    and step.stdin_stream is None and limits.output <= CAPTURE_MAX)
        if captured:
            await self._hand_captured(step, rl, limits.output)
            out_r = err_r = in_w = -1
        elif self.warm is not None:
            out_r, err_r, in_w = await self._hand_to_warm(step, rl)
        else:
            out_r, err_r, in_w = await self._hand_over(step, rl)
        # The write end of interactive stdin belongs to one object from here on,
        # which closes it exactly once (the feeder at end of input, or this method).
        stdin_w = trio.lowlevel.FdStream(in_w) if in_w >= 0 else None
        out = _Capture("stdout", out_r, limits.output, step.on_output) if out_r >= 0 \
            else _Capture.absent("stdout")
        err = _Capture("stderr", err_r, limits.output, step.on_output) if err_r >= 0 \
            else _Capture.absent("stderr")
        # The wall clock starts at the hand-over, which the init reports ("started", once
        # the job has run 2 ms; a shorter job sends only "exited", which carries it too);
        # until that message is in, the deadline counts from here, a little earlier.
        sent = time.monotonic()
        try:
            if captured:
                status, t0, t1 = await self._watch_captured(limits, base, sent, out, err,
                                                            step.on_output)
            elif (step.on_output is None or step.output_inline) and stdin_w is None:
                status, t0, t1 = await self._supervise_one(limits, base, sent, out, err)
            else:
                status, t0, t1 = await self._supervise(step, limits, base, sent, out, err,
                                                       stdin_w)
            self.ended_at = t1
        except SandboxError as e:
            # Under a tiny memory limit the job process can die of it before its execve
            # (reading the exec request, taking its stdio): the OOM killer's victim, or a
            # failed allocation it reports as a fault. That is the job's memory_limit.
            with trio.CancelScope(shield=True):
                await self.kill_rest()
            if self._killed_for in ("cpu", "wall"):
                # Our own limit's kill came first and broke the hand-over (a 1 µs wall
                # limit on a loaded machine): the job's time limit, not our failure.
                stats = self.cgroup.stats()
                return decide(Measured(
                    wait_status=None, cpu_ns=stats.cpu_usage_ns - base.cpu_usage_ns,
                    user_ns=0, sys_ns=0, wall_s=time.monotonic() - sent,
                    memory_peak=stats.memory_peak, oom_kills=stats.oom_kills - base.oom_kills,
                    killed_for=self._killed_for, stdout=bytes(out.data), stderr=bytes(err.data),
                    stdout_truncated=out.truncated, stderr_truncated=err.truncated), limits)
            if not self._out_of_memory(limits):
                raise
            return _no_room(limits, f"the job's process ran out of memory before the job "
                                    f"started ({e})", self.cgroup.stats(), base)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.kill("cancel")
            raise
        finally:
            out.close()
            err.close()
            if stdin_w is not None:
                stdin_w.close()  # idempotent: the feeder may have closed it already
        stats = self._end_stats or self.cgroup.stats(ended=self._emptied)
        measured = Measured(
            wait_status=status,
            cpu_ns=stats.cpu_usage_ns - base.cpu_usage_ns,
            user_ns=max(0, stats.cpu_user_ns - base.cpu_user_ns),
            sys_ns=max(0, stats.cpu_system_ns - base.cpu_system_ns),
            wall_s=t1 - t0,
            memory_peak=stats.memory_peak,
            oom_kills=stats.oom_kills - base.oom_kills,
            killed_for=self._killed_for,
            stdout=bytes(out.data), stderr=bytes(err.data),
            stdout_truncated=out.truncated, stderr_truncated=err.truncated,
        )
        return decide(measured, limits)

    def open_box(self) -> int:
        """This container's /box, as the host reaches it (through its init's root), open.

        Checked through the pidfd after the open: the init was alive then, so the pid
        was not one the kernel had given to another process since (pids are reused).
        """
        fd = os.open(f"/proc/{self.init_pid}/root/box",
                     os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _libc.pidfd_send_signal(self.pidfd, 0)
        except OSError as e:
            os.close(fd)
            raise SandboxError(f"the container's init is gone: {e}") from None
        return fd

    async def collect_artifacts(self, req: ArtifactRequest) -> None:
        """The files ``req``'s globs match in /box, after the run, into ``req.found``."""
        box = self.open_box()
        req.found = await trio.to_thread.run_sync(lambda: collect(
            box, req.globs, max_files=req.max_files, max_bytes=req.max_bytes))

    async def _hand_over(self, step: RunStep, rl: rlimits.Rlimits) -> tuple[int, int, int]:
        """Send the job with new stdio: our ends (stdout or -1 when wired, stderr,
        interactive stdin or -1)."""
        try:
            if step.stdout_fd is not None:
                out_r, out_w = -1, step.stdout_fd
            else:
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
        except OSError:  # out of descriptors: the wired ones are still ours to close
            _close_wired(step)
            raise
        if step.stdin_fd is not None:
            in_r, in_w = step.stdin_fd, -1
        elif step.stdin_stream is not None:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            self._give_stdio(in_r)
        else:
            in_r, in_w = os.memfd_create("sandboxd-stdin", os.MFD_CLOEXEC), -1
            if step.stdin:
                os.write(in_r, step.stdin)
                os.lseek(in_r, 0, os.SEEK_SET)
        try:
            self._give_stdio(out_w, err_w)
            try:
                msg = job_message(step.files, step.argv, step.env, step.cwd, rl)
            except ValueError as e:
                raise SandboxError(f"job delivery: ValueError: {e}") from e
            try:
                await self.chan.send(msg, [in_r, out_w, err_w])
            except OSError as e:
                raise NotHandedOver(f"the container's init was gone before its job: {e}") \
                    from e
        except BaseException:
            # Cancelled (the client hung up) or the init gone: our ends were not yet
            # handed to anything that closes them (a leak per job, found by fuzzing).
            for fd in (out_r, err_r, in_w):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        return out_r, err_r, in_w

    async def _hand_captured(self, step: RunStep, rl: rlimits.Rlimits, cap: int) -> None:
        """Send the job with its stdin as bytes: the init makes its stdio (stdout and stderr
        pipes it reads, keeping ``cap`` bytes of each) and answers with the output."""
        try:
            msg = job_message(step.files, step.argv, step.env, step.cwd, rl)
        except ValueError as e:
            raise SandboxError(f"job delivery: ValueError: {e}") from e
        msg["capture"] = cap
        msg["stdin"] = bytes(step.stdin)
        if step.on_output is not None:
            msg["order"] = 1
        try:
            await self.chan.send(msg)
        except OSError as e:
            raise NotHandedOver(f"the container's init was gone before its job: {e}") from e

    async def _hand_to_warm(self, step: RunStep, rl: rlimits.Rlimits) -> tuple[int, int, int]:
        """Send the job to the waiting interpreter, whose stdio is in place: stdin is
        written into its memfd first (at offset 0, which it has not moved)."""
        assert self.warm is not None
        stdin, out_r, err_r = self._stdio
        self._stdio = []
        try:
            env = job_env(step.env)
            if step.stdin_stream is not None or not self.warm.accepts(
                    list(step.argv), env, step.cwd, rl):
                raise SandboxError("job delivery: this job is not the one the warm runtime "
                                   "was started for")  # jobs.warm_start's rules say so
            view = memoryview(step.stdin)
            while view:
                view = view[os.pwrite(stdin, view, len(step.stdin) - len(view)):]
            try:
                msg = job_message(step.files, step.argv, env, step.cwd, rl)
            except ValueError as e:
                raise SandboxError(f"job delivery: ValueError: {e}") from e
            try:
                await self.chan.send(msg)
            except OSError as e:
                raise NotHandedOver(f"the container's init was gone before its job: {e}") \
                    from e
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(stdin)
        return out_r, err_r, -1

    def _out_of_memory(self, limits: Limits) -> bool:
        """Whether the job's cgroup OOM-killed or reached its memory limit in this step."""
        try:
            now = self.cgroup.stats()
        except CgroupError:  # the sandbox's own failure stays one
            return False
        page = os.sysconf("SC_PAGE_SIZE")
        # Counted since the cgroup was made or recycled for this container, not since
        # ``base``: on cgroup v2 writing a limit below what the waiting job process holds
        # OOM-kills it then and there, before ``base`` is read.
        return now.oom_kills > 0 or now.memory_peak >= limits.memory // page * page

    def _give_stdio(self, *fds: int) -> None:
        """Make the job user the owner of its stdio pipes (mode 0600 stays).

        A pipe belongs to its creator, here the supervisor (host root, ``nobody``
        inside the container), mode 0600: the job could write to its fd 1 but not
        reopen it, so ``freopen("/dev/stdout", "w", stdout)`` and
        ``open("/proc/self/fd/1")`` failed with EACCES, as in Docker with a
        non-root user. Owned by the job's own host uid, the pipe opens for it and
        for no one else: reaching a pipe by path goes through
        ``/proc/PID/fd``, which needs ptrace rights on a process holding it, and
        only the job's processes and the supervisor hold these. Landlock does not
        stand in the way: pipefs is an internal (``SB_NOUSER``) filesystem, which
        its path checks pass (docs/isolation.md, "Reopening stdio").
        """
        if self.job_uid < 0:
            return
        for fd in fds:
            os.fchown(fd, self.job_uid, self.job_uid)

    def live_usage(self) -> tuple[float, int]:
        """(CPU seconds, peak memory bytes) of the running step so far, for ``ps``: counted
        from the step's start, since a recycled cgroup's counters may include earlier jobs."""
        now = self.cgroup.stats()
        base = self._base or now
        return (now.cpu_usage_ns - base.cpu_usage_ns) / 1e9, now.memory_peak

    async def _recv(self, kind: str, other: str | None = None) -> dict:
        """The init's next message, which must be ``kind`` (or ``other``)."""
        try:
            msg, fds = await self.chan.recv()
        except (channel.ChannelClosed, OSError) as e:
            raise SandboxError(f"container init died while waiting for {kind!r}: {e}") from e
        for fd in fds:
            os.close(fd)
        if msg.get("t") == "error":
            raise SandboxError(f"{msg.get('where')}: {msg.get('message')}")
        if msg.get("t") != kind and (other is None or msg.get("t") != other):
            raise SandboxError(f"container init sent {msg.get('t')!r}, expected {kind!r}")
        return msg

    async def _supervise_one(self, limits: Limits, base: CgroupStats, t0: float,
                             out: _Capture, err: _Capture) -> tuple[int, float, float]:
        """Watch a job that neither streams nor reads interactive stdin, in this one task.

        The two output pipes and the control channel sit in a private epoll whose
        descriptor trio waits on: one wait per wake-up, however many of them are
        ready, and no task, nursery or cancel scope per pipe. The watchdog's checks
        are that wait's timeout, on the schedule ``_watchdog`` keeps (the CPU counter
        is not read before the job could have used a tenth of its limit...; see
        ``_next_check``). Streaming and interactive jobs keep ``_supervise``, whose
        watchdog must not wait behind a slow reader of the output; a step whose
        ``on_output`` only records (``RunStep.output_inline``: the HTTP front door's
        Judge0 and Piston answers, which interleave stdout and stderr as they come)
        stays here, its callback called as each chunk is read.
        """
        limit_ns = int(limits.cpu_time * 1e9)
        deadline = t0 + limits.wall_time
        chan_fd = self.chan.fileno()
        pipes = {c.fd: c for c in (out, err) if c.fd >= 0}  # not one wired elsewhere
        # Output passed on as read (an inline recorder): once some was, a lost init's job
        # cannot run again unseen (``_recv_nowait``).
        streams = out.on_output is not None or err.on_output is not None
        ep = select.epoll(3)
        exited: tuple[int, float, float] | None = None
        drain_until = 0.0  # once exited: how long the pipes may take to reach EOF
        try:
            for fd in (*pipes, chan_fd):
                ep.register(fd, select.EPOLLIN)
            # CPU used so far is 0 (the baseline was just read): the first check can
            # wait as long as the job needs to use its whole limit on every CPU.
            # (None once the watch is over: the job exited, or was killed for a limit)
            check: float | None = t0 + min(max(limits.cpu_time / NCPU, WATCH_MIN), WATCH_MAX)
            while True:
                for fd, _ev in ep.poll(0):
                    if fd == chan_fd:
                        while exited is None and (got := await self._recv_nowait(
                                streams and bool(out.data or err.data))):
                            msg = self._checked(got, "exited")
                            if msg["t"] == "started":
                                deadline = float(msg["t0"]) + limits.wall_time
                                continue
                            exited = (int(msg["status"]), float(msg["t0"]), float(msg["t1"]))
                            ep.unregister(chan_fd)
                            check = None
                            # The job process is gone; anything it left behind goes now.
                            await self.kill_rest()
                            self._emptied = True
                            # Every writer of the pipes is dead: EOF comes promptly.
                            drain_until = time.monotonic() + 2.0
                    else:
                        cap = pipes[fd]
                        if not await cap.take_available(self):
                            ep.unregister(fd)
                            del pipes[fd]
                if exited is not None and not pipes:
                    return exited
                now = time.monotonic()
                check = await self._check_limits(now, check, deadline, limit_ns, base)
                if exited is not None:
                    wake = drain_until
                    if now >= wake:
                        return exited  # a pipe held open past its writers: give up on it
                elif check is not None:
                    wake = min(check, deadline)
                else:
                    wake = now + WATCH_MAX  # killed: the init's "exited" is on its way
                with trio.move_on_after(max(0.0, wake - now)):  # trio's clock is not ours
                    await trio.lowlevel.wait_readable(ep.fileno())
        finally:
            ep.close()

    async def _watch_captured(self, limits: Limits, base: CgroupStats, t0: float,
                              out: _Capture, err: _Capture,
                              record: OutputCallback | None = None,
                              ) -> tuple[int, float, float]:
        """A captured job (``_supervise_captured``'s), watched by the engine when the pool
        can ask it (``engine_run``): this task sleeps until the engine's one answer, which
        brings the cgroup's counters (the run's ``stats``) and, if it holds the container
        now, says so; the init's "exited" is then read here, as without the engine."""
        wait = self.engine_run(self, limits, t0) if self.engine_run is not None else None
        if wait is None:
            return await self._supervise_captured(limits, base, t0, out, err, record)
        self._watch = wait
        try:
            await self._engine_answer(wait, t0 + limits.wall_time + ENGINE_LATE)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.kill("cancel")  # the engine's STOP; its answer follows the kill
                await self._engine_answer(wait, time.monotonic() + ENGINE_LATE)
            if self.engine_took:
                self.hand_off()
            raise
        finally:
            self._watch = None
        done = wait.done
        if wait.refused or done is None:
            # The engine had no room for it, or died (its fork server's death, which kills
            # the init too): watched here, as without the engine. An init dead before the
            # job's end is then NotHandedOver, and the job runs again in another container
            # where it may (``RunStep.retryable``), as it did before the engine watched.
            return await self._supervise_captured(limits, base, t0, out, err, record)
        try:
            if done.killed in ("cpu", "wall") and self._killed_for is None:
                self._killed_for = done.killed
                self.killed_at = time.monotonic()
            while True:
                got = await self._recv_nowait(False)
                if got is None:  # cannot be: the engine saw it (or the channel's end)
                    raise SandboxError("the engine saw the init speak, but nothing came")
                msg = self._checked(got, "exited")
                if msg["t"] != "started":
                    break
        finally:
            if self.engine_took:  # read: its descriptors close now
                self.hand_off()
        ended = self._exited(msg, out, err)
        if wait.error is not None:
            raise SandboxError(f"the job cgroup's counters: {wait.error}")
        if done.empty:
            self._end_stats = wait.stats
        else:  # something of the job outlived it: killed here, the counters read after
            await self.kill_rest()
        self._emptied = True
        if record is not None:
            await _replay(record, msg, out.data, err.data)
        return ended

    async def _engine_answer(self, wait: Any, deadline: float) -> None:
        """Wait for the engine's answer to this job's run until ``deadline``
        (``time.monotonic``); past it, the engine is wedged: its fork server is killed,
        whose death answers every run it watched (the pool's ``_engine_lost``)."""
        with trio.move_on_after(max(0.0, deadline - time.monotonic())):
            await wait.event.wait()
            return
        server = self.server
        if server is not None and not server.lost:
            log.error("container: the engine did not answer %.1f s past the job's "
                      "deadline; its fork server is killed", ENGINE_LATE)
            with contextlib.suppress(OSError):
                _libc.pidfd_send_signal(server.pidfd, 9)
        await wait.event.wait()

    def _exited(self, msg: dict, out: _Capture, err: _Capture) -> tuple[int, float, float]:
        """A captured job's "exited": its output into ``out`` and ``err``, whether its init
        killed it for that output; its wait status, hand-over and reaping times."""
        for cap, data, cut in ((out, "stdout", "stdout_truncated"),
                               (err, "stderr", "stderr_truncated")):
            # Kept as the decoder made it: ``bytes()`` of it (Measured) is then
            # the same object, not a third copy of up to 64 MiB.
            cap.data = msg.get(data, b"")
            cap.truncated = bool(msg.get(cut))
        if msg.get("output_killed") and self._killed_for is None:
            self._killed_for = "output"  # by the init, as ``_Capture`` does by ``kill``
            self.killed_at = time.monotonic()
        return int(msg["status"]), float(msg["t0"]), float(msg["t1"])

    async def _supervise_captured(self, limits: Limits, base: CgroupStats, t0: float,
                                  out: _Capture, err: _Capture,
                                  record: OutputCallback | None = None,
                                  ) -> tuple[int, float, float]:
        """Watch a job whose init reads its output (``_hand_captured``): one descriptor,
        the channel, waited on with the watchdog's schedule (``_supervise_one``'s) as the
        timeout; "exited" brings the output, and whether the init killed the job for it.
        ``record``: an inline recorder (``RunStep.output_inline``), given the output once
        the job is over, in the order of the init's reads."""
        limit_ns = int(limits.cpu_time * 1e9)
        deadline = t0 + limits.wall_time
        chan_fd = self.chan.fileno()
        check: float | None = t0 + min(max(limits.cpu_time / NCPU, WATCH_MIN), WATCH_MAX)
        waited = False  # the job was just sent: nothing can be in before a first wait
        while True:
            while waited and (got := await self._recv_nowait(False)) is not None:
                msg = self._checked(got, "exited")
                if msg["t"] == "started":
                    deadline = float(msg["t0"]) + limits.wall_time
                    continue
                ended = self._exited(msg, out, err)
                # The init killed what the job left in its PID namespace; the cgroup is
                # proven empty here, as after any job.
                await self.kill_rest()
                self._emptied = True
                if record is not None:
                    await _replay(record, msg, out.data, err.data)
                return ended
            now = time.monotonic()
            check = await self._check_limits(now, check, deadline, limit_ns, base)
            wake = min(check, deadline) if check is not None else now + WATCH_MAX
            with trio.move_on_after(max(0.0, wake - now)):  # trio's clock is not ours
                await trio.lowlevel.wait_readable(chan_fd)
            waited = True

    async def _check_limits(self, now: float, check: float | None, deadline: float,
                            limit_ns: int, base: CgroupStats) -> float | None:
        """The watchdog's step in a one-task watch (``_supervise_one``, ``_supervise_captured``):
        when to read the CPU counter next, or None once the watch is over (``check`` None
        already, or the job now killed for its CPU or wall limit). The counter is read only
        at ``check``: the job can burn at most NCPU seconds of CPU per second, so until then
        it cannot have reached its limit."""
        if check is None:
            return None
        if now >= check:
            used = self.cgroup.cpu_usage_ns() - base.cpu_usage_ns
            if used >= limit_ns or now >= deadline:
                await self.kill("cpu" if used >= limit_ns else "wall")
                return None
            return now + min(max((limit_ns - used) / 1e9 / NCPU, WATCH_MIN), WATCH_MAX)
        if now >= deadline:
            await self.kill("wall")
            return None
        return check

    async def _recv_nowait(self, seen: bool) -> tuple[dict, list[int]] | None:
        """The init's next message, if one has begun to arrive. Its death is
        ``NotHandedOver`` while nothing of the job was ``seen`` (no output passed on to a
        callback), a SandboxError after."""
        try:
            return await self.chan.recv_nowait()
        except (channel.ChannelClosed, OSError) as e:
            if seen:
                raise SandboxError(f"container init died while waiting for 'exited': {e}") \
                    from e
            raise NotHandedOver(f"the container's init died under its job: {e}") from e

    def _checked(self, got: tuple[dict, list[int]], kind: str) -> dict:
        """A message of the init's while a job runs: "started" or ``kind``, else a fault."""
        msg, fds = got
        for fd in fds:
            os.close(fd)
        t = msg.get("t")
        if t == "error":
            raise SandboxError(f"{msg.get('where')}: {msg.get('message')}")
        if t != "started" and t != kind:
            raise SandboxError(f"container init sent {t!r}, expected {kind!r}")
        return msg

    async def _supervise(self, step: RunStep, limits: Limits, base: CgroupStats, t0: float,
                         out: _Capture, err: _Capture,
                         stdin_w: trio.lowlevel.FdStream | None) -> tuple[int, float, float]:
        result: list[tuple[int, float, float]] = []
        # A SandboxError (the init's "error", say a fault of the job process before its
        # execve) is raised past the nursery, not from inside it: from inside, trio would
        # wrap it in an ExceptionGroup that no caller's ``except SandboxError`` catches.
        fault: list[SandboxError] = []
        async with trio.open_nursery() as nursery:
            readers = trio.CancelScope()
            watch = trio.CancelScope()

            async def reading() -> None:
                with readers:
                    async with trio.open_nursery() as rn:
                        rn.start_soon(out.pump, self)
                        rn.start_soon(err.pump, self)

            nursery.start_soon(reading)
            if stdin_w is not None:
                nursery.start_soon(_feed_stdin, step.stdin_stream, stdin_w)

            async def watching() -> None:
                with watch:
                    await self._watchdog(limits, base.cpu_usage_ns)

            self._deadline = t0 + limits.wall_time
            nursery.start_soon(watching)
            try:
                msg = await self._recv("exited", "started")  # no "started" for a short job
                if msg["t"] == "started":  # nothing waits on it but the deadline
                    self._deadline = float(msg["t0"]) + limits.wall_time
                    msg = await self._recv("exited")
            except SandboxError as e:
                fault.append(e)
                nursery.cancel_scope.cancel()
            else:
                result.append((int(msg["status"]), float(msg["t0"]), float(msg["t1"])))
                watch.cancel()
                # The job process is gone; anything it left behind goes now.
                await self.kill_rest()
                self._emptied = True
                # Every writer of the pipes is dead: the readers reach EOF promptly.
                with trio.move_on_after(2.0):
                    await out.done.wait()
                    await err.done.wait()
                readers.cancel()
                nursery.cancel_scope.cancel()
        if fault:
            raise fault[0]
        return result[0]

    async def kill_rest(self) -> None:
        """Kill whatever is left in the job's cgroup (freezer first), without a verdict."""
        if self.engine_took:  # its cgroup is the next container's now: nothing of ours
            return
        async with held(self._kill_lock):
            if self.cgroup.pids():
                await threads.run_sync(self.cgroup.kill_all)

    async def _watchdog(self, limits: Limits, base_ns: int) -> None:
        limit_ns = int(limits.cpu_time * 1e9)
        while True:
            deadline = self._deadline  # moves once, when the init reports the hand-over
            used = self.cgroup.cpu_usage_ns() - base_ns
            if used >= limit_ns:
                await self.kill("cpu")
                return
            now = time.monotonic()
            if now >= deadline:
                await self.kill("wall")
                return
            # The job can burn at most NCPU seconds of CPU per second.
            cpu_left = (limit_ns - used) / 1e9 / NCPU
            await trio.sleep(min(max(cpu_left, WATCH_MIN), WATCH_MAX, deadline - now))

    async def collect(self, max_bytes: int = 256 << 20, max_files: int = 10000) -> dict[str, bytes]:
        """The regular files the job left in /box (a compile step's output)."""
        await self.chan.send({"t": "collect", "max_bytes": max_bytes, "max_files": max_files})
        msg = await self._recv("files")
        return {str(k): bytes(v) for k, v in msg["files"].items()}

    # -------------------------------------------------------------- destroy

    async def destroy(self, remove_cgroup: bool = True) -> None:
        """Kill everything and reap the init; remove the cgroup unless the caller recycles it.

        Idempotent; never raises.
        """
        if self.destroyed:
            return
        self.destroyed = True
        # One scope, shielded, whose deadline is set once the init is signalled: the
        # wait for its end gives up after 5 s (a scope and a move_on_after were ~2 % of
        # the supervisor's CPU on the pool's path).
        with trio.CancelScope(shield=True) as scope:
            try:
                if not self._emptied:
                    await self.kill_rest()
            except Exception:
                pass
            with contextlib.suppress(OSError):
                _libc.pidfd_send_signal(self.pidfd, 9)
            scope.deadline = trio.current_time() + 5.0
            await trio.lowlevel.wait_readable(self.pidfd)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG)
        os.close(self.pidfd)
        self.chan.close()
        for fd in self._stdio:  # a warm container's, never handed to a job
            os.close(fd)
        self._stdio = []
        if self._egress is not None or remove_cgroup:
            with trio.CancelScope(shield=True):
                if self._egress is not None:
                    await self._egress.close()
                    self._egress = None
                if remove_cgroup:
                    await threads.run_sync(self.cgroup.remove)


# When this process last moved a job process into its cgroup (time.monotonic()).
_last_move = float("-inf")
#: A move this soon after the previous one is made on the event loop: see ``_move``.
MOVE_WARM = 0.005


async def _move(cgroup: JobCgroup, pid: int) -> None:
    """Put ``pid`` into ``cgroup``, in a worker thread unless that would cost more.

    Moving a process between cgroups on v1 takes the global threadgroup rwsem for
    writing, whose slow path waits for an RCU grace period (~10 ms here, sleeping,
    not CPU): never on the event loop. But the kernel keeps that rwsem on its fast
    path for a grace period after each writer, so moves a few ms apart take ~0.1 ms
    (six hierarchies written), less than the ~0.1 ms of supervisor CPU a thread
    hand-off costs. Measured here: 15 of 15 moves 8 ms apart took under 0.11 ms; 50 ms
    apart, 14 of 15 waited 11-14 ms. So under load (moves every few ms) they are made
    inline, and an idle daemon's first move goes to a thread as before. With the kernel
    in its favordynmods mode (``cgroups.favor_dynmods``), no move waits: all inline.
    """
    global _last_move
    if dynmods_favoured() or time.monotonic() - _last_move < MOVE_WARM:
        cgroup.add_pid(pid)
    else:
        await threads.run_sync(cgroup.add_pid, pid)
    _last_move = time.monotonic()


async def _feed_stdin(source: AsyncIterator[bytes] | None,
                      stream: trio.lowlevel.FdStream) -> None:
    """Copy interactive stdin into the job; closing the stream is the job's end of input."""
    try:
        if source is not None:
            async for chunk in source:
                await stream.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


def _no_room(limits: Limits, why: str, stats: CgroupStats | None = None,
             base: CgroupStats | None = None) -> Result:
    """``memory_limit`` for a job that could not start within its memory limit.

    The limit is the judge's to set, however small (docs/profiles.md, "Tiny
    limits"): the verdict is the job's, never ``sandbox_error``. Nothing of the
    job ran, so there is no exit status and no output; the peak is the cgroup's.
    """
    peak = stats.memory_peak if stats is not None else limits.memory
    cpu_ns = stats.cpu_usage_ns - base.cpu_usage_ns if stats is not None and base else 0
    return Result(verdict="memory_limit", reason=f"memory: {why}", exit_code=None,
                  signal=None, cpu_time=round(max(cpu_ns, 0) / 1e9, 6), user_time=0.0,
                  sys_time=0.0, wall_time=0.0, memory_peak=peak,
                  oom_killed=bool(stats and stats.oom_kills > 0),
                  stdout=b"", stderr=b"", stdout_truncated=False, stderr_truncated=False)


def _close_wired(step: RunStep) -> None:
    """Close a step's wired descriptors that ``run`` will not hand over."""
    for fd in (step.stdin_fd, step.stdout_fd):
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


async def _replay(record: OutputCallback, msg: dict, out: bytes | bytearray,
                  err: bytes | bytearray) -> None:
    """Give an inline recorder a captured job's output as the init read it: "order" is
    runs of one stream, 5 bytes each (the stream, 0 stdout or 1 stderr, then the run's
    length, big-endian); past "order_cut", the rest of stdout, then the rest of stderr."""
    order = msg.get("order", b"")
    if len(order) % 5:
        raise SandboxError("container init sent an output order that does not fit")
    done = [0, 0]
    data, names = (out, err), ("stdout", "stderr")
    for at in range(0, len(order), 5):
        i, n = order[at], int.from_bytes(order[at + 1:at + 5], "big")
        if i > 1 or done[i] + n > len(data[i]):
            raise SandboxError("container init sent an output order that does not fit")
        await record(names[i], bytes(data[i][done[i]:done[i] + n]))
        done[i] += n
    for i in (0, 1):
        if done[i] < len(data[i]):  # order_cut (or nothing recorded)
            await record(names[i], bytes(data[i][done[i]:]))


class _Capture:
    """One output pipe: keeps at most ``cap`` bytes; one byte more means output_limit."""

    @classmethod
    def absent(cls, name: str) -> _Capture:
        """A stream wired elsewhere (to the other program of an interactive test):
        nothing to read, already at its end."""
        cap = cls.__new__(cls)
        cap.name, cap.fd, cap._stream, cap.cap, cap.on_output = name, -1, None, 0, None
        cap.data, cap.truncated, cap.done = bytearray(), False, trio.Event()
        cap.done.set()
        return cap

    def __init__(self, name: str, fd: int, cap: int, on_output: OutputCallback | None) -> None:
        self.name = name
        self.fd = fd
        os.set_blocking(fd, False)
        self._stream: trio.lowlevel.FdStream | None = None  # made for ``pump`` only
        self.cap = cap
        self.on_output = on_output
        self.data: bytearray | bytes = bytearray()  # bytes: a captured job's, whole
        self.truncated = False
        self.done = trio.Event()  # set at EOF, or when the cap ended the reading

    async def take_available(self, container: Container) -> bool:
        """Read what the pipe holds now (``_supervise_one``'s loop); False at EOF, or
        once the cap ended the reading (the job is then killed for its output)."""
        if self.fd < 0:  # absent: wired elsewhere
            return False
        while True:
            try:
                chunk = os.read(self.fd, READ_CHUNK)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            room = self.cap - len(self.data)
            if len(chunk) > room:
                chunk = chunk[:room]
                self.data += chunk
                self.truncated = True
                if chunk and self.on_output is not None:  # an inline recorder's (RunStep)
                    await self.on_output(self.name, chunk)
                await container.kill("output")
                return False
            self.data += chunk
            if self.on_output is not None:  # an inline recorder's (RunStep.output_inline)
                await self.on_output(self.name, chunk)
            if len(chunk) < READ_CHUNK:
                return True  # drained: the next chunk is the next wake-up's

    async def pump(self, container: Container) -> None:
        if self.fd < 0:  # absent: wired elsewhere, already done
            return
        self._stream = trio.lowlevel.FdStream(self.fd)
        while True:
            chunk = await self._stream.receive_some(READ_CHUNK)
            if not chunk:
                self.done.set()
                return
            room = self.cap - len(self.data)
            if len(chunk) > room:
                chunk = chunk[:room]
                self.truncated = True
            if chunk:
                self.data += chunk
                if self.on_output is not None:
                    await self.on_output(self.name, bytes(chunk))
            if self.truncated:
                await container.kill("output")
                self.done.set()
                return

    def close(self) -> None:
        if self._stream is None and self.fd < 0:  # absent (a captured job's): nothing open
            return
        with contextlib.suppress(Exception):
            if self._stream is not None:
                self._stream.close()
            elif self.fd >= 0:
                os.close(self.fd)
        self.fd = -1

