"""Making one single-use container: ``spawn`` (host side); its init runs it (inside).

Strategy. Python decides, C executes. ``spawn`` runs in a single-threaded
process (the zygote, or ``run-once`` before trio starts); it compiles the
container's *plan* once per shape (the mount operations, the Landlock rules,
the seccomp program, the job's ids: ``isolation/initplan.py``) into a sealed
memfd, and asks the native fork server (``sandboxd-init --forkserver``, one
per process) for a clone into new user, PID, mount, network, IPC, UTS and
cgroup namespaces; the fork server writes the user namespace's id maps and
lets the child go. The child, PID 1 of the new PID namespace, becomes the
namespace's root and runs the native init, which carries out the plan and
forks the job process, which drops everything it will never need again (every
capability, uid, no_new_privs, Landlock, seccomp last) and then *waits*: all
of that is done before any job exists, so a warm container costs a job
almost nothing. No interpreter runs in a container.

When the job arrives (files, and the job process's exec request made here:
argv, env, working directory, rlimits; with the stdio descriptors), the init
writes the files into ``/box`` and hands the rest to the job process, which
applies its rlimits, closes every other descriptor and execs. A failure of
the job process before its execve (an rlimit, the stdio, the working
directory) is the sandbox's, not the job's: the init reports it as an
``error`` (where "job process", with the step and errno) and the job ends as
``sandbox_error``; the execve failing (no such program, not executable) is the
job's, exit 127 and a line on its stderr (native/jobproc.c). The init reaps
every process of the namespace and reports how the job process ended. When
the init exits, the kernel kills whatever is left in the namespace.

Messages with the supervisor (``sandboxd.channel`` frames), from the init:
``ready`` (+ pidfd of the job process), ``warmed`` (a warm runtime waits for the
job), ``started`` (monotonic t0 of the hand-over, which starts the wall clock;
sent only once the job has run 2 ms, so a shorter job costs the supervisor one
wake-up, not two), ``exited`` (wait status, t0 again and t1 of the reaping; for a
captured job also ``stdout``, ``stderr``, their ``*_truncated`` flags and
``output_killed``), ``error`` (where, message; and step, errno when the job process
failed before its execve); to it:
``warm`` (a warm runtime to start, ``WarmStart``: its request, and ``boot``
bytes the init writes after it on the job process's socket for the started
interpreter to read; + the job's stdin, stdout, stderr descriptors; optional,
before the job), ``job`` (+ stdin, stdout, stderr
descriptors, or none after ``warm``; or none with ``capture``, the most bytes kept of each
of stdout and stderr, and ``stdin`` as bytes: the init makes the job's stdio itself, reads
the output and sends it in ``exited``, Container._hand_captured), ``collect`` (the init
answers ``files``).

The user namespace: the container's root maps to an unprivileged host uid
of its slot, and the job user to another, so even a process that became
"root" in the container is nobody on the host; mounts, the hostname and
``lo`` are configured by that namespaced root. See docs/isolation.md.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import errno
import fcntl
import functools
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sandboxd.isolation import identity, initplan, landlock, mounts, rlimits, seccomp
from sandboxd.isolation._libc import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
)

CLONE_FLAGS = (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC
               | CLONE_NEWUTS | CLONE_NEWCGROUP)

HOSTNAME = "sandboxd"
#: How many ``cgroup.procs`` files a clone request may lend its init (native/sandboxd.h).
MAX_PROCS_FDS = 8
JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
WRITABLE_DIRS = ("/box", "/tmp", "/dev/shm")
WRITABLE_FILES = ("/dev/null", "/dev/zero", "/dev/full")


@dataclass(frozen=True, slots=True)
class WarmStart:
    """An interpreter a warm container starts before its job (sandboxd/runtimes/): the
    exec request of the job process, and the runtime's name. Part of the pool's shape: a
    job is handed only to a container whose interpreter started as the job would have."""

    argv: tuple[str, ...]  # the profile's run argv up to its entry, then the bootstrap
    env: tuple[tuple[str, str], ...]
    cwd: str
    rlimits: rlimits.Rlimits
    runtime: str = ""
    # The bootstrap lowers its own rlimits to a job's lower ones at the hand-over (Python
    # does; node cannot): such a job is handed over too (sandboxd/runtimes/).
    lowers_rlimits: bool = False
    # What the init passes on to the started interpreter after its request, on the job
    # process's socket (Python: its bootstrap's code, compiled once here; runtimes/).
    # Made from the runtime, as argv is: not part of the shape.
    boot: bytes = field(default=b"", compare=False)

    def __repr__(self) -> str:  # the bootstrap's source is long and says nothing here
        return (f"WarmStart({self.runtime!r}, argv={self.argv[:-1]!r}+[bootstrap], "
                f"cwd={self.cwd!r}, rlimits={self.rlimits!r})")

    def request(self) -> bytes:
        return encode_exec(list(self.argv), dict(self.env), self.cwd, self.rlimits, warm=True)

    def accepts(self, argv: list[str], env: dict[str, str], cwd: str,
                limits: rlimits.Rlimits) -> bool:
        """Would a job of this exec request have started the same interpreter?"""
        head = len(self.argv) - 2
        return (list(self.argv[:head]) == argv[:head] and len(argv) > head
                and tuple(env.items()) == self.env and cwd == self.cwd
                and (limits == self.rlimits
                     or (self.lowers_rlimits and rlimits.lower_or_equal(limits, self.rlimits))))


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What is fixed when a container is made (before any job): its slot and filesystem,
    and the interpreter it starts before its job, if any (``warm``: the supervisor's
    business, never sent to the zygote, whose plan does not depend on it)."""

    slot: int
    box_size: int
    tmp_size: int
    seccomp_policy: str = "default"
    extra_binds: tuple[tuple[str, str], ...] = ()  # (host path, container path), read-only
    landlock: bool = True
    # An image root instead of the host's files: the image's id (never a name, which
    # may move: plans are cached per shape) and its store. See docs/images.md.
    image: str = ""
    image_store: str = ""
    warm: WarmStart | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"slot": self.slot, "box_size": self.box_size, "tmp_size": self.tmp_size,
                "seccomp_policy": self.seccomp_policy, "landlock": self.landlock,
                "extra_binds": [list(b) for b in self.extra_binds],
                "image": self.image, "image_store": self.image_store}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> ContainerSpec:
        return cls(slot=int(d["slot"]), box_size=int(d["box_size"]),
                   tmp_size=int(d["tmp_size"]), seccomp_policy=str(d["seccomp_policy"]),
                   landlock=bool(d["landlock"]),
                   extra_binds=tuple((str(a), str(b)) for a, b in d["extra_binds"]),
                   image=str(d.get("image", "")), image_store=str(d.get("image_store", "")))

    def mount_plan(self) -> mounts.MountPlan:
        return _mount_plan(self.box_size, self.tmp_size, self.extra_binds, self.image,
                           self.image_store)


