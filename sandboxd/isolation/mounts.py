"""The container's filesystem: a plan of mount steps, then an interpreter that carries it out.

Strategy (bubblewrap's): the plan is plain data, built without root and
testable on its own; ``apply`` runs it inside the container's fresh mount
namespace, where every mount is invisible to the host. The new root is a
tmpfs (made read-only once built) holding read-only binds of the host's
``/usr``, ``/bin``, ``/lib*`` and a few ``/etc`` files, writable size-limited
tmpfs mounts at ``/box`` and ``/tmp``, a fresh ``/proc`` with Docker's
masked and read-only paths, and a minimal ``/dev``. Then ``pivot_root`` into
it and detach the old root, so no path leads back to the host.

An image root (``MountPlan.overlay``) replaces the tmpfs root with an
overlayfs: the image's layers from the store as read-only lower layers, an
upper and work directory on the same per-container tmpfs. Mounted by the
namespaced root, so with ``userxattr`` (overlayfs then reads
``user.overlay.*`` xattrs) and ``nosuid,nodev``. Generated files and every
mount point are created in the upper directory *before* the mount: they then
shadow whatever the image has at those paths (a hostile ``/proc -> /x`` link
included), and nothing needs a copy-up, which the kernel refuses for files
whose owner is not mapped in the namespace (all of the image's).

Everything happens inside a user namespace, where the kernel "locks" the
flags a mount had on the host: a read-only remount must keep them, which is
why ``_remount_ro`` reads them back with statvfs first.

This module knows nothing of jobs, sockets, cgroups or trio.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sandboxd.isolation import _libc
from sandboxd.isolation._libc import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SLAVE,
)

MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21

# The host directory the new root is built on. It is covered by a tmpfs in the
# container's own mount namespace only, so the host's /tmp is never touched.
BUILD_BASE = "/tmp"

# Docker's masked paths (moby daemon/pkg/oci/defaults.go) plus a few more that
# leak host information: files are covered by /dev/null, directories by an
# empty read-only tmpfs.
PROC_MASKED = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/kallsyms",
    "/proc/kmsg",
    "/proc/sysrq-trigger",
)
# Docker's read-only paths.
PROC_READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys")

DEV_NODES = ("null", "zero", "full", "random", "urandom")

# Host files and directories most programs need, bound read-only when they exist.
# passwd, group, hostname and hosts are generated instead (see default_plan).
ETC_BINDS = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/mime.types",
    "/etc/environment",
    "/etc/java-*",
    "/etc/gcc",
    "/etc/python3*",
)
ROOT_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")


@dataclass(frozen=True, slots=True)
class Bind:
    """Bind a host path read-only (or read-write) at the same or another path."""

    source: str
    target: str
    writable: bool = False
    optional: bool = False  # skip quietly when the host lacks it


@dataclass(frozen=True, slots=True)
class Symlink:
    target: str  # what the link points to
    path: str


@dataclass(frozen=True, slots=True)
class Tmpfs:
    path: str
    size: int  # bytes
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    nr_inodes: int | None = None


@dataclass(frozen=True, slots=True)
class File:
    """A small generated file (e.g. /etc/passwd), written before the root turns read-only."""

    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class Proc:
    path: str = "/proc"
    masked: tuple[str, ...] = PROC_MASKED
    readonly: tuple[str, ...] = PROC_READONLY


@dataclass(frozen=True, slots=True)
class Dev:
    path: str = "/dev"
    shm_size: int = 64 << 20


Step = Bind | Symlink | Tmpfs | File | Proc | Dev


@dataclass(frozen=True, slots=True)
class OverlayRoot:
    """The root as an overlayfs of image layers (read-only) under a per-container tmpfs upper.

    ``lower`` names directories of ``layers_dir``, top layer first, relative to
    it: the mount is made from inside it, so that the options of an image of
    many layers still fit in the one page the kernel accepts.
    """

    layers_dir: str
    lower: tuple[str, ...]
    # Held with a shared flock while mounting: the store removes layers only
    # under an exclusive one, after checking that no mounted root uses them.
    lock: str = ""
    label: str = "sandboxd-overlay"  # the mount's source: names the image in mountinfo
    dirs: tuple[str, ...] = ()  # directories to create if the image lacks them (WorkingDir)


@dataclass(frozen=True, slots=True)
class MountPlan:
    steps: tuple[Step, ...]
    root_size: int = 1 << 20  # the tmpfs holding mount points and generated files
    workdir: str = "/box"
    extra: dict[str, str] = field(default_factory=dict)
    overlay: OverlayRoot | None = None  # an image root instead of the tmpfs root


class MountError(OSError):
    """A mount step failed; the message names the step, the path, the errno and a hint."""


def host_root_steps(root_dirs: Iterable[str] = ROOT_DIRS) -> list[Step]:
    """Read-only binds (or, on merged-/usr hosts, the same symlinks) of the host's system dirs."""
    steps: list[Step] = []
    for d in root_dirs:
        if os.path.islink(d):
            steps.append(Symlink(os.readlink(d), d))
        elif os.path.isdir(d):
            steps.append(Bind(d, d))
    return steps


