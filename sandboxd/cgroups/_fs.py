"""cgroupfs plumbing shared by the v1 and v2 backends.

Strategy: every file access is a plain ``os.open``/``os.read``/``os.write``
(no buffered file objects: the files are tiny and the hot paths are measured
in microseconds), and every failure becomes a ``CgroupError`` that names the
file, the errno and, where we know it, the fix. Finding our own cgroup, the
mounts, and killing a list of pids also live here, because both versions need
them identically.

This module must not know which cgroup version is in use, nor anything of
jobs, sockets or trio.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._base import CgroupError

#: Every cgroup we create carries this in its name, so that an operator (and
#: ``remove_stale``) can tell ours from everybody else's.
MARK = "sandboxd"

_TAG_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def root_name_for(tag: str) -> str:
    """The name of our root directory for ``tag``; the tag may not contain '.' or '/'.

    '.' is reserved so that no tag can produce the v2 supervisor leaf's name.
    """
    if not _TAG_RE.fullmatch(tag):
        raise ValueError(f"cgroup tag {tag!r}: use 1-64 of [A-Za-z0-9_-]")
    return f"{MARK}-{tag}"


def check_job_name(name: str) -> None:
    """Refuse names that are not one harmless path component carrying our mark."""
    if MARK not in name or not _NAME_RE.fullmatch(name) or name.startswith("."):
        raise ValueError(
            f"job cgroup name {name!r}: must contain {MARK!r} and be 1-200 of [A-Za-z0-9_.-]"
        )


def _hint(err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        return " (run as root, or delegate the cgroup to this user)"
    if err.errno == errno.EROFS:
        return " (cgroupfs is mounted read-only: not delegated to us)"
    if err.errno == errno.ENOSPC:
        return " (cpuset empty, or cgroup.max.descendants reached)"
    return ""


def fail(what: str, path: str, err: OSError) -> CgroupError:
    """A CgroupError naming the operation, the path, the errno and a hint."""
    name = errno.errorcode.get(err.errno or 0, str(err.errno))
    return CgroupError(f"{what} {path}: {name} {err.strerror}{_hint(err)}")


def read(path: str) -> str:
    """Read a whole cgroup file (they are all far below 64 KiB)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise fail("open", path, e) from e
    try:
        return os.read(fd, 65536).decode()
    except OSError as e:
        raise fail("read", path, e) from e
    finally:
        os.close(fd)


def write(path: str, value: str | int) -> None:
    """Write one value with a single write(2), as the kernel expects."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise fail("open", path, e) from e
    try:
        os.write(fd, str(value).encode() or b"\n")  # "" must reach the kernel
    except OSError as e:
        raise fail(f"write {value!r} to", path, e) from e
    finally:
        os.close(fd)


def pread(fd: int, path: str) -> str:
    """Re-read a file kept open (kernfs regenerates it at offset 0): the hot path."""
    try:
        return os.pread(fd, 4096, 0).decode()
    except OSError as e:
        raise fail("read", path, e) from e


def keyed(text: str) -> dict[str, int]:
    """Parse 'key value' lines (memory.events, cpu.stat, oom_control...)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def read_pids(path: str) -> list[int]:
    """Pids listed in a cgroup.procs/tasks file; a vanished cgroup holds none."""
    try:
        return [int(p) for p in read(path).split()]
    except CgroupError:
        if not os.path.isdir(os.path.dirname(path)):
            return []
        raise


def sigkill(pids: Iterable[int]) -> None:
    """SIGKILL each pid. Called only for pids read from a frozen cgroup of ours."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(cond: Callable[[], bool], deadline: float) -> bool:
    """Poll ``cond`` with a backoff (50 µs growing to 5 ms) until true or deadline."""
    delay = 0.00005
    while True:
        if cond():
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.005)


def rmdir(path: str, deadline: float) -> bool:
    """Remove one cgroup directory, children first; True if it was there.

    EBUSY is retried until ``deadline``: a killed task leaves its cgroup a
    moment after it stops being listed in cgroup.procs.
    """
    try:
        children = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return False
    except OSError as e:
        raise fail("list", path, e) from e
    for child in children:
        rmdir(child, deadline)
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise fail("rmdir", path, e) from e
            time.sleep(0.001)


def mkdir(path: str, *, exist_ok: bool = False) -> bool:
    """Create one cgroup directory; True if we created it."""
    try:
        os.mkdir(path, 0o755)
        return True
    except FileExistsError:
        if exist_ok:
            return False
        raise CgroupError(
            f"mkdir {path}: exists (left by a crashed run? see remove_stale)"
        ) from None
    except OSError as e:
        raise fail("mkdir", path, e) from e


@dataclass(frozen=True, slots=True)
class Mount:
    """One cgroup filesystem mount, from /proc/self/mountinfo."""

    fstype: str  # "cgroup" (v1) or "cgroup2"
    point: str  # where it is mounted
    root: str  # which cgroup of the hierarchy appears at ``point``
    options: frozenset[str]  # super options: the v1 controllers, "name=systemd"...


def mounts() -> list[Mount]:
    """Every cgroup and cgroup2 mount visible to this process."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype = fields[sep + 1]
            if fstype in ("cgroup", "cgroup2"):
                point = fields[4].replace("\\040", " ")
                opts = frozenset(fields[sep + 3].split(","))
                out.append(Mount(fstype, point, fields[3], opts))
    return out


def own_cgroups() -> dict[str, str]:
    """This process's cgroup per hierarchy: {"memory": "/a/b", "cpu,cpuacct": ..., "": v2}."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            out[controllers] = path
    return out


def on_disk(mount: Mount, cgroup_path: str) -> str:
    """Directory of ``cgroup_path`` under ``mount``, whose own root may be a sub-cgroup."""
    root = mount.root.rstrip("/")
    if root and (cgroup_path == root or cgroup_path.startswith(root + "/")):
        cgroup_path = cgroup_path[len(root) :]
    return os.path.join(mount.point, cgroup_path.lstrip("/")).rstrip("/")


def subdirs(path: str) -> list[str]:
    """Names of the child cgroups of ``path`` (none if it does not exist)."""
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []
