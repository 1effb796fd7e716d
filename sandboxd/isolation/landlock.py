"""Landlock: the job may read the system layers and write only its own directories.

Strategy: one ruleset that *handles* every filesystem right the running
kernel's ABI knows (so nothing is allowed by omission), with three kinds of
rule: read/execute/list beneath ``read_paths``, every right beneath
``write_paths``, and read/write/truncate/ioctl on the single files in
``write_files`` (``/dev/null`` and friends). From ABI 6 the ruleset is also
*scoped*: the job can neither signal nor connect to an abstract unix socket
of anything outside its own domain (the supervisor included). Then
``landlock_restrict_self``, which needs ``no_new_privs`` (or CAP_SYS_ADMIN),
and applies to the calling thread and everything it later creates: call it in
the single-threaded child, after the mounts and before seccomp and exec.

Landlock sits under the mount layer, not instead of it: it is what still
holds if a bind mount were accidentally writable. It never grants anything
the DAC or the mounts refuse. TCP rules (ABI 4) are not used: the job's
network namespace already decides what it can reach.

Unavailable Landlock (old kernel, disabled at boot) is not an error:
``restrict`` returns 0 and does nothing, and the caller may log it. This
module knows nothing of jobs, sockets, cgroups or trio.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sandboxd.isolation import _syscalls_lsm

__all__ = [
    "ACCESS_FS_EXECUTE",
    "ACCESS_FS_READ_DIR",
    "ACCESS_FS_READ_FILE",
    "ACCESS_FS_WRITE_FILE",
    "LandlockError",
    "Rules",
    "abi_version",
    "handled_access_fs",
    "plan_rules",
    "restrict",
]

ACCESS_FS_EXECUTE: Final = 1 << 0
ACCESS_FS_WRITE_FILE: Final = 1 << 1
ACCESS_FS_READ_FILE: Final = 1 << 2
ACCESS_FS_READ_DIR: Final = 1 << 3
ACCESS_FS_REMOVE_DIR: Final = 1 << 4
ACCESS_FS_REMOVE_FILE: Final = 1 << 5
ACCESS_FS_MAKE_CHAR: Final = 1 << 6
ACCESS_FS_MAKE_DIR: Final = 1 << 7
ACCESS_FS_MAKE_REG: Final = 1 << 8
ACCESS_FS_MAKE_SOCK: Final = 1 << 9
ACCESS_FS_MAKE_FIFO: Final = 1 << 10
ACCESS_FS_MAKE_BLOCK: Final = 1 << 11
ACCESS_FS_MAKE_SYM: Final = 1 << 12
ACCESS_FS_REFER: Final = 1 << 13  # ABI 2: rename/link across directories
ACCESS_FS_TRUNCATE: Final = 1 << 14  # ABI 3: truncate, O_TRUNC, creat
ACCESS_FS_IOCTL_DEV: Final = 1 << 15  # ABI 5: ioctl on character/block devices

SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1 << 0  # ABI 6
SCOPE_SIGNAL: Final = 1 << 1  # ABI 6

_ABI1_FS: Final = (1 << 13) - 1
# The filesystem rights each ABI handles; ABI 4 added TCP, 6 scopes, 7 audit flags.
_FS_BY_ABI: Final = {
    1: _ABI1_FS,
    2: _ABI1_FS | ACCESS_FS_REFER,
    3: _ABI1_FS | ACCESS_FS_REFER | ACCESS_FS_TRUNCATE,
    4: _ABI1_FS | ACCESS_FS_REFER | ACCESS_FS_TRUNCATE,
    5: _ABI1_FS | ACCESS_FS_REFER | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV,
}
_SCOPES_ABI: Final = 6

# The only rights a rule on a non-directory may carry (anything else is EINVAL).
_FILE_RIGHTS: Final = (
    ACCESS_FS_EXECUTE
    | ACCESS_FS_WRITE_FILE
    | ACCESS_FS_READ_FILE
    | ACCESS_FS_TRUNCATE
    | ACCESS_FS_IOCTL_DEV
)
_READ_RIGHTS: Final = ACCESS_FS_EXECUTE | ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR
_WRITE_FILE_RIGHTS: Final = (
    ACCESS_FS_READ_FILE | ACCESS_FS_WRITE_FILE | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV
)


class LandlockError(OSError):
    """A ruleset could not be built or enforced; the message names the path and the errno."""


@functools.cache
def abi_version() -> int:
    """The Landlock ABI the kernel offers, or 0 when it is not built in or disabled at boot."""
    try:
        return _syscalls_lsm.landlock_abi_version()
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            return 0
        raise


def handled_access_fs(abi: int) -> int:
    """Every filesystem right ABI ``abi`` knows (0 for ABI 0): what a ruleset must handle."""
    if abi <= 0:
        return 0
    return _FS_BY_ABI[min(abi, max(_FS_BY_ABI))]


def restrict(
    *,
    read_paths: Sequence[str],
    write_paths: Sequence[str],
    write_files: Sequence[str] = (),
    scope_signals: bool = True,
    scope_abstract_unix: bool = True,
) -> int:
    """Confine the calling thread and its future children; return the ABI used (0: none).

    Beneath ``read_paths``: execute, read files, list directories. Beneath
    ``write_paths``: everything, including creating, removing, renaming within
    and between them, and device ioctls. On each of ``write_files``: read,
    write, truncate (``> /dev/null`` opens with ``O_TRUNC``) and ioctl. Any
    other path is refused with ``EACCES``. A missing path is an error, not a
    silent omission: the caller decides which paths exist. The rules are
    ``plan_rules``'s, the ones the container init builds its ruleset from (a
    path that is not a directory gets only the rights a file can carry).

    Needs ``no_new_privs`` set first, unless the caller has CAP_SYS_ADMIN.
    """
    rules = plan_rules(read_dirs=read_paths, write_dirs=write_paths, write_files=write_files,
                       scope_signals=scope_signals, scope_abstract_unix=scope_abstract_unix)
    if rules is None:
        return 0
    attr = _syscalls_lsm.LandlockRulesetAttr(handled_access_fs=rules.handled_fs,
                                             scoped=rules.scoped)
    try:
        fd = _syscalls_lsm.landlock_create_ruleset(attr)
    except OSError as exc:
        raise LandlockError(
            exc.errno, f"landlock_create_ruleset (ABI {abi_version()}): {exc.strerror}"
        ) from exc
    try:
        for path, access in rules.rules:
            _allow(fd, path, access)
        try:
            _syscalls_lsm.landlock_restrict_self(fd)
        except OSError as exc:
            hint = " (set no_new_privs first)" if exc.errno == errno.EPERM else ""
            raise LandlockError(exc.errno, f"landlock_restrict_self: {exc.strerror}{hint}") from exc
    finally:
        os.close(fd)
    return abi_version()


@dataclass(frozen=True, slots=True)
class Rules:
    """A ruleset as data, for a process that cannot run Python (the container init)."""

    handled_fs: int
    scoped: int
    rules: tuple[tuple[str, int], ...]  # (path, access)


def plan_rules(
    *,
    read_dirs: Sequence[str],
    write_dirs: Sequence[str],
    write_files: Sequence[str] = (),
    scope_signals: bool = True,
    scope_abstract_unix: bool = True,
) -> Rules | None:
    """The rules of ``restrict`` as data, or None without Landlock: native/init.c builds
    the container's ruleset from them (its ``/``, ``/box``... are directories and
    ``/dev/null`` a file, so no rule needs trimming there)."""
    abi = abi_version()
    if abi == 0:
        return None
    handled = handled_access_fs(abi)
    rules = [(p, _READ_RIGHTS & handled) for p in read_dirs]
    rules += [(p, handled) for p in write_dirs]
    rules += [(p, _WRITE_FILE_RIGHTS & handled) for p in write_files]
    scoped = 0
    if abi >= _SCOPES_ABI:
        scoped |= SCOPE_SIGNAL if scope_signals else 0
        scoped |= SCOPE_ABSTRACT_UNIX_SOCKET if scope_abstract_unix else 0
    return Rules(handled, scoped, tuple(rules))


def _allow(ruleset: int, path: str, access: int) -> None:
    """Add one path-beneath rule, trimmed to file rights if ``path`` is not a directory."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise LandlockError(
            exc.errno, f"landlock: cannot open {path!r} for a rule: {exc.strerror}"
        ) from exc
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FILE_RIGHTS
        _syscalls_lsm.landlock_add_path_rule(ruleset, access, fd)
    except OSError as exc:
        raise LandlockError(
            exc.errno,
            f"landlock_add_rule on {path!r} (access {access:#x}): {exc.strerror}",
        ) from exc
    finally:
        os.close(fd)