def etc_steps(patterns: Iterable[str] = ETC_BINDS) -> list[Step]:
    steps: list[Step] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            steps.append(Bind(path, path, optional=True))
    return steps


def identity_files(uid: int, gid: int, hostname: str, user: str = "sandbox") -> list[Step]:
    """/etc/passwd, group, hostname and hosts that describe the container, not the host."""
    passwd = f"root:x:0:0:root:/root:/bin/sh\n{user}:x:{uid}:{gid}:{user}:/box:/bin/sh\n"
    passwd += "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    group = f"root:x:0:\n{user}:x:{gid}:\nnogroup:x:65534:\n"
    hosts = f"127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    return [
        File("/etc/passwd", passwd.encode()),
        File("/etc/group", group.encode()),
        File("/etc/hostname", f"{hostname}\n".encode()),
        File("/etc/hosts", hosts.encode()),
    ]


def default_plan(
    *,
    uid: int,
    gid: int,
    hostname: str,
    box_size: int,
    tmp_size: int,
    shm_size: int = 64 << 20,
    extra_binds: Sequence[Bind] = (),
    nr_inodes: int = 65536,
) -> MountPlan:
    """The host-bind root every profile starts from (DESIGN.md section 5, embedded default)."""
    steps: list[Step] = [
        *host_root_steps(),
        Tmpfs("/etc", 1 << 20, 0o755),
        *etc_steps(),
        *identity_files(uid, gid, hostname),
        *extra_binds,
        *scratch_steps(uid, gid, box_size, tmp_size, shm_size, nr_inodes),
    ]
    return MountPlan(tuple(steps))


def scratch_steps(uid: int, gid: int, box_size: int, tmp_size: int, shm_size: int,
                  nr_inodes: int) -> list[Step]:
    """What every root gets on top, whatever it is made of: /box, /tmp, /dev and /proc."""
    return [
        Tmpfs("/box", box_size, 0o755, uid, gid, nr_inodes),
        Tmpfs("/tmp", tmp_size, 0o1777, 0, 0, nr_inodes),
        Dev(shm_size=shm_size),
        Proc(),
    ]


def image_plan(
    *,
    overlay: OverlayRoot,
    uid: int,
    gid: int,
    hostname: str,
    box_size: int,
    tmp_size: int,
    shm_size: int = 64 << 20,
    extra_binds: Sequence[Bind] = (),
    nr_inodes: int = 65536,
) -> MountPlan:
    """An image's root (DESIGN.md section 5, images): its layers, then the same scratch mounts.

    Only /etc/hostname and /etc/hosts are generated, as Docker does; the
    image's own passwd and group describe its users.
    """
    generated = [f for f in identity_files(uid, gid, hostname)
                 if f.path in ("/etc/hostname", "/etc/hosts")]
    steps: list[Step] = [
        *generated,
        *extra_binds,
        *scratch_steps(uid, gid, box_size, tmp_size, shm_size, nr_inodes),
    ]
    return MountPlan(tuple(steps), overlay=overlay)


# ---------------------------------------------------------------- interpreter


def _fail(step: object, path: str, err: OSError, hint: str) -> MountError:
    return MountError(err.errno or 0, f"mount step {step!r} failed on {path}: "
                      f"{os.strerror(err.errno or 0)}. {hint}")


_ST_TO_MS = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)


def _locked_flags(path: str) -> int:
    st = os.statvfs(path)
    return sum(ms for st_flag, ms in _ST_TO_MS if st.f_flag & st_flag)


def _remount_ro(path: str, extra: int = MS_NOSUID | MS_NODEV) -> None:
    flags = _locked_flags(path) | MS_BIND | MS_REMOUNT | MS_RDONLY | extra
    _libc.mount(None, path, None, flags)


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _touch(path: str) -> None:
    _mkdirs(os.path.dirname(path))
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644))


def _bind(step: Bind, root: str) -> None:
    dest = root + step.target
    try:
        st = os.stat(step.source)
    except FileNotFoundError:
        if step.optional:
            return
        raise
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode):
        _mkdirs(dest)
    else:
        _touch(dest)
    try:
        _libc.mount(step.source, dest, None, MS_BIND | MS_REC)
        if not step.writable:
            _remount_ro(dest)
    except OSError as e:
        raise _fail(step, dest, e, "Is the source readable and on a mountable filesystem?") from e


def _tmpfs(step: Tmpfs, root: str) -> None:
    dest = root + step.path
    _mkdirs(dest)
    opts = f"size={step.size},mode={step.mode:o},uid={step.uid},gid={step.gid}"
    if step.nr_inodes:
        opts += f",nr_inodes={step.nr_inodes}"
    try:
        _libc.mount("tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV, opts)
    except OSError as e:
        raise _fail(step, dest, e, "tmpfs refused its options (size, uid, gid)?") from e


def _dev(step: Dev, root: str) -> None:
    dev = root + step.path
    _mkdirs(dev)
    _libc.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name in DEV_NODES:
        target = f"{dev}/{name}"
        _touch(target)
        try:
            _libc.mount(f"/dev/{name}", target, None, MS_BIND)
        except OSError as e:
            raise _fail(step, target, e, "The host must have /dev/" + name) from e
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("core", "/proc/kcore")):
        os.symlink(target, f"{dev}/{name}")
    # A private /dev/shm: isolate shared one between boxes until 2.6.
    shm = f"{dev}/shm"
    _mkdirs(shm)
    _libc.mount("tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV,
                f"size={step.shm_size},mode=1777,nr_inodes=4096")
    _remount_ro(dev, MS_NOSUID | MS_NOEXEC)


def _proc(step: Proc, root: str) -> None:
    proc = root + step.path
    _mkdirs(proc)
    try:
        _libc.mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:
        raise _fail(step, proc, e, "Mounting /proc needs a new PID namespace and a fully "
                    "visible /proc on the host.") from e
    for path in step.readonly:
        target = root + path
        if os.path.exists(target):
            _libc.mount(target, target, None, MS_BIND | MS_REC)
            _remount_ro(target, MS_NOSUID | MS_NODEV | MS_NOEXEC)
    null = root + "/dev/null"
    for path in step.masked:
        target = root + path
        if not os.path.lexists(target):
            continue
        if os.path.isdir(target):
            _libc.mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                        "size=0,mode=555")
        else:
            _libc.mount(null, target, None, MS_BIND)


def _file(step: File, root: str) -> None:
    dest = root + step.path
    _mkdirs(os.path.dirname(dest))
    fd = os.open(dest, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW, step.mode)
    try:
        os.write(fd, step.content)
    finally:
        os.close(fd)


def _symlink(step: Symlink, root: str) -> None:
    dest = root + step.path
    _mkdirs(os.path.dirname(dest))
    os.symlink(step.target, dest)


def _enter_layers(overlay: OverlayRoot) -> int:
    """Lock the store (shared) and chdir into its layers; the lock's fd. Before BUILD_BASE
    is covered: the store may live below it."""
    fd = -1
    try:
        if overlay.lock:
            fd = os.open(overlay.lock, os.O_RDONLY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_SH)
        os.chdir(overlay.layers_dir)
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        raise _fail("overlay root", overlay.layers_dir, e, "The image store must exist and be "
                    "traversable by the container's root, an unprivileged host uid "
                    "(o+x on the store and every parent).") from e
    return fd


