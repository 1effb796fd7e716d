"""One single-use container: made by ``spawn`` (host side), run by its init (inside).

Strategy. ``spawn`` runs in a single-threaded process (the zygote, or
``run-once`` before trio starts) and clones the container init straight into
new user, PID, mount, network, IPC, UTS and cgroup namespaces; it then writes
the user namespace's id maps and lets the child go. The init, PID 1 of the
new PID namespace, carries out ``setup_steps`` in a fixed order and starts
the job process: the native helper (``native/jobexec.c``) by ``posix_spawn``,
which drops everything it will never need again (every capability, uid,
no_new_privs, Landlock, seccomp last) and then *waits*: all of that is done
before any job exists, so a warm container costs a job almost nothing.

When the job arrives (files, argv, env, limits and the stdio descriptors),
the init writes the files into ``/box`` and hands the rest to the job
process, which applies its rlimits, closes every other descriptor and
execs. The init reaps every process of the namespace and reports how the
job process ended. When the init exits, the kernel kills whatever is left in
the namespace.

Messages with the supervisor (``sandboxd.channel`` frames), from the init:
``ready`` (+ pidfd of the job process), ``started`` (monotonic t0 of the
hand-over, which starts the wall clock), ``exited`` (wait status, t0 again and
t1 of the reaping), ``error`` (where, message); to it:
``job`` (+ stdin, stdout, stderr descriptors).

The user namespace: the container's root maps to an unprivileged host uid
of its slot, and the job user to another, so even a process that became
"root" in the container is nobody on the host; mounts, the hostname and
``lo`` are configured by that namespaced root. See docs/isolation.md.
"""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import socket
import stat
import struct
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from sandboxd import channel
from sandboxd.isolation import _libc, identity, landlock, mounts, net, rlimits, seccomp
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
JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
WRITABLE_DIRS = ("/box", "/tmp", "/dev/shm")
WRITABLE_FILES = ("/dev/null", "/dev/zero", "/dev/full")


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What is fixed when a container is made (before any job): its slot and filesystem."""

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
    """Built once per shape in the zygote (globbing /etc is not free) and inherited by clones."""
    binds = [mounts.Bind(src, dst, optional=True) for src, dst in extra_binds]
    if image:
        from sandboxd.images import Store

        return mounts.image_plan(
            overlay=Store(image_store or None).overlay_root(image),
            uid=identity.JOB_UID, gid=identity.JOB_GID, hostname=HOSTNAME,
            box_size=box_size, tmp_size=tmp_size, extra_binds=binds,
        )
    return mounts.default_plan(
        uid=identity.JOB_UID, gid=identity.JOB_GID, hostname=HOSTNAME,
        box_size=box_size, tmp_size=tmp_size, extra_binds=binds,
    )


@dataclass(slots=True)
class Spawned:
    """The host side's handles on a new container's init."""

    pid: int
    pidfd: int
    sock: socket.socket  # control channel to the init
    created: float = field(default_factory=time.monotonic)


_JOBEXEC_FD: int | None = None


def jobexec_fd() -> int:
    """An open (close-on-exec) descriptor of the native job-exec helper, opened once per
    process: containers exec it by descriptor, since no path inside them leads to it."""
    global _JOBEXEC_FD
    if _JOBEXEC_FD is None:
        from sandboxd import native

        _JOBEXEC_FD = os.open(native.helper_path(), os.O_RDONLY | os.O_CLOEXEC)
    return _JOBEXEC_FD


def spawn(spec: ContainerSpec) -> Spawned:
    """Clone a new container init. Call only from a single-threaded process (no trio)."""
    bpf = seccomp.compile_policy(spec.seccomp_policy)  # cached: compiled once per process
    plan = spec.mount_plan()  # cached likewise
    helper_fd = jobexec_fd()
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    go_r, go_w = os.pipe()
    try:
        pid, pidfd = _libc.clone(CLONE_FLAGS)
    except BaseException:
        for fd in (go_r, go_w):
            os.close(fd)
        parent_sock.close()
        child_sock.close()
        raise
    if pid == 0:  # the container init
        code = 1
        try:
            os.close(go_w)
            parent_sock.close()
            code = _init_main(spec, plan, child_sock, go_r, bpf, helper_fd)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(go_r)
    child_sock.close()
    try:
        identity.write_maps(pid, identity.IdMap(spec.slot))
        os.write(go_w, b"g")
    except BaseException:
        _libc.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)
        parent_sock.close()
        raise
    finally:
        os.close(go_w)
    return Spawned(pid, pidfd, parent_sock)


# --------------------------------------------------------------- inside: init


def keep_only_fds(keep: set[int]) -> None:
    """Close every descriptor but 0, 1, 2 and ``keep``: a clone inherits all of its parent's."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def setup_steps(plan: mounts.MountPlan) -> None:
    """The container's setup, in bubblewrap's order: identity, mounts, hostname, network."""
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # If the zygote died before this line, the supervisor did too (or will see this
    # container's control socket fail): the init then exits on EOF or EPIPE.
    _die_with_parent()
    mounts.apply(plan)
    _libc.sethostname(HOSTNAME)
    net.loopback_up()


