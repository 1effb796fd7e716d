"""Uid slots: which host uids a container may use, owned by one process of the host at a time.

Strategy. A slot ``s`` gives a container its two host uids (``identity.IdMap``:
``INIT_BASE + s`` for its root, ``JOB_BASE + s`` for the job user), so two live
containers must never share a slot, whichever process made them: two daemons
on one host, or a daemon and ``sandboxd run-once``. Ownership is therefore
host-wide, the way isolate locks each box id: one lock file,
``/run/sandboxd-slots/uids.lock``, in which a process owns slot ``s`` while it
holds a write lock on byte ``s`` (an open-file-description lock,
``F_OFD_SETLK``). Taking or giving back a slot is one ``fcntl`` on a descriptor
opened once per process (about a microsecond), so the pool's refill path pays
nothing it would notice. The kernel drops such a lock when the last
descriptor of its open file description closes, so a process that dies, even
by SIGKILL, frees its slots without anyone cleaning up, and a lock can never
be left behind on disk.

Where the lock lives. The *supervisor* (the pool in it) takes a slot before
it asks the zygote for a container and gives it back only once that container
is proven dead (``Pool._destroy``: its cgroup killed, its init reaped through
its pidfd). The lock file's descriptor is also passed to the *zygote*
(``zygote.start``), which never touches it: as the two share the open file
description, a lock outlives a supervisor killed by SIGKILL for as long as its
zygote lives. The zygote dies at once then (PR_SET_PDEATHSIG), its fork server
with it, every init with the fork server and every container with its init;
the lock stays with the processes nearest the containers that Python can hold
it in (the native init keeps no descriptor it does not know, see
native/init.c). ``run-once`` is its own zygote and holds its one slot the same
way. Within one process the allocator's free list keeps slots apart (locks of
one open file description never conflict with each other).

A daemon that is not root (docs/rootless.md) cannot write ``/run``: its lock file
is ``$XDG_RUNTIME_DIR/sandboxd-slots/uids.lock`` (systemd's per-user ``/run/user/UID``,
which only that user can write, so no other user can plant a file or a link there),
or, without that variable, ``~/.local/state/sandboxd-slots/uids.lock``. Its slots
give host uids from its own subordinate range or its own uid only
(``identity.RootlessMap``), so its slots need not be kept apart from root's, only
from its own other processes, which find the same path.

Slots start at a random place in the range in every process, so that two
daemons rarely probe the same slots; a slot another process holds is skipped
and tried again later.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import struct
from collections import deque

from sandboxd.isolation import identity
from sandboxd.result import SandboxError

LOCK_DIR = "/run/sandboxd-slots"
LOCK_FILE = f"{LOCK_DIR}/uids.lock"


def lock_path(euid: int | None = None, env: dict[str, str] | None = None) -> str:
    """Where this process's slot lock file is: ``/run`` for root, a directory of the
    user's own otherwise (a rootless daemon cannot create ``/run/sandboxd-slots``)."""
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return LOCK_FILE
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "sandboxd-slots", "uids.lock")
    home = env.get("HOME", "")
    if not home or not os.path.isabs(home):
        raise SandboxError(f"uid {euid}: neither XDG_RUNTIME_DIR nor HOME is set to an "
                           "absolute path, so there is no place of this user's own for the "
                           "uid slot lock file")
    return os.path.join(home, ".local", "state", "sandboxd-slots", "uids.lock")

# struct flock (x86_64 and aarch64): l_type, l_whence, l_start, l_len, l_pid, padding.
_FLOCK = struct.Struct("hhqqi4x")


class SlotLocks:
    """This process's descriptor on the host's slot lock file: byte ``s`` locked = slot ``s`` ours.

    OFD locks, not POSIX ``lockf`` ones: those belong to the process, so they would
    vanish when any other descriptor of the file closed, and would follow neither
    the descriptor into the zygote nor conflict between two allocators of one process
    (which the tests use).
    """

    def __init__(self, path: str | None = None) -> None:
        path = lock_path() if path is None else path
        self.path = path
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                              0o600)
        except OSError as e:
            raise SandboxError(f"cannot open the uid slot lock file {path}: "
                               f"{e.strerror}") from e
        st = os.fstat(self.fd)
        if st.st_uid != os.geteuid():
            # Someone else's file (a directory another user could write): their locks
            # would be ours to trust. Refuse rather than share slots with a stranger.
            os.close(self.fd)
            self.fd = -1
            raise SandboxError(f"uid slot lock file {path} belongs to uid {st.st_uid}, not "
                               f"to this process's uid {os.geteuid()}")

    def try_lock(self, first: int, count: int = 1) -> bool:
        """Take slots ``first .. first+count-1`` if no other open file description holds any."""
        return self._set(fcntl.F_WRLCK, first, count)

    def unlock(self, first: int, count: int = 1) -> None:
        self._set(fcntl.F_UNLCK, first, count)

    def _set(self, kind: int, first: int, count: int) -> bool:
        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, first,
                                                                count, 0))
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise SandboxError(f"uid slot lock {self.path}: {e.strerror}") from e
        return True

    def close(self) -> None:
        """Drop every lock this descriptor holds (unless another process shares it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_HOST: SlotLocks | None = None


def host_locks() -> SlotLocks:
    """This process's one descriptor on the host's lock file, opened at first use."""
    global _HOST
    if _HOST is None or _HOST.fd < 0:
        _HOST = SlotLocks()
    return _HOST


class SlotAllocator:
    """Hands out slots no other live container of the host uses; ``give`` returns one.

    ``take`` costs one ``fcntl`` unless another process holds the next free slot, which
    is then put at the back of the list and the next one tried.
    """

    def __init__(self, count: int = identity.MAX_SLOTS, *, locks: SlotLocks | None = None,
                 start: int | None = None) -> None:
        first = random.randrange(count) if start is None else start % count
        self._free: deque[int] = deque(range(first, count))
        self._free.extend(range(first))
        self.count = count
        self.locks = locks if locks is not None else host_locks()

    def take(self) -> int:
        for _ in range(len(self._free)):
            slot = self._free.popleft()
            if self.locks.try_lock(slot):
                return slot
            self._free.append(slot)  # another process's for now
        raise SandboxError(f"all {self.count} container slots of this host are in use")

    def give(self, slot: int) -> None:
        self.locks.unlock(slot)
        self._free.append(slot)
