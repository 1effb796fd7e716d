"""The container's filesystem: a plan of mount steps, compiled to the init's operations.

Strategy (bubblewrap's): the plan is plain data, built without root and
testable on its own; ``compile_plan`` turns it into operations that the
container init (native/init.c) carries out inside the container's fresh
mount namespace, where every mount is invisible to the host. The new root is a
tmpfs (made read-only once built) holding read-only binds of the host's
``/usr``, ``/bin``, ``/sbin``, ``/lib*`` and a few ``/etc`` files (``ROOT_DIRS``,
``ETC_BINDS``; a profile's ``binds`` add more), writable size-limited
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
why a read-only remount reads them back with statvfs first.

This module knows nothing of jobs, sockets, cgroups or trio.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sandboxd.isolation._libc import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_SLAVE,
)

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
    "/proc/config.gz",  # the kernel's build options: which hardening it lacks
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
# The host's system directories every job sees (read-only), and nothing else of the host
# but ETC_BINDS: not /opt, /srv, /home, /var, /root, /run. Whatever vendors keep there
# (agents, configuration, sometimes credentials) stays out of reach unless a profile
# binds a path of it on purpose (its ``binds``, e.g. a JDK under /opt). On merged-/usr
# hosts /bin, /sbin and /lib* are symlinks into /usr, so they expose nothing more.
ROOT_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


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


def in_sys(path: str) -> bool:
    """Whether ``path`` (resolved) is in /sys, which containers are made without: the
    fork server drops it from its mount namespace (native/forkserver.c)."""
    real = os.path.realpath(path)
    return real == "/sys" or real.startswith("/sys/")


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
    """The host-bind root every profile starts from (docs/isolation.md, step 4)."""
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
    """An image's root (docs/images.md): its layers, then the same scratch mounts.

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


# ---------------------------------------------------------------- compiler


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of the container init (native/init.c), in the order given.

    ``kind`` is one of ``OPS``; ``args`` are its strings and integers (see
    isolation/initplan.py for their order); ``what`` and ``hint`` make the error
    message if it fails ("mount step {what} failed on {path}: {errno}. {hint}").
    """

    kind: str
    args: tuple[str | bytes | int, ...]
    what: str = ""
    hint: str = ""


def _fail(step: object, path: str, err: OSError, hint: str) -> MountError:
    return MountError(err.errno or 0, f"mount step {step!r} failed on {path}: "
                      f"{os.strerror(err.errno or 0)}. {hint}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "",
           what: object = "", hint: str = "") -> Op:
    return Op("mount", (source or "", target, fstype or "", data, flags), repr(what), hint)


def _remount_ro(path: str, extra: int = MS_NOSUID | MS_NODEV, what: object = "",
                hint: str = "") -> Op:
    """Read-only, keeping the flags the host locked (native/mounts.c reads them, statvfs)."""
    return Op("remount_ro", (path, extra), repr(what) if what else "read-only remount", hint)


def _mkdirs(path: str) -> Op:
    return Op("mkdirs", (path,))


def _touch(path: str) -> Op:
    return Op("touch", (path,))


def _bind(step: Bind, root: str) -> list[Op]:
    """Resolved here, on the host (the zygote sees the same files the init will)."""
    dest = root + step.target
    if in_sys(step.source):
        # The fork server makes containers in a mount namespace without /sys: copying
        # its ~14 mounts into every container cost CPU and gave no job anything.
        raise MountError(errno.EINVAL, f"mount step {step!r}: {step.source} is in /sys, "
                         "which containers are made without (no job needs sysfs; the "
                         "host's cgroups and devices are not the job's to see)")
    try:
        st = os.stat(step.source)
    except FileNotFoundError as e:
        if step.optional:
            return []
        raise _fail(step, step.source, e, "The source must exist on the host.") from e
    hint = "Is the source readable and on a mountable filesystem?"
    ops = [_mkdirs(dest) if stat.S_ISDIR(st.st_mode) else _touch(dest),
           _mount(step.source, dest, None, MS_BIND | MS_REC, what=step, hint=hint)]
    if not step.writable:
        ops.append(_remount_ro(dest, what=step, hint=hint))
    return ops


def _tmpfs(step: Tmpfs, root: str, make_dir: bool = True) -> list[Op]:
    dest = root + step.path
    opts = f"size={step.size},mode={step.mode:o},uid={step.uid},gid={step.gid}"
    if step.nr_inodes:
        opts += f",nr_inodes={step.nr_inodes}"
    mount = _mount("tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV, opts, step,
                   "tmpfs refused its options (size, uid, gid)?")
    return [_mkdirs(dest), mount] if make_dir else [mount]


def _shm(step: Dev, root: str) -> Op:
    """A private /dev/shm: isolate shared one between boxes until 2.6."""
    return _mount("tmpfs", f"{root}{step.path}/shm", "tmpfs", MS_NOSUID | MS_NODEV,
                  f"size={step.shm_size},mode=1777,nr_inodes=4096", step)


def _dev(step: Dev, root: str, shm: bool = True) -> list[Op]:
    """/dev; with ``shm`` false, only its mount point for ``_shm`` (a template's)."""
    dev = root + step.path
    ops = [_mkdirs(dev), _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755",
                                step)]
    for name in DEV_NODES:
        target = f"{dev}/{name}"
        ops += [_touch(target), _mount(f"/dev/{name}", target, None, MS_BIND, what=step,
                                       hint="The host must have /dev/" + name)]
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("core", "/proc/kcore")):
        ops.append(Op("symlink", (target, f"{dev}/{name}")))
    ops.append(_mkdirs(f"{dev}/shm"))
    if shm:
        ops.append(_shm(step, root))
    ops.append(_remount_ro(dev, MS_NOSUID | MS_NOEXEC, step))
    return ops