def _die_with_parent() -> None:
    """SIGKILL when the parent dies. Must come *after* every uid/gid change: the
    kernel clears the death signal whenever a process's credentials change."""
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)


def _init_main(spec: ContainerSpec, plan: mounts.MountPlan, sock: socket.socket, go_r: int,
               bpf: bytes, helper_fd: int) -> int:
    keep_only_fds({sock.fileno(), go_r, helper_fd})
    if os.read(go_r, 1) != b"g":  # the parent died before writing our id maps
        return 1
    os.close(go_r)
    # The zygote ignores SIGCHLD (the kernel reaps its inits); an init must reap.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        setup_steps(plan)
        job_pid, job_pidfd, init_end = _start_job_process(spec, bpf, helper_fd)
        channel.send(sock, {"t": "ready", "job_pid": job_pid}, [job_pidfd])
        os.close(job_pidfd)
    except Exception as e:
        _report_error(sock, "container setup", e)
        return 1
    return _init_serve(sock, init_end, job_pid)


# Every signal the job process starts with its default action: the zygote ignores
# SIGCHLD, Python ignores SIGPIPE and SIGXFSZ, and ignored dispositions survive execve.
_DEFAULT_SIGNALS = frozenset(range(1, signal.NSIG)) - {signal.SIGKILL, signal.SIGSTOP, 32, 33}


def _start_job_process(spec: ContainerSpec, bpf: bytes,
                       helper_fd: int) -> tuple[int, int, socket.socket]:
    """Start the job process: the native helper, by posix_spawn (vfork and exec, none of
    this interpreter copied), then its prep frame, with which it drops everything it
    will never need again before any job exists (see native/jobexec.c)."""
    if helper_fd == JOBEXEC_FD:  # the spawn's dup2 onto fd 3 comes before its exec
        helper_fd = fcntl.fcntl(helper_fd, fcntl.F_DUPFD_CLOEXEC, JOBEXEC_FD + 1)
    job_sock, init_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ruleset = None
    try:
        if spec.landlock:
            ruleset = landlock.ruleset(read_paths=["/"], write_paths=list(WRITABLE_DIRS),
                                       write_files=list(WRITABLE_FILES))
        if job_sock.fileno() == JOBEXEC_FD:  # dup2 onto itself keeps close-on-exec
            os.set_inheritable(JOBEXEC_FD, True)
        # By descriptor: no path inside the container leads to the helper.
        job_pid = os.posix_spawn(
            f"/proc/self/fd/{helper_fd}", ["sandboxd-jobexec"], {},
            file_actions=[(os.POSIX_SPAWN_DUP2, job_sock.fileno(), JOBEXEC_FD)],
            setsigdef=_DEFAULT_SIGNALS, setsigmask=())
        job_pidfd = _libc.pidfd_open(job_pid)
        flags = 1 if ruleset is not None else 0
        body = struct.pack("<III", flags, identity.JOB_UID, identity.JOB_GID) + bpf
        header = struct.pack("<I", len(body))
        rights = [] if ruleset is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                              struct.pack("i", ruleset))]
        init_end.sendmsg([header], rights)
        init_end.sendall(body)
    except BaseException:
        init_end.close()
        raise
    finally:
        job_sock.close()
        if ruleset is not None:
            os.close(ruleset)
    return job_pid, job_pidfd, init_end


