"""Capabilities: all of them dropped, from every set, for good.

Strategy: while the process still holds CAP_SETPCAP (it is root of its own
user namespace), clear the ambient set, drop every capability from the
bounding set and lock the securebits so that no later execve (of a setuid
binary, say) can give any back; then change to the unprivileged uid, which
empties the permitted and effective sets, and clear them explicitly as well.
``no_new_privs`` goes on last. python-prctl provides the prctl calls.

This module knows nothing of jobs, sockets, cgroups or trio.
"""

from __future__ import annotations

import prctl

from sandboxd.isolation import _libc

PR_CAP_AMBIENT = 47
PR_SET_SECUREBITS = 28
PR_CAP_AMBIENT_CLEAR_ALL = 4

# SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | its lock |
# SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | its lock.
SECUREBITS_LOCKED = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80


def last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def drop_bounding_and_lock() -> None:
    """Clear ambient and bounding sets and lock the securebits. Needs CAP_SETPCAP."""
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(last_cap() + 1):
        prctl.capbset_drop(cap)
    _libc.prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED)


def clear_all() -> None:
    """Empty the effective, permitted and inheritable sets of this process."""
    _libc.capset_zero()


def set_no_new_privs() -> None:
    prctl.set_no_new_privs(1)