def _proc(step: Proc, root: str, make_dir: bool = True) -> list[Op]:
    """Which of /proc's paths exist is the kernel's doing: the host's /proc answers for the
    container's (one kernel)."""
    proc = root + step.path
    ops = [_mkdirs(proc)] if make_dir else []
    ops.append(_mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "", step,
                      "Mounting /proc needs a new PID namespace and a fully visible /proc "
                      "(the host's, or a template's hollow one)."))
    for path in step.readonly:
        if os.path.exists(path):
            target = root + path
            ops += [_mount(target, target, None, MS_BIND | MS_REC, what=step),
                    _remount_ro(target, MS_NOSUID | MS_NODEV | MS_NOEXEC, step)]
    null = root + "/dev/null"
    for path in step.masked:
        if not os.path.lexists(path):
            continue
        target = root + path
        if os.path.isdir(path):
            ops.append(_mount("tmpfs", target, "tmpfs",
                              MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=555",
                              step))
        else:
            ops.append(_mount(null, target, None, MS_BIND, what=step))
    return ops


def _file(step: File, root: str) -> Op:
    return Op("file", (root + step.path, step.mode, step.content))


def _symlink(step: Symlink, root: str) -> Op:
    return Op("symlink", (step.target, root + step.path))


def _prepare_upper(step: Step, upper: str) -> list[Op]:
    """Create ``step``'s file or mount point in the upper directory (see the module's notes)."""
    if isinstance(step, File):
        return [_file(step, upper)]
    if isinstance(step, Symlink):
        return [_symlink(step, upper)]
    if isinstance(step, Bind):
        if os.path.isdir(step.source):
            return [_mkdirs(upper + step.target)]
        if os.path.exists(step.source):  # else _bind reports it (or skips it, if optional)
            return [_touch(upper + step.target)]
        return []
    return [_mkdirs(upper + step.path)]


# Per errno (native/mounts.c picks the one that matches).
_OVERLAY_HINTS = {
    "ENOENT": "An image layer is missing from the store (removed while in use?): "
              "import the image again.",
    "EACCES": "The container's root, an unprivileged host uid, must be able to read "
              "the layers: the store and its parents need o+x.",
    "EINVAL": "overlayfs refused its options: a user namespace needs Linux 5.11+ for "
              "userxattr, and the store's filesystem must support user xattrs.",
}
HINT_TABLE = "\x01"  # a hint that starts with it is "NAME=text" entries, each after one