def _report_error(sock: socket.socket, where: str, e: BaseException) -> None:
    try:
        channel.send(sock, {"t": "error", "where": where, "message": f"{type(e).__name__}: {e}"})
    except OSError:
        pass


def _write_files(files: dict[str, bytes]) -> None:
    """Write the job's files into /box, owned by the job user. Paths were validated upstream,
    and are checked again here: nothing may land outside /box."""
    for name, content in files.items():
        if name.startswith("/") or "\0" in name or ".." in name.split("/"):
            raise ValueError(f"file name {name!r} must be relative and stay inside /box")
        path = os.path.join("/box", name)
        parent = os.path.dirname(path)
        if parent != "/box":
            os.makedirs(parent, mode=0o755, exist_ok=True)
            os.chown(parent, identity.JOB_UID, identity.JOB_GID)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            os.fchown(fd, identity.JOB_UID, identity.JOB_GID)
        finally:
            os.close(fd)


def _init_serve(sock: socket.socket, job_sock: socket.socket, job_pid: int) -> int:
    try:
        msg, fds = channel.recv(sock)
    except (channel.ChannelClosed, OSError):
        return 0  # the supervisor gave up on this container before using it
    try:
        if msg.get("t") != "job" or len(fds) != 3:
            raise ValueError(f"expected a job message with 3 descriptors, got {msg.get('t')!r}")
        _write_files(msg.get("files") or {})
        env = {str(k): str(v) for k, v in (msg.get("env") or {}).items()}
        env.setdefault("PATH", JOB_PATH)
        go = encode_go([str(a) for a in msg["argv"]], env, str(msg.get("cwd") or "/box"),
                       rlimits.Rlimits(**(msg.get("rlimits") or {})))
        t0 = time.monotonic()
        sent = job_sock.sendmsg([go], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        struct.pack("3i", *fds))])
        if sent < len(go):
            job_sock.sendall(go[sent:])
    except Exception as e:
        _report_error(sock, "job delivery", e)
        return 1
    finally:
        for fd in fds:
            os.close(fd)
    job_sock.close()
    channel.send(sock, {"t": "started", "t0": t0})  # the job runs already: only its deadline
    while True:  # reap everything; report the job process
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError as e:
            _report_error(sock, "reaping the job process", e)
            return 1
        if pid == job_pid:
            t1 = time.monotonic()
            channel.send(sock, {"t": "exited", "status": status, "t0": t0, "t1": t1})
            break
    # The supervisor kills what is left, then may ask for the files the job made.
    try:
        msg = channel.recv_message(sock)
    except (channel.ChannelClosed, OSError):
        return 0
    if msg.get("t") == "collect":
        try:
            files = _collect_files(int(msg["max_bytes"]), int(msg["max_files"]))
            channel.send(sock, {"t": "files", "files": files})
        except Exception as e:
            _report_error(sock, "collecting files", e)
    return 0


def _collect_files(max_bytes: int, max_files: int) -> dict[str, bytes]:
    """Regular files under /box, never following a symlink the job may have planted."""
    files: dict[str, bytes] = {}
    total = 0
    for top, dirs, names in os.walk("/box", followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(top, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            total += st.st_size
            if total > max_bytes or len(files) >= max_files:
                raise ValueError(f"the job left more than {max_bytes} bytes or {max_files} "
                                 "files in /box")
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                files[os.path.relpath(path, "/box")] = f.read(max_bytes + 1)
    return files


JOBEXEC_FD = 3


def encode_go(argv: list[str], env: dict[str, str], cwd: str,
              limits: rlimits.Rlimits) -> bytes:
    """The job message in jobexec.c's format (little-endian, NUL-terminated strings)."""
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
    return struct.pack("<I", len(body)) + body
