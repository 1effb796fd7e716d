"""Landlock: the job may read the system layers and write only its own directories.

Strategy: one ruleset that *handles* every filesystem right the running
kernel's ABI knows (so nothing is allowed by omission), with three kinds of
rule: read/execute/list beneath ``read_dirs``, every right beneath
``write_dirs``, and read/write/truncate/ioctl on the single files in
``write_files`` (``/dev/null`` and friends). From ABI 6 the ruleset is also
*scoped*: the job can neither signal nor connect to an abstract unix socket
of anything outside its own domain (the supervisor included).

This module decides the rules (``plan_rules``, once per container shape, in
the zygote); the container's native init (native/init.c) builds the ruleset
from them, and the job process enforces it on itself with
``landlock_restrict_self`` after dropping its capabilities and setting
``no_new_privs``, before seccomp and exec. No Python ever enforces a ruleset:
the tests run the real init (tests/unit/isolation/incontainer.py).

Landlock sits under the mount layer, not instead of it: it is what still
holds if a bind mount were accidentally writable. It never grants anything
the DAC or the mounts refuse. TCP rules (ABI 4) are not used: the job's
network namespace already decides what it can reach.

Unavailable Landlock (old kernel, disabled at boot) is not an error:
``plan_rules`` returns None and the plan carries no ruleset
(``checkenv`` reports it). This module knows nothing of jobs, sockets, cgroups
or trio.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sandboxd.isolation import _libc

__all__ = [
    "ACCESS_FS_EXECUTE",
    "ACCESS_FS_READ_DIR",
    "ACCESS_FS_READ_FILE",
    "ACCESS_FS_WRITE_FILE",
    "Rules",
    "abi_version",
    "handled_access_fs",
    "plan_rules",
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

_READ_RIGHTS: Final = ACCESS_FS_EXECUTE | ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR
_WRITE_FILE_RIGHTS: Final = (
    ACCESS_FS_READ_FILE | ACCESS_FS_WRITE_FILE | ACCESS_FS_TRUNCATE | ACCESS_FS_IOCTL_DEV
)


@functools.cache
def abi_version() -> int:
    """The Landlock ABI the kernel offers, or 0 when it is not built in or disabled at boot."""
    try:
        return _libc.landlock_abi_version()
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            return 0
        raise


def handled_access_fs(abi: int) -> int:
    """Every filesystem right ABI ``abi`` knows (0 for ABI 0): what a ruleset must handle."""
    if abi <= 0:
        return 0
    return _FS_BY_ABI[min(abi, max(_FS_BY_ABI))]


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
    """The ruleset as data, or None without Landlock: native/init.c builds the
    container's ruleset from it. Beneath each of ``read_dirs``: execute, read files,
    list directories. Beneath each of ``write_dirs``: everything, including creating,
    removing, renaming within and between them, and device ioctls. On each of
    ``write_files``: read, write, truncate (``> /dev/null`` opens with ``O_TRUNC``) and
    ioctl, rights a rule on a file may carry (the kernel refuses others with EINVAL). Any
    other path is refused with ``EACCES``. A path missing in the container fails its
    setup, with the path named: the caller decides which paths exist."""
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
