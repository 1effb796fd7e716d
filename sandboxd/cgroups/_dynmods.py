"""The kernel's ``favordynmods`` mode: cgroup moves that never wait for an RCU grace period.

Why: moving a process between cgroups takes the kernel's global threadgroup
rwsem for writing, and the writer's slow path waits for an RCU grace period
(~8-20 ms on the development machine, asleep) unless another move came within
the last grace period. A pool miss moves its job process on its own path, so
an idle daemon's cold jobs paid that wait now and then: `/bin/true` cold was
2.8 ms at p50 and 12-14 ms at p99 (2-3 % of jobs waited), against
bubblewrap's 4.8 ms p99, which moves nothing.

The kernel has a mode for hosts that move processes often: any cgroup
hierarchy mounted with ``favordynmods`` keeps the rwsem's readers on their
slow path, so writers never wait (forks and exits take a shared counter
instead of a per-CPU one; no difference measurable here: fork, exit and wait
took 96-108 µs either way). The mode is host-wide and, on this kernel, cannot
be turned off again before a reboot: unmounting the hierarchy logs "cgroup
favordynmods: per threadgroup rwsem mechanism can't be disabled" and moves
stay fast. A kernel booted with ``cgroup_favordynmods=true`` (or built with
``CONFIG_CGROUP_FAVOR_DYNMODS``) starts in it.

How: a child process, in a mount namespace of its own, mounts an empty named
v1 hierarchy (``name=sandboxd-dynmods``, no controllers) with the option and
exits. Its namespace dies with it, so the mount is never seen outside and the
empty hierarchy is destroyed; only the mode stays. This works wherever the
kernel has cgroup v1 (``CONFIG_CGROUP_V1``: the hybrid layout, and most v2
hosts too). Without it, the child remounts the cgroup2 hierarchy with the
option added to the ones it has (the mount then shows ``favordynmods``); if
that fails too, the daemon says why and moves as before.

This module knows nothing of jobs, sockets or trio.
"""

from __future__ import annotations

import errno
import os

from sandboxd.isolation import _libc

from . import _fs
from ._base import CgroupError

#: The name of the empty hierarchy mounted for a moment (``sandboxd`` in it, as in
#: every name the project gives to what it creates).
HIERARCHY = "sandboxd-dynmods"

_favoured = False


def favoured() -> bool:
    """True once this process has put the kernel in the mode (``favor``) or found it set
    in a mount's options: moves then take ~0.05 ms and never wait."""
    return _favoured


def _already() -> bool:
    return any("favordynmods" in m.options for m in _fs.mounts())


def _cgroup2() -> tuple[str, list[str]] | None:
    """The first cgroup2 mount: its mount point and its super options but rw/ro."""
    for m in _fs.mounts():
        if m.fstype == "cgroup2":
            return m.point, sorted(m.options - {"rw", "ro"})
    return None


def _mount_in_child(where: str, via: str) -> None:
    """In a forked child, in a mount namespace of its own (raises ``OSError``).

    ``via``: "v1" mounts the empty named hierarchy over ``where``; "v2" (a kernel without
    cgroup v1) remounts the cgroup2 hierarchy with the option added to its own. A
    cgroup2 remount sets every root flag from the options it is given (``nsdelegate``,
    ``memory_recursiveprot``...), so all of them are given back as the mount shows them;
    the per-mount flags it resets are this namespace's copy's only.
    """
    _libc.unshare(_libc.CLONE_NEWNS)
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE)
    if via == "v1":
        _libc.mount("cgroup", where, "cgroup",
                    _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC,
                    f"none,name={HIERARCHY},favordynmods")
        return
    found = _cgroup2()
    if found is None:
        raise OSError(errno.ENODEV, "no cgroup2 mount")
    point, opts = found
    _libc.mount(None, point, None, _libc.MS_REMOUNT, ",".join([*opts, "favordynmods"]))


def favor(where: str, via: tuple[str, ...] = ("v1", "v2")) -> str:
    """Put the kernel in the ``favordynmods`` mode, for the rest of its boot.

    ``where``: an existing directory to mount over, in the child's own mount namespace
    (nothing is mounted there for anyone else). ``via``: the ways to try, in order: an
    empty named v1 hierarchy (nothing of the host's changes but the mode), then a
    remount of the cgroup2 hierarchy with the option (a kernel without cgroup v1: its
    mount options then show ``favordynmods``). Returns ``"already"`` (a mount shows the
    option) or the way that worked; raises ``CgroupError`` saying why none did (not
    root, a kernel before 6.0 that lacks the option).
    """
    global _favoured
    if _already():
        _favoured = True
        return "already"
    if os.geteuid() != 0:
        raise CgroupError("favordynmods: only root may mount a cgroup hierarchy")
    failed = []
    for way in via:
        code = _in_child(where, way)
        if code == 0:
            _favoured = True
            return way
        why = os.strerror(code) if code > 0 else f"signal {-code}"
        failed.append(f"{way}: {why}{_HINTS.get((way, code), '')}")
    raise CgroupError(f"favordynmods: could not set it ({'; '.join(failed)})")


_HINTS = {("v1", errno.ENODEV): " (this kernel has no cgroup v1)",
          ("v1", errno.EINVAL): " (no favordynmods before Linux 6.0, or no named hierarchies)",
          ("v2", errno.ENODEV): " (no cgroup2 mount)",
          ("v2", errno.EINVAL): " (no favordynmods before Linux 6.0)",
          ("v2", errno.EPERM): " (only the initial cgroup namespace may remount it)"}


def _in_child(where: str, via: str) -> int:
    """0, or the errno of the step that failed: the child only makes system calls (no
    thread of the parent's runs yet at start-up) and exits with it."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            _mount_in_child(where, via)
            code = 0
        except OSError as e:
            code = e.errno or errno.EIO
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