@functools.lru_cache(maxsize=64)
def _mount_plan(box_size: int, tmp_size: int, extra_binds: tuple[tuple[str, str], ...],
                image: str = "", image_store: str = "") -> mounts.MountPlan:
    """Built once per shape (globbing /etc is not free); its compiled form, the plan's
    memfd, is cached apart (``plan_fd``)."""
    binds = [mounts.Bind(src, dst, optional=True) for src, dst in extra_binds]
    if image:
        from sandboxd.images import Store

        return mounts.image_plan(
            overlay=Store(image_store or None).overlay_root(image),
            uid=identity.job_ids()[0], gid=identity.job_ids()[1], hostname=HOSTNAME,
            box_size=box_size, tmp_size=tmp_size, extra_binds=binds,
        )
    return mounts.default_plan(
        uid=identity.job_ids()[0], gid=identity.job_ids()[1], hostname=HOSTNAME,
        box_size=box_size, tmp_size=tmp_size, extra_binds=binds,
    )


@dataclass(slots=True)
class Spawned:
    """The host side's handles on a new container's init."""

    pid: int
    pidfd: int
    sock: socket.socket  # control channel to the init
    created: float = field(default_factory=time.monotonic)
    job_uid: int = -1
    """The job user's host uid and gid (its slot's), or -1 if unknown: the owner the
    supervisor gives the job's stdio pipes, so that the job can reopen its own
    ``/dev/stdout`` (``Container.give_stdio``)."""
    server: ServerLife | None = None
    """The fork server that cloned it, whose death kills it (PR_SET_PDEATHSIG); None
    when made in-process (run-once)."""
    moved: bool = False
    """Its init moves the job process into the job's cgroup itself (it was lent the
    cgroup's ``cgroup.procs`` files), before it says ``ready``."""


class ServerLife:
    """Whether one fork server lives, for the containers it made: they die with it.

    Why: the SIGKILL a fork server's death sends its inits lands a little later than
    the death itself, so a warm init can still look alive (its pidfd not yet
    readable) and take a job it will not run. The server's own pidfd is readable
    first (the kernel signals the children, then wakes the parent's pidfd pollers),
    so a container whose server is gone is known doomed before its job is handed.
    """

    __slots__ = ("lost", "pidfd")

    def __init__(self, pidfd: int) -> None:
        self.pidfd = pidfd
        self.lost = False

    def gone(self) -> bool:
        if self.lost:
            return True
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        if poller.poll(0):
            self.close()
        return self.lost

    def alive_with(self, init_pidfd: int) -> bool:
        """True while this fork server and the init of ``init_pidfd`` (a container it made)
        both live: one ``poll`` for the two, at each take of a warm container."""
        if self.lost:
            return False
        poller = select.poll()
        poller.register(init_pidfd, select.POLLIN)
        poller.register(self.pidfd, select.POLLIN)
        ready = [fd for fd, _ev in poller.poll(0)]
        if self.pidfd in ready:
            self.close()
        return not ready

    def close(self) -> None:
        """Given up on (or seen dead): its descriptor closes; ``gone`` stays true."""
        if not self.lost:
            self.lost = True
            os.close(self.pidfd)


def _init_path() -> str:
    from sandboxd import native

    return str(native.init_path())


# The plan of each shape, in a sealed memfd every clone of that shape reads (the zygote
# makes few shapes; the oldest is closed past this many).
_PLANS: collections.OrderedDict[ContainerSpec, int] = collections.OrderedDict()
MAX_PLANS = 64


def mount_ops(spec: ContainerSpec) -> list[mounts.Op]:
    """The mount ops of ``spec``'s plan: with a template built by the fork server when this
    process is host root (a rootless one cannot build it: docs/rootless.md)."""
    return mounts.compile_plan(spec.mount_plan(), template=not identity.rootless())


def plan_bytes(spec: ContainerSpec) -> bytes:
    """What the init of a container of ``spec``'s shape carries out (isolation/initplan.py)."""
    rules = None
    if spec.landlock:
        rules = landlock.plan_rules(read_dirs=["/"], write_dirs=WRITABLE_DIRS,
                                    write_files=WRITABLE_FILES)
    return initplan.encode(ops=mount_ops(spec), hostname=HOSTNAME,
                           landlock_rules=rules, uid=identity.job_ids()[0],
                           gid=identity.job_ids()[1],
                           bpf=seccomp.compile_policy(spec.seccomp_policy))


def plan_fd(spec: ContainerSpec) -> int:
    """The sealed memfd of ``spec``'s shape's plan, made once per shape (64 kept)."""
    shape = dataclasses.replace(spec, slot=0)
    fd = _PLANS.get(shape)
    if fd is not None:
        _PLANS.move_to_end(shape)
        return fd
    data = plan_bytes(spec)
    fd = os.memfd_create("sandboxd-plan", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    _PLANS[shape] = fd
    if len(_PLANS) > MAX_PLANS:
        os.close(_PLANS.popitem(last=False)[1])
    return fd


class ForkServer:
    """The native fork server (native/forkserver.c, ``--forkserver``): one per process that makes
    containers, started at its first container. It clones each init from its own small
    address space instead of this interpreter's, and dies with this process."""

    _MAGIC = 0x53464253  # "SBFS"

    def __init__(self, engine: bool = False) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        actions = [(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)]
        # The engine's socket (descriptor 4), for a pool that recycles its containers
        # through it (engine.Engine; the zygote's fork servers have one, run-once's not).
        e_ours = e_theirs = None
        if engine:
            e_ours, e_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            actions.append((os.POSIX_SPAWN_DUP2, e_theirs.fileno(), 4))
        try:
            self.pid = os.posix_spawn(
                _init_path(), ["sandboxd-init", "--forkserver"], {},
                file_actions=actions, setsigdef=_DEFAULT_SIGNALS, setsigmask=())
        except BaseException:
            ours.close()
            if e_ours is not None:
                e_ours.close()
            raise
        finally:
            theirs.close()
            if e_theirs is not None:
                e_theirs.close()
        self.sock = ours
        self.engine_sock = e_ours
        # Reaped by us, not left to PID 1: an orphan would be a zombie until PID 1 reaps it
        # (some container PID 1s never do).
        atexit.register(self.close)

    def clone(self, ids: identity.IdMap | identity.RootlessMap, ctrl: socket.socket,
              plan_fd: int) -> tuple[int, int]:
        """A new container init with ``ctrl`` as its channel: its pid and a pidfd."""
        request, fds = self.request(ids, ctrl, plan_fd)
        self.sock.sendmsg([request], fds)
        data, ancdata, _flags, _addr = self.sock.recvmsg(8, socket.CMSG_SPACE(4))
        return self.answer(data, ancdata)

    @classmethod
    def request(cls, ids: identity.IdMap | identity.RootlessMap, ctrl: socket.socket,
                plan_fd: int, procs: Sequence[int] = ()
                ) -> tuple[bytes, list[tuple[int, int, bytes]]]:
        """A clone request (native/forkserver.c's ``fs_request`` and the id maps) and its
        descriptors, for ``sendmsg``: the init's channel, its plan, and ``procs``, the
        job cgroup's ``cgroup.procs`` files (``JobCgroup.procs_files``), into which the
        init then moves its job process itself."""
        if len(procs) > MAX_PROCS_FDS:
            raise ValueError(f"{len(procs)} cgroup.procs files: at most {MAX_PROCS_FDS}")
        uid_map, gid_map = ids.uid_map().encode(), ids.gid_map().encode()
        head = struct.pack("=III", cls._MAGIC, len(uid_map), len(gid_map))
        fds = (ctrl.fileno(), plan_fd, *procs)
        return head + uid_map + gid_map, [(
            socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]

    @staticmethod
    def answer(data: bytes, ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int]:
        """The init's pid and pidfd from a clone's reply (``recvmsg``); OSError if none
        came (EPIPE: the fork server is gone)."""
        fds = [fd for level, kind, raw in ancdata
               if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
               for fd in struct.unpack(f"{len(raw) // 4}i", raw[:len(raw) // 4 * 4])]
        if len(data) != 8:
            for fd in fds:
                os.close(fd)
            raise OSError(errno.EPIPE, "the container fork server is gone")
        pid, err = struct.unpack("=ii", data)
        if pid <= 0 or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise OSError(err or errno.EPROTO, f"the fork server could not clone a container: "
                          f"{os.strerror(err or errno.EPROTO)}")
        return pid, fds[0]

    def let_go(self) -> None:
        """Give up this end of its socket (after sending a copy elsewhere): whoever holds
        the copy now talks to it, and it exits when they close it. The kernel reaps it
        (the zygote ignores SIGCHLD)."""
        atexit.unregister(self.close)
        self.sock.close()
        if self.engine_sock is not None:
            self.engine_sock.close()

    def close(self, timeout: float = 2.0) -> None:
        """Close its socket (it exits at EOF) and reap it, killing it past ``timeout``."""
        if self.sock.fileno() < 0:
            return
        atexit.unregister(self.close)
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            pidfd = -1
        self.sock.close()
        if self.engine_sock is not None:
            self.engine_sock.close()
        if pidfd >= 0:
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                if not poller.poll(int(timeout * 1000)):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    poller.poll(int(timeout * 1000))
            finally:
                os.close(pidfd)
        with contextlib.suppress(ChildProcessError):  # ours to reap, unless SIGCHLD is ignored
            os.waitpid(self.pid, os.WNOHANG)


_FORKSERVER: ForkServer | None = None
# Every signal a process we start begins with at its default action: the zygote ignores
# SIGCHLD, Python ignores SIGPIPE and SIGXFSZ, and ignored dispositions survive execve.
_DEFAULT_SIGNALS = frozenset(range(1, signal.NSIG)) - {signal.SIGKILL, signal.SIGSTOP, 32, 33}


def spawn(spec: ContainerSpec) -> Spawned:
    """Start a new container init. Call only from a single-threaded process (no trio).

    The native fork server clones it straight into its namespaces and writes its
    id maps; it then carries out the shape's plan (native/init.c, plan.c).
    """
    global _FORKSERVER
    plan = plan_fd(spec)
    if _FORKSERVER is None:
        _FORKSERVER = ForkServer()
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid, pidfd = _FORKSERVER.clone(identity.slot_map(spec.slot), child_sock, plan)
    except OSError:
        parent_sock.close()
        _FORKSERVER.close()  # a fresh one next time
        _FORKSERVER = None
        raise
    finally:
        child_sock.close()
    return Spawned(pid, pidfd, parent_sock, job_uid=identity.slot_map(spec.slot).host_job)


def keep_only_fds(keep: set[int]) -> None:
    """Close every descriptor but 0, 1, 2 and ``keep`` (the zygote, at its start)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def job_env(env: dict[str, str]) -> dict[str, str]:
    """A job's environment as the job process gets it (PATH has a default)."""
    env = {str(k): str(v) for k, v in env.items()}
    env.setdefault("PATH", JOB_PATH)
    return env


def job_message(files: dict[str, bytes], argv: list[str], env: dict[str, str], cwd: str,
                limits: rlimits.Rlimits) -> dict[str, Any]:
    """The init's job message: the files for /box, and the job process's exec request
    (which the init passes on untouched, with the job's stdio; to a warm container's
    bootstrap, without)."""
    return {"t": "job", "files": files,
            "exec": encode_exec([str(a) for a in argv], job_env(env), str(cwd or "/box"),
                                limits)}


def warm_message(warm: WarmStart) -> dict[str, Any]:
    """The init's warm message (with the stdio the job will have): start ``warm``'s
    interpreter now; the init answers ``warmed`` once its bootstrap waits for the job."""
    msg: dict[str, Any] = {"t": "warm", "exec": warm.request()}
    if warm.boot:
        msg["boot"] = warm.boot
    return msg


WARM_FLAG = 0x80000000  # native/sandboxd.h: a warm runtime's request, not a job's


def encode_exec(argv: list[str], env: dict[str, str], cwd: str,
                limits: rlimits.Rlimits, warm: bool = False) -> bytes:
    """The job process's exec request: what to execute, with which environment, where and
    under which rlimits (native/jobproc.c reads it: little-endian, NUL-terminated strings;
    the length's top bit, ``WARM_FLAG``, marks a warm runtime's)."""
    def strv(items: list[str]) -> bytes:
        out = [struct.pack("<I", len(items))]
        for item in items:
            raw = item.encode()
            if b"\0" in raw:
                raise ValueError(f"NUL byte in {item!r}")
            out.append(raw + b"\0")
        return b"".join(out)

    pairs = limits.pairs()
    body = b"".join([
        strv(argv), strv([f"{k}={v}" for k, v in env.items()]), cwd.encode() + b"\0",
        struct.pack("<I", len(pairs)),
        *(struct.pack("<IQ", res, value) for res, value in pairs),
    ])
    return struct.pack("<I", len(body) | (WARM_FLAG if warm else 0)) + body
