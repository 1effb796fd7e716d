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
import os

_libc = ctypes.CDLL(None, use_errno=True)
# PyDLL keeps the GIL held across the call: a raw clone() must not release it,
# or the child could resume with the interpreter's lock in a released state.
_pylibc = ctypes.PyDLL(None, use_errno=True)

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_pysyscall = _pylibc.syscall
_pysyscall.restype = ctypes.c_long

# x86_64 system call numbers.
SYS_clone = 56
SYS_pivot_root = 155
SYS_sethostname = 170
SYS_setns = 308
SYS_unshare = 272
SYS_pidfd_send_signal = 424
SYS_pidfd_open = 434
SYS_close_range = 436
SYS_capget = 125
SYS_capset = 126

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
MNT_DETACH = 2

# prctl options the container's Python side needs (the job process makes its own calls in C).
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

SIGCHLD = 17


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        if path is None:
            raise OSError(err, f"{what}: {os.strerror(err)}")
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def clone(flags: int) -> tuple[int, int]:
    """fork() with namespace flags: ``(pid, pidfd)`` in the parent, ``(0, -1)`` in the child.

    Like fork(), the child resumes on a copy of the caller's stack. The caller
    must be single-threaded (the zygote is). CLONE_PIDFD gives the parent a
    pidfd for the child without a race against pid reuse.
    """
    pidfd = ctypes.c_int(-1)
    ret = _pysyscall(
        ctypes.c_long(SYS_clone),
        ctypes.c_ulong(flags | CLONE_PIDFD | SIGCHLD),
        ctypes.c_void_p(0),
        ctypes.byref(pidfd),
        ctypes.c_void_p(0),
        ctypes.c_void_p(0),
    )
    _check(ret, "clone")
    if ret == 0:
        return 0, -1
    return ret, pidfd.value


def unshare(flags: int) -> None:
    _check(_syscall(ctypes.c_long(SYS_unshare), ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_syscall(ctypes.c_long(SYS_setns), ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    ret = _libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        flags,
        data.encode() if data is not None else None,
    )
    _check(ret, f"mount({source!r} on {target!r}, type {fstype!r}, flags {flags:#x})", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    ret = _syscall(ctypes.c_long(SYS_pivot_root), new_root.encode(), put_old.encode())
    _check(ret, "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_syscall(ctypes.c_long(SYS_sethostname), raw, ctypes.c_size_t(len(raw))),
           "sethostname")


def pidfd_open(pid: int) -> int:
    return _check(_syscall(ctypes.c_long(SYS_pidfd_open), ctypes.c_int(pid), ctypes.c_uint(0)),
                  f"pidfd_open({pid})")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    ret = _syscall(ctypes.c_long(SYS_pidfd_send_signal), ctypes.c_int(pidfd), ctypes.c_int(sig),
                   ctypes.c_void_p(0), ctypes.c_uint(0))
    _check(ret, "pidfd_send_signal")


def pidfd_pid(pidfd: int) -> int:
    """The pid (in our pid namespace) that a pidfd refers to, from its fdinfo; -1 once reaped."""
    with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
        for line in f:
            if line.startswith(b"Pid:"):
                return int(line.split()[1])
    raise OSError(0, "pidfd has no Pid line in fdinfo (kernel too old?)")


def close_range(first: int, last: int = 0xFFFFFFFF) -> None:
    ret = _syscall(ctypes.c_long(SYS_close_range), ctypes.c_uint(first), ctypes.c_uint(last),
                   ctypes.c_uint(0))
    _check(ret, "close_range")


_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset_zero() -> None:
    """Clear the effective, permitted and inheritable sets of the calling thread."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_syscall(ctypes.c_long(SYS_capset), ctypes.byref(header), ctypes.byref(data)), "capset")


def capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread, as 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_syscall(ctypes.c_long(SYS_capget), ctypes.byref(header), ctypes.byref(data)), "capget")
    return (
        data[0].effective | (data[1].effective << 32),
        data[0].permitted | (data[1].permitted << 32),
        data[0].inheritable | (data[1].inheritable << 32),
    )
