"""The pool's side of the native engine: used containers recycled off the event loop.

Why: per ``/bin/true`` job the pool spent ~0.65-0.75 ms of the supervisor's CPU
(docs/benchmarks.md, session 11) on destroying the used container (a SIGKILL, a
wait on its pidfd, its reap), giving back and taking again its uid slot, and making
the next one (a clone request and its answer, the new channel's first wait in trio's
epoll, the ``ready``). The fork server is C and already the inits' parent, so it
does that work instead (native/forkserver.c, "the engine"): the pool sends one
packet per used container and reads one per new one, on a socket trio already
watches.

What stays here (Python deciding, C executing): which containers are recycled,
the cgroup's proof of emptiness and its reset (``JobCgroup.reset_quick``, before the
packet goes: the job process is reaped and the init, which is outside the job cgroup
and holds none of its files, is all that is left), which slot and cgroup the next
container gets (the same ones: the slot stays locked throughout, and the engine clones
the next container only once the old init is dead, so no two live containers share
it), and what a ``ready`` means (``Container.wait_ready``).

Three requests: RECYCLE (the above), KILL (only the old init killed and waited for:
the pool then resets the cgroup itself, after the death, when the quick reset before
it found more memory charged than it may leave) and MAKE (a new container in a slot
and cgroup the pool took: the fillers' way, once the shape's plan is known).

The protocol (SOCK_SEQPACKET, one request or reply per packet, native byte order):
request ``magic u32, uid_map length u32, gid_map length u32, kind u32, key u64`` and
the two maps, with descriptors (SCM_RIGHTS): the old init's pidfd (RECYCLE, KILL), the
shape's plan and the cgroup's cgroup.procs files (RECYCLE, MAKE). Reply ``key u64,
pid i32, errno i32, job_pid i32, spare i32``: for a new container, its init's pid with
its pidfd and the pool's end of its channel, once that channel is readable; if what is
there is the init's ``ready``, the engine has read it, and ``job_pid`` is its job
process's pid (-1: a ready whose job process is gone); otherwise ``job_pid`` is 0 and
the message (why not ready) is there for the pool to read at once. For a KILL, pid 0 once
the init is dead; pid -1 and the errno if no container could be made (the old init is
dead all the same).

The engine's death is its fork server's (the same process): every init it made or
was killing dies with it (PR_SET_PDEATHSIG), and the pool sees the socket close.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sandboxd.cgroups import RunFiles
from sandboxd.channel import _fds_from_ancdata
from sandboxd.isolation import identity
from sandboxd.spawn import MAX_PROCS_FDS, ServerLife

MAGIC = 0x4E454253  # "SBEN" (native/forkserver.c's ENGINE_MAGIC)
RECYCLE, KILL, MAKE, RUN, STOP, GO = 1, 2, 3, 4, 5, 6
_REQUEST = struct.Struct("=IIIIQ")
# RUN's part: next key, CPU limit (ns), leftover_ok, charge caches, wall limit, sent,
# ncpu, watch_min, watch_max, counters, zeroed files, recycle, restore's length, restore
_RUN = struct.Struct("=QQQQdddddIIII32s")
_REPLY = struct.Struct("=Qiiii")
_ANC = socket.CMSG_SPACE(2 * 4)
_CUT = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)  # a plain int: IntFlag's & costs 6 calls
_DONE_MAX = _REPLY.size + 8 * 130  # a run's end: its counters' texts follow the head
DONE_EMPTY, DONE_HELD, DONE_LIMIT_LOST = 1, 2, 4
KILLED = {1: "cpu", 2: "wall", 3: "stop"}  # the engine's kill, by its code (flags >> 4)


@dataclass(slots=True)
class Reply:
    key: int
    pid: int
    err: int
    pidfd: int = -1
    chan: int = -1
    job_pid: int = 0  # its ready read by the engine: the job process (-1: gone), else 0


@dataclass(slots=True)
class Done:
    """A run's end (RUN): the job cgroup's counters' texts, read by the engine once the
    init had spoken, in the order they were lent (``JobCgroup.run_files``)."""

    key: int
    flags: int
    texts: list[bytes]

    @property
    def empty(self) -> bool:
        """The cgroup was read empty after the init spoke."""
        return bool(self.flags & DONE_EMPTY)

    @property
    def held(self) -> bool:
        """The engine reset the cgroup and holds the container until ``Engine.go``."""
        return bool(self.flags & DONE_HELD)

    @property
    def killed(self) -> str | None:
        """Why the engine killed the job, if it did: "cpu", "wall", or "stop" (asked)."""
        return KILLED.get(self.flags >> 4)


class Engine:
    """One fork server's engine socket; ``pending`` maps each request's key to what the
    pool needs to take its reply (its shape, slot and cgroup)."""

    def __init__(self, sock: socket.socket, life: ServerLife) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.life = life  # the fork server's: the containers the engine makes die with it
        self.pending: dict[int, Any] = {}
        self.lost = False
        self._next = 0

    def recycle(self, pidfd: int, plan: int, ids: identity.IdMap | identity.RootlessMap,
                procs: Sequence[int], entry: Any) -> None:
        """Hand over a used container (its init's pidfd) for the next one of the same
        shape, slot and cgroup. OSError (the socket full, or closed) if the request did
        not go, and then nothing was handed over."""
        self._send(RECYCLE, ids, (pidfd, plan, *_bounded(procs)), entry)

    def kill(self, pidfd: int, entry: Any) -> None:
        """Hand over a used container to be killed; the reply comes once its init is dead."""
        self._send(KILL, None, (pidfd,), entry)

    def make(self, plan: int, ids: identity.IdMap | identity.RootlessMap,
             procs: Sequence[int], entry: Any) -> None:
        """A new container of ``plan`` in the slot of ``ids`` and the cgroup of ``procs``."""
        self._send(MAKE, ids, (plan, *_bounded(procs)), entry)

    def run(self, chan: int, files: RunFiles, cpu_time: float, wall_time: float, sent: float,
            watch: tuple[float, float, float], entry: Any,
            recycle: tuple[int, int, identity.IdMap | identity.RootlessMap,
                           Sequence[int]] | None = None) -> int:
        """Watch a job just handed to its init through ``chan`` (its CPU and wall limits,
        from ``sent``; ``watch``: the watchdog's ncpu, minimum and maximum step) and
        answer with a ``Done`` under the returned key; ``recycle`` (the init's pidfd, the
        plan, the slot's ids, the cgroup.procs files): then reset the cgroup and make
        the next container as RECYCLE does, its reply under the key after that one.
        OSError if the request did not go."""
        ncpu, wmin, wmax = watch
        fds = [chan, files.freezer_state, files.freezer_dir, files.memory_usage,
               files.memory_limit, *files.counters, *files.zero]
        ids = None
        if recycle is not None:
            pidfd, plan, ids, procs = recycle
            fds += [pidfd, plan, *_bounded(procs)]
        key = self._next + 1
        body = _RUN.pack(key + 1, max(0, int(cpu_time * 1e9)), files.leftover_ok,
                         files.caches, wall_time, sent, ncpu, wmin, wmax, len(files.counters),
                         len(files.zero), recycle is not None, len(files.restore),
                         files.restore)
        self._send(RUN, ids, fds, entry, body)
        return key

    def go(self, key: int, make: bool) -> None:
        """Kill a container held after its run (its ``Done`` said ``held``; ``key`` the one
        after the run's) and remake it in its slot and cgroup (RECYCLE's reply under
        ``key``), or, if not ``make``, only say when it is dead (KILL's). OSError if the
        request did not go."""
        self.sock.sendmsg([_REQUEST.pack(MAGIC, 0, 0, GO, key) + struct.pack("=I", make)],
                          [], socket.MSG_DONTWAIT)

    def stop(self, key: int) -> None:
        """Kill the job of run ``key`` now (its ``Done`` says "stop"); nothing if it is
        over. OSError if the request did not go."""
        self.sock.sendmsg([_REQUEST.pack(MAGIC, 0, 0, STOP, key)], [], socket.MSG_DONTWAIT)

    def _send(self, kind: int, ids: identity.IdMap | identity.RootlessMap | None,
              fds: Sequence[int], entry: Any, body: bytes = b"") -> None:
        if self.lost:
            raise OSError("the engine is gone")
        uid_map = gid_map = b""
        if ids is not None:
            uid_map, gid_map = ids.uid_map().encode(), ids.gid_map().encode()
        key = self._next + 1
        head = _REQUEST.pack(MAGIC, len(uid_map), len(gid_map), kind, key)
        self.sock.sendmsg([head + body + uid_map + gid_map], [(
            socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())],
            socket.MSG_DONTWAIT)
        # A RUN's recycle answers under the next key: never given to another request.
        self._next = key + 1 if kind == RUN else key
        self.pending[key] = entry

    def receive(self) -> Reply | Done | None:
        """The next reply if one is there, else None; EOFError once the engine is gone."""
        try:
            data, anc, flags, _addr = self.sock.recvmsg(_DONE_MAX, _ANC, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as e:
            raise EOFError(f"the engine's socket: {e}") from e
        fds = _fds_from_ancdata(anc)
        if not data:
            for fd in fds:
                os.close(fd)
            raise EOFError("the engine is gone")
        if len(data) < _REPLY.size or flags & _CUT:
            for fd in fds:
                os.close(fd)
            raise EOFError("the engine sent a malformed reply")
        key, pid, err, job_pid, kind = _REPLY.unpack_from(data)
        if kind == RUN and not fds:
            return Done(key, job_pid, _texts(data, _REPLY.size))
        if len(data) != _REPLY.size or kind:
            for fd in fds:
                os.close(fd)
            raise EOFError("the engine sent a malformed reply")
        if pid > 0 and len(fds) == 2:
            return Reply(key, pid, 0, fds[0], fds[1], job_pid)
        for fd in fds:
            os.close(fd)
        if pid == 0 and not err:
            return Reply(key, 0, 0)  # a KILL's: the init is dead
        return Reply(key, -1, err or errno.EPROTO)  # or a pid with no descriptors

    def close(self) -> None:
        self.lost = True
        self.sock.close()


def _bounded(procs: Sequence[int]) -> Sequence[int]:
    if len(procs) > MAX_PROCS_FDS:
        raise ValueError(f"{len(procs)} cgroup.procs files: at most {MAX_PROCS_FDS}")
    return procs


def _texts(data: bytes, off: int) -> list[bytes]:
    """A ``Done``'s counters: each a u16 length and that many bytes."""
    out = []
    while off < len(data):
        (n,) = struct.unpack_from("=H", data, off)
        out.append(data[off + 2:off + 2 + n])
        off += 2 + n
    if off != len(data):
        raise EOFError("the engine sent a malformed reply")
    return out
