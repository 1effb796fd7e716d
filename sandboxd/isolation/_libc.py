"""Every raw Linux system call sandboxd makes that Python's ``os`` module lacks.

Strategy: one ctypes handle on the C library, one thin wrapper per call, each
raising ``OSError`` with the errno and the call's name (and path, where there
is one) so that a failing setup step can say exactly what failed. Python 3.11
has no ``os.unshare``/``os.setns``/``os.pidfd_open`` for everything we need,
hence ctypes. Numbers are for x86_64, the only architecture we support.

This module knows nothing of containers, jobs, sockets or trio.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import sys

_libc = ctypes.CDLL(None, use_errno=True)

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# x86_64 system call numbers.
SYS_unshare = 272
SYS_pidfd_send_signal = 424
SYS_landlock_create_ruleset = 444  # the same on every architecture (the unified table)
LANDLOCK_CREATE_RULESET_VERSION = 1

# clone / unshare flags.
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_PIDFD = 0x00001000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount flags.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24

# prctl options the container's Python side needs (the job process makes its own calls in C).
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36



def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        if path is None:
            raise OSError(err, f"{what}: {os.strerror(err)}")
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def unshare(flags: int) -> None:
    _check(_syscall(ctypes.c_long(SYS_unshare), ctypes.c_int(flags)), "unshare")


_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    """mount(2); the container's own mounts are the init's (C): this is for the host side."""
    def enc(v: str | None) -> bytes | None:
        return None if v is None else v.encode()

    _check(_libc.mount(enc(source), target.encode(), enc(fstype), flags, enc(data)),
           "mount", target)


_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def setns(fd: int, nstype: int) -> None:
    """Move the calling *thread* into the namespace ``fd`` refers to."""
    _check(_libc.setns(fd, nstype), "setns")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    ret = _syscall(ctypes.c_long(SYS_pidfd_send_signal), ctypes.c_int(pidfd), ctypes.c_int(sig),
                   ctypes.c_void_p(0), ctypes.c_uint(0))
    _check(ret, "pidfd_send_signal")


def landlock_abi_version() -> int:
    """``landlock_create_ruleset(NULL, 0, VERSION)``: the kernel's Landlock ABI; raises
    ``OSError`` (ENOSYS, EOPNOTSUPP) without Landlock."""
    return _check(_syscall(ctypes.c_long(SYS_landlock_create_ruleset), ctypes.c_void_p(None),
                           ctypes.c_ulong(0), ctypes.c_ulong(LANDLOCK_CREATE_RULESET_VERSION)),
                  "landlock_create_ruleset")


# PIDFD_GET_INFO (Linux 6.13): _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info), the
# struct's first version (64 bytes: mask, cgroupid, pid, ...); None once refused (older).
_PIDFD_GET_INFO: int | None = (3 << 30) | (64 << 16) | (0xFF << 8) | 11


def pidfd_pid(pidfd: int) -> int:
    """The pid (in our pid namespace) that a pidfd refers to; -1 once reaped.

    One ioctl (~1.6 µs here) where the kernel has PIDFD_GET_INFO; else its fdinfo, read
    with open() (~12 µs: five system calls and Python's file objects), once per
    container made."""
    global _PIDFD_GET_INFO
    if _PIDFD_GET_INFO is not None:
        info = bytearray(64)
        try:
            fcntl.ioctl(pidfd, _PIDFD_GET_INFO, info)
            return int.from_bytes(info[16:20], sys.byteorder)
        except ProcessLookupError:
            return -1
        except OSError as e:
            if e.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            _PIDFD_GET_INFO = None  # a kernel before 6.13: fdinfo from now on
    with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
        for line in f:
            if line.startswith(b"Pid:"):
                return int(line.split()[1])
    raise OSError(0, "pidfd has no Pid line in fdinfo (kernel too old?)")


_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def setfsuid(uid: int) -> int:
    """This thread's filesystem uid; returns the previous one (the call cannot fail)."""
    return int(_libc.setfsuid(ctypes.c_uint(uid)))


def setfsgid(gid: int) -> int:
    """This thread's filesystem gid; returns the previous one."""
    return int(_libc.setfsgid(ctypes.c_uint(gid)))
