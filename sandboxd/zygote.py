"""The zygote: a small single-threaded process that makes every container.

Strategy: forking a process that runs an event loop (and may have threads)
is unsafe, so the supervisor starts this process once, *before* trio starts,
with the modules a container needs already imported and the seccomp policies
already compiled. It answers two requests, once per container shape and once per fork server,
not once per container: ``plan`` (the shape's plan, built once, in a sealed
memfd) and ``forkserver`` (it starts the native fork server, ``spawn.ForkServer``,
as its own child, and hands the supervisor the only end of that server's socket).
The supervisor then asks the fork server for each container itself: one
exchange per container instead of two, and none of this interpreter's CPU (a
relay through it cost ~0.19 ms per container, 4 % of all of sandboxd's CPU per
``/bin/true`` job). It never waits for a container to become ready; the
supervisor does that asynchronously.

Inits are the native fork server's children, and it ignores SIGCHLD so the
kernel reaps them. The zygote dies with the supervisor (PR_SET_PDEATHSIG, and
EOF on its socket), the fork server with the zygote (and at EOF on its socket,
when the supervisor closes it), each init with the fork server, and with the
init the whole container.

``ZygoteClient`` is the supervisor's (trio) end.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import gc
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from sandboxd import channel, slots
from sandboxd.engine import Engine
from sandboxd.isolation import _libc, identity
from sandboxd.result import SandboxError
from sandboxd.spawn import (
    MAX_PLANS,
    ContainerSpec,
    ForkServer,
    ServerLife,
    Spawned,
    keep_only_fds,
    plan_fd,
)


@dataclass(slots=True)
class ZygoteProcess:
    pid: int
    sock: socket.socket


def start(policies: tuple[str, ...] = ("default",)) -> ZygoteProcess:
    """Start the zygote as a fresh interpreter. Call before trio starts.

    A fresh ``python -m sandboxd.zygote`` rather than a fork of the caller: the
    zygote then holds only what a container needs (no trio, no daemon state),
    and every clone of it copies that much less.

    The zygote also holds the supervisor's descriptor on the host's uid slot lock
    file (the same open file description), so that the slots of its containers stay
    locked until it is gone too, should the supervisor die first (see slots.py).
    """
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = child_sock.fileno()
    lock_fd = slots.host_locks().fd
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandboxd.zygote", str(fd), str(os.getpid()), str(lock_fd),
         *policies],
        pass_fds=[fd, lock_fd], stdin=subprocess.DEVNULL, close_fds=True,
    )
    child_sock.close()
    return ZygoteProcess(proc.pid, parent_sock)


def main(argv: list[str]) -> int:
    """Entry point of the zygote process:
    ``python -m sandboxd.zygote FD PARENT_PID SLOT_LOCK_FD POLICY...``."""
    from sandboxd.isolation import seccomp

    sock = socket.socket(fileno=int(argv[0]))
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(argv[1]):  # the supervisor died before we could notice
        return 1
    for name in argv[3:]:
        seccomp.compile_policy(name)  # compiled before the first container needs it
    return _serve(sock, keep={int(argv[2])})


# Containers are made at this niceness, so that refilling the pool yields the
# CPU to jobs that run; the supervisor sets each job process back to 0 when it
# hands it a job (container.Container.run).
POOL_NICE = 10


def _serve(sock: socket.socket, keep: set[int]) -> int:
    """Serve spawn requests; ``keep`` are descriptors held only to be held (the slot lock)."""
    if not identity.rootless():
        # An ordinary user could never bring the jobs back to 0 (docs/rootless.md): a
        # rootless pool is made at the normal priority and competes with running jobs.
        os.nice(POOL_NICE)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our inits
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    keep_only_fds({sock.fileno(), *keep})
    # Objects that survive from here on are never collected: the collector would
    # otherwise touch (and so copy) every page of them in every container.
    gc.collect()
    gc.freeze()
    while True:
        try:
            msg = channel.recv_message(sock)
        except (channel.ChannelClosed, OSError):
            return 0
        req, kind = msg.get("id"), msg.get("t")
        try:
            if kind == "plan":
                # The memfd stays cached here (spawn._PLANS); the supervisor gets a copy.
                channel.send(sock, {"t": "plan", "id": req},
                             [plan_fd(ContainerSpec.from_wire(msg["spec"]))])
            elif kind == "forkserver":
                server = ForkServer(engine=True)
                assert server.engine_sock is not None
                try:
                    # With a pidfd of it (opened while it is surely alive: our child,
                    # not yet reaped), by which its containers' supervisor sees it die,
                    # and its engine's socket (the pool's turnover: engine.Engine).
                    life = os.pidfd_open(server.pid)
                    try:
                        channel.send(sock, {"t": "forkserver", "id": req, "pid": server.pid},
                                     [server.sock.fileno(), life,
                                      server.engine_sock.fileno()])
                    finally:
                        os.close(life)
                finally:
                    server.let_go()
            else:
                channel.send(sock, {"t": "error", "id": req,
                                    "message": f"unknown request {msg!r}"})
        except Exception as e:
            channel.send(sock, {"t": "error", "id": req, "message": f"{type(e).__name__}: {e}"})


# How long the zygote may take to answer a spawn request before it is presumed stuck.
SPAWN_TIMEOUT = 30.0


class _Refused(SandboxError):
    """The zygote or the fork server answered, but made no container: not broken."""


class _ServerGone(_Refused):
    """The fork server is dead (killed, crashed): the zygote starts another."""


class ZygoteClient:
    """The supervisor's end: ``await spawn(spec)`` returns a ``Spawned`` container init.

    It asks the zygote for each shape's plan and for a fork server once, then has
    every container cloned by that fork server directly (see the module docstring).
    Requests are serialised (the fork server clones one at a time anyway).

    Cancellation: a request, once sent, is seen through (see ``spawn``); a
    zygote that dies or stays silent breaks the client, and later calls raise
    SandboxError. A fork server that dies is replaced at the next request.
    """

    def __init__(self, proc: ZygoteProcess) -> None:
        import trio

        self.proc = proc
        self._chan = channel.AsyncChannel(proc.sock)
        self._lock = trio.Lock()
        self._next = 0
        self._broken = False
        self._plans: collections.OrderedDict[ContainerSpec, int] = collections.OrderedDict()
        self._server: socket.socket | None = None
        self._life: ServerLife | None = None  # the fork server's, shared by its containers
        self.engine: Engine | None = None  # that fork server's engine (sandboxd/engine.py)

    async def spawn(self, spec: ContainerSpec, slot: int | None = None,
                    procs: Sequence[int] = ()) -> Spawned:
        """A container of ``spec``, in ``slot`` if given (``spec`` then being its shape,
        slot 0: the pool's way, which copies no spec per container), else in ``spec.slot``.
        ``procs``: its job cgroup's ``cgroup.procs`` files (``JobCgroup.procs_files``),
        lent to its init, which moves the job process itself (``Spawned.moved``).

        Cancellation: the exchanges (with the zygote when a shape or the fork server is
        new; with the fork server, a clone, a few ms) are shielded, so the container
        comes back and the caller destroys it; only a silence of ``SPAWN_TIMEOUT`` breaks
        the client. Cancelling mid-exchange used to leave the answer unread and the client
        broken for good: every later job of every client failed, because one client hung
        up while its job waited for a cold container.
        """
        import trio

        from sandboxd.uncontended import held

        async with held(self._lock):
            if self._broken:
                raise SandboxError("the zygote is gone")
            # Shielded from the caller, not from its own deadline (one scope for both).
            with trio.CancelScope(shield=True,
                                  deadline=trio.current_time() + SPAWN_TIMEOUT) as timer:
                try:
                    plan = await self._plan(spec)
                    ids = identity.slot_map(spec.slot if slot is None else slot)
                    try:
                        pid, pidfd, ours = await self._clone(ids, plan, procs)
                    except _ServerGone:  # replaced once: its inits died with it
                        pid, pidfd, ours = await self._clone(ids, plan, procs)
                except (channel.ChannelClosed, OSError) as e:
                    self._broken = True
                    raise SandboxError(f"the zygote died: {e!r}") from e
                except BaseException as e:
                    # A half-read exchange (our deadline's Cancelled too): unusable now.
                    if not isinstance(e, _Refused):
                        self._broken = True
                    raise
            if timer.cancelled_caught:
                raise SandboxError(f"the zygote or fork server is stuck: no answer in "
                                   f"{SPAWN_TIMEOUT:g} s")
        return Spawned(pid, pidfd, ours, job_uid=ids.host_job, server=self._life,
                       moved=bool(procs))

    async def _ask(self, msg: dict, answer: str, nfds: int) -> tuple[dict, list[int]]:
        """One request to the zygote and its answer, which must carry ``nfds`` descriptors."""
        self._next += 1
        req = self._next
        await self._chan.send({**msg, "id": req})
        got, fds = await self._chan.recv()
        if got.get("t") != answer or len(fds) != nfds or got.get("id") != req:
            for fd in fds:
                os.close(fd)
            raise _Refused(f"zygote could not make a container: {got.get('message', got)}")
        return got, fds

    def cached_plan(self, spec: ContainerSpec) -> int | None:
        """The plan memfd of ``spec``'s shape (slot 0) if this client holds it already."""
        return self._plans.get(spec)

    async def _plan(self, spec: ContainerSpec) -> int:
        """The plan memfd of ``spec``'s shape, asked of the zygote once (``MAX_PLANS`` kept)."""
        shape = spec if spec.slot == 0 else dataclasses.replace(spec, slot=0)
        fd = self._plans.get(shape)
        if fd is not None:
            self._plans.move_to_end(shape)
            return fd
        _msg, fds = await self._ask({"t": "plan", "spec": spec.to_wire()}, "plan", 1)
        self._plans[shape] = fds[0]
        if len(self._plans) > MAX_PLANS:
            os.close(self._plans.popitem(last=False)[1])
        return fds[0]

    async def _clone(self, ids: identity.IdMap | identity.RootlessMap, plan: int,
                     procs: Sequence[int] = ()) -> tuple[int, int, socket.socket]:
        """One container init from the fork server (asked of the zygote first if there is
        none): its pid, its pidfd and our end of its channel."""
        import trio

        if self._server is None:
            _msg, fds = await self._ask({"t": "forkserver"}, "forkserver", 3)
            self._server = socket.socket(fileno=fds[0])
            self._server.setblocking(False)
            self._life = ServerLife(fds[1])
            self.engine = Engine(socket.socket(fileno=fds[2]), self._life)
        server = self._server
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as e:  # out of descriptors: this container only
            raise _Refused(f"the container's channel: {e}") from e
        try:
            request, fds = ForkServer.request(ids, theirs, plan, procs)
            try:
                server.sendmsg([request], fds, socket.MSG_DONTWAIT)  # a few hundred bytes
                await trio.lowlevel.wait_readable(server)
                reply = server.recvmsg(8, socket.CMSG_SPACE(4), socket.MSG_DONTWAIT)
            except OSError as e:
                self._lose_server()
                raise _ServerGone(f"the container fork server is gone: {e}") from e
            try:
                pid, pidfd = ForkServer.answer(*reply[:2])
            except OSError as e:
                if e.errno == errno.EPIPE:  # it died (its inits with it): a fresh one
                    self._lose_server()
                    raise _ServerGone(str(e)) from e
                raise _Refused(str(e)) from e
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return pid, pidfd, ours

    def _lose_server(self) -> None:
        if self._server is not None:
            self._server.close()  # it exits at EOF, if it is alive at all
            self._server = None
        if self._life is not None:
            self._life.close()  # its containers are doomed: ``gone`` says so from now on
            self._life = None
        # Its engine's socket closes at its reader (the pool), which sees the server's end.
        self.engine = None

    def close(self) -> None:
        """Close the sockets: the zygote and the fork server exit on EOF. Their containers
        die with them."""
        self._broken = True
        self._lose_server()
        for fd in self._plans.values():
            os.close(fd)
        self._plans.clear()
        self._chan.close()

    async def aclose(self, timeout: float = 5.0) -> None:
        import trio

        self.close()
        with trio.move_on_after(timeout):
            while True:
                try:
                    pid, _ = os.waitpid(self.proc.pid, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid:
                    return
                await trio.sleep(0.005)
        os.kill(self.proc.pid, signal.SIGKILL)
        os.waitpid(self.proc.pid, 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