def _overlay(overlay: OverlayRoot, steps: Sequence[Step], base: str) -> tuple[list[Op], str]:
    """Mount the overlay root at ``base``/root (cwd: the layers); its ops and its path."""
    upper, work, merged = f"{base}/upper", f"{base}/work", f"{base}/root"
    ops = [Op("mkdir", (d, 0o755)) for d in (upper, work, merged)]
    for step in steps:
        ops += _prepare_upper(step, upper)
    ops += [_mkdirs(upper + d) for d in overlay.dirs]
    opts = f"lowerdir={':'.join(overlay.lower)},upperdir={upper},workdir={work},userxattr"
    if len(opts) >= 4096:
        raise MountError(errno.E2BIG, f"the overlay options of {len(overlay.lower)} layers "
                         "do not fit in one page; flatten the image")
    hints = "".join(f"{HINT_TABLE}{name}={text}" for name, text in _OVERLAY_HINTS.items())
    ops.append(Op("mount", (overlay.label, merged, "overlay", opts, MS_NOSUID | MS_NODEV),
                  f"overlay root of {len(overlay.lower)} layers", hints))
    return ops, merged


def compile_plan(plan: MountPlan, template: bool = False) -> list[Op]:
    """The init's operations that build the new root from ``plan`` and pivot into it.

    Run by the init inside its new mount namespace, they leave ``/`` the new
    root (read-only), the old root detached and the working directory the
    plan's workdir. Whatever depends on the host (does a source exist, is it a
    directory) is decided here, once per shape, in the zygote.

    With ``template`` (host root only; not for an image's overlay root, made per
    container), the ops up to ``template_end`` build what every container of the
    shape shares, and the fork server carries them out once, as host root, in a
    namespace of its own that each container is then cloned from
    (native/forkserver.c): the binds, the generated /etc, /dev and, for /proc, a
    proc of an emptied PID namespace, over which a user namespace may mount its
    own (the kernel wants a fully visible one; the host's is gone after the
    pivot). The ops after it are the container's own: its /box, /tmp, /dev/shm
    and /proc, mounted by its init in the copy.
    """
    template = template and plan.overlay is None
    own: list[Op] = []  # with a template: the container's own mounts, after it
    # Nothing we mount may propagate back to the host.
    rslave = _mount(None, "/", None, MS_REC | MS_SLAVE, what="make-rslave")
    ops = [rslave]
    root = BUILD_BASE
    overlay = plan.overlay
    if overlay:  # before BUILD_BASE is covered: the store may live below it
        hint = ("The image store must exist and be traversable by the container's root, an "
                "unprivileged host uid (o+x on the store and every parent).")
        if overlay.lock:
            ops.append(Op("lock", (overlay.lock,), "'overlay root'", hint))
        ops.append(Op("chdir", (overlay.layers_dir,), "'overlay root'", hint))
    ops.append(_mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV,
                      f"size={plan.root_size},mode=755", what="root tmpfs"))
    steps = plan.steps
    if overlay:
        overlay_ops, root = _overlay(overlay, steps, BUILD_BASE)
        ops += [*overlay_ops, Op("unlock", ())]
        # Generated files and links are in the upper layer already.
        steps = tuple(s for s in steps if not isinstance(s, (File, Symlink)))
    # /etc is created before the binds that land in it and remounted read-only after.
    readonly_tmpfs: list[str] = []
    for step in steps:
        if isinstance(step, Bind):
            ops += _bind(step, root)
        elif isinstance(step, Symlink):
            ops.append(_symlink(step, root))
        elif isinstance(step, Tmpfs):
            if step.path == "/etc":  # shared, read-only
                readonly_tmpfs.append(root + step.path)
            elif template:  # writable scratch: each container's own
                ops.append(_mkdirs(root + step.path))
                own += _tmpfs(step, "", make_dir=False)
                continue
            ops += _tmpfs(step, root)
        elif isinstance(step, File):
            ops.append(_file(step, root))
        elif isinstance(step, Dev):
            ops += _dev(step, root, shm=not template)
            if template:
                own.append(_shm(step, ""))
        elif isinstance(step, Proc):
            if template:
                ops += [_mkdirs(root + step.path), Op("hollow_proc", (root + step.path,))]
                own += _proc(step, "", make_dir=False)
            else:
                ops += _proc(step, root)
        else:  # pragma: no cover - the Step union is closed
            raise TypeError(f"unknown mount step {step!r}")
    ops += [_remount_ro(path) for path in readonly_tmpfs]
    ops += [_remount_ro(root), Op("pivot", (root,))]
    if template:
        # The copy's mounts are private already; the container's own must stay so too.
        ops += [Op("template_end", ()), rslave, *own]
    ops.append(Op("chdir", (plan.workdir,), "'workdir'", ""))
    return ops