def _prepare_upper(step: Step, upper: str) -> None:
    """Create ``step``'s file or mount point in the upper directory (see the module's notes)."""
    if isinstance(step, File):
        _file(step, upper)
    elif isinstance(step, Symlink):
        _symlink(step, upper)
    elif isinstance(step, Bind):
        if os.path.isdir(step.source):
            _mkdirs(upper + step.target)
        elif os.path.exists(step.source):  # else _bind reports it (or skips it, if optional)
            _touch(upper + step.target)
    else:
        _mkdirs(upper + step.path)


_OVERLAY_HINTS = {
    errno.ENOENT: "An image layer is missing from the store (removed while in use?): "
                  "import the image again.",
    errno.EACCES: "The container's root, an unprivileged host uid, must be able to read "
                  "the layers: the store and its parents need o+x.",
    errno.EINVAL: "overlayfs refused its options: a user namespace needs Linux 5.11+ for "
                  "userxattr, and the store's filesystem must support user xattrs.",
}


def _overlay(overlay: OverlayRoot, steps: Sequence[Step], base: str) -> str:
    """Mount the overlay root at ``base``/root (cwd: the layers) and return its path."""
    upper, work, merged = f"{base}/upper", f"{base}/work", f"{base}/root"
    for d in (upper, work, merged):
        os.mkdir(d, 0o755)
    for step in steps:
        _prepare_upper(step, upper)
    for d in overlay.dirs:
        _mkdirs(upper + d)
    opts = f"lowerdir={':'.join(overlay.lower)},upperdir={upper},workdir={work},userxattr"
    if len(opts) >= 4096:
        raise MountError(errno.E2BIG, f"the overlay options of {len(overlay.lower)} layers "
                         "do not fit in one page; flatten the image")
    try:
        _libc.mount(overlay.label, merged, "overlay", MS_NOSUID | MS_NODEV, opts)
    except OSError as e:
        raise _fail(f"overlay root of {len(overlay.lower)} layers", merged, e,
                    _OVERLAY_HINTS.get(e.errno or 0, "")) from e
    return merged


def apply(plan: MountPlan) -> None:
    """Build the new root from ``plan`` and pivot into it. Run inside a new mount namespace.

    Afterwards ``/`` is the new root (read-only), the old root is detached and
    the working directory is the plan's workdir.
    """
    # Nothing we mount may propagate back to the host.
    _libc.mount(None, "/", None, MS_REC | MS_SLAVE)
    root = BUILD_BASE
    lock = _enter_layers(plan.overlay) if plan.overlay else -1
    _libc.mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={plan.root_size},mode=755")
    steps = plan.steps
    if plan.overlay:
        try:
            root = _overlay(plan.overlay, steps, BUILD_BASE)
        finally:
            if lock >= 0:
                os.close(lock)
        # Generated files and links are in the upper layer already.
        steps = tuple(s for s in steps if not isinstance(s, (File, Symlink)))
    # /etc is created before the binds that land in it and remounted read-only after.
    readonly_tmpfs: list[str] = []
    for step in steps:
        if isinstance(step, Bind):
            _bind(step, root)
        elif isinstance(step, Symlink):
            _symlink(step, root)
        elif isinstance(step, Tmpfs):
            _tmpfs(step, root)
            if step.path == "/etc":
                readonly_tmpfs.append(root + step.path)
        elif isinstance(step, File):
            _file(step, root)
        elif isinstance(step, Dev):
            _dev(step, root)
        elif isinstance(step, Proc):
            _proc(step, root)
        else:  # pragma: no cover - the Step union is closed
            raise TypeError(f"unknown mount step {step!r}")
    for path in readonly_tmpfs:
        _remount_ro(path)
    _remount_ro(root)
    os.chdir(root)
    try:
        _libc.pivot_root(".", ".")
    except OSError as e:
        raise _fail("pivot_root", root, e, "The new root must be a mount point.") from e
    _libc.umount2(".", _libc.MNT_DETACH)
    os.chdir(plan.workdir)
