"""Raw system call wrappers for the two "self-restriction" mechanisms: seccomp and Landlock.

Strategy: call ``syscall(2)`` from libc through ctypes, with every argument
cast to a 64-bit C type (``syscall`` is variadic, so ctypes must not guess
``int``), and turn a -1 return into ``OSError`` carrying errno. No logic
lives here: the seccomp and landlock modules decide what to ask for.

Kept apart from ``_libc.py`` (namespaces and mounts) only to avoid editing the
same file concurrently; the two are meant to merge.
"""

from __future__ import annotations

import ctypes
import os
import platform

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_prctl = _libc.prctl
_prctl.restype = ctypes.c_int

# System call numbers. Landlock's are unified across architectures (new calls
# since 5.x share one table); seccomp's predate that and differ.
_SECCOMP_NR = {"x86_64": 317, "aarch64": 277}
_MACHINE = platform.machine()  # read once: install() runs in a freshly forked child
NR_LANDLOCK_CREATE_RULESET = 444
NR_LANDLOCK_ADD_RULE = 445
NR_LANDLOCK_RESTRICT_SELF = 446

SECCOMP_SET_MODE_FILTER = 1
PR_GET_NO_NEW_PRIVS = 39

LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1


class SockFilter(ctypes.Structure):
    """``struct sock_filter``: one classic-BPF instruction (8 bytes)."""

    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    """``struct sock_fprog``: instruction count and a pointer to the program.

    ``filter`` is typed ``c_char_p`` so that a ``bytes`` object can be pointed
    at directly (the kernel only reads it): no copy and no new ctypes array
    type, which costs hundreds of µs in a freshly forked child.
    """

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


class LandlockRulesetAttr(ctypes.Structure):
    """``struct landlock_ruleset_attr`` as of ABI 6 (24 bytes).

    Older kernels accept the larger struct as long as the fields they do not
    know are zero (``copy_struct_from_user``), so one layout serves every ABI.
    """

    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class LandlockPathBeneathAttr(ctypes.Structure):
    """``struct landlock_path_beneath_attr``, which the kernel declares packed (12 bytes)."""

    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _check(ret: int) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def seccomp_nr() -> int:
    """The seccomp(2) number for this machine; only the architectures we know are supported."""
    if _MACHINE not in _SECCOMP_NR:
        raise OSError(f"seccomp: unsupported architecture {_MACHINE!r}")
    return _SECCOMP_NR[_MACHINE]


def get_no_new_privs() -> bool:
    """Whether ``no_new_privs`` is set on the calling thread."""
    return bool(
        _check(
            _prctl(
                ctypes.c_int(PR_GET_NO_NEW_PRIVS),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
            )
        )
    )


def seccomp_set_mode_filter(prog: SockFprog, flags: int = 0) -> None:
    """``seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog)``."""
    _check(
        _syscall(
            ctypes.c_long(seccomp_nr()),
            ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
            ctypes.c_ulong(flags),
            ctypes.byref(prog),
        )
    )


def landlock_abi_version() -> int:
    """``landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)``; raises if absent."""
    return _check(
        _syscall(
            ctypes.c_long(NR_LANDLOCK_CREATE_RULESET),
            ctypes.c_void_p(None),
            ctypes.c_ulong(0),
            ctypes.c_ulong(LANDLOCK_CREATE_RULESET_VERSION),
        )
    )


def landlock_create_ruleset(attr: LandlockRulesetAttr) -> int:
    """Create a ruleset and return its fd (close-on-exec, as the kernel makes it)."""
    return _check(
        _syscall(
            ctypes.c_long(NR_LANDLOCK_CREATE_RULESET),
            ctypes.byref(attr),
            ctypes.c_ulong(ctypes.sizeof(attr)),
            ctypes.c_ulong(0),
        )
    )


def landlock_add_path_rule(ruleset_fd: int, allowed_access: int, parent_fd: int) -> None:
    """Add a ``LANDLOCK_RULE_PATH_BENEATH`` rule for the file or directory open at ``parent_fd``."""
    attr = LandlockPathBeneathAttr(allowed_access=allowed_access, parent_fd=parent_fd)
    _check(
        _syscall(
            ctypes.c_long(NR_LANDLOCK_ADD_RULE),
            ctypes.c_long(ruleset_fd),
            ctypes.c_long(LANDLOCK_RULE_PATH_BENEATH),
            ctypes.byref(attr),
            ctypes.c_ulong(0),
        )
    )


def landlock_restrict_self(ruleset_fd: int, flags: int = 0) -> None:
    """Enforce the ruleset on the calling thread (and everything it later creates)."""
    _check(
        _syscall(
            ctypes.c_long(NR_LANDLOCK_RESTRICT_SELF),
            ctypes.c_long(ruleset_fd),
            ctypes.c_ulong(flags),
        )
    )
