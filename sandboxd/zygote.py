"""The zygote: a small single-threaded process that makes every container.

Strategy: forking a process that runs an event loop (and may have threads)
is unsafe, so the supervisor starts this process once, *before* trio starts,
with the modules a container needs already imported and the seccomp policies
already compiled. It then does one thing: on a ``spawn`` request it has a
container made (``spawn.spawn``: the plan of its shape, built once, and
the native fork server's clone) and hands back the init's pid, its pidfd and
the control socket's other end over SCM_RIGHTS. It never waits for the
container to become ready; the supervisor does that asynchronously.

Inits are the native fork server's children, and it ignores SIGCHLD so the
kernel reaps them. The zygote dies with the supervisor (PR_SET_PDEATHSIG, and
EOF on its socket), the fork server with the zygote, each init with the fork
server, and with the init the whole container.

``ZygoteClient`` is the supervisor's (trio) end.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

from sandboxd import channel, slots
from sandboxd.isolation import _libc, identity
from sandboxd.result import SandboxError
from sandboxd.spawn import ContainerSpec, Spawned, keep_only_fds, spawn


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
        req = msg.get("id")
        if msg.get("t") != "spawn":
            channel.send(sock, {"t": "error", "id": req, "message": f"unknown request {msg!r}"})
            continue
        try:
            spawned = spawn(ContainerSpec.from_wire(msg["spec"]))
        except Exception as e:
            channel.send(sock, {"t": "error", "id": req, "message": f"{type(e).__name__}: {e}"})
            continue
        try:
            channel.send(sock, {"t": "spawned", "id": req, "pid": spawned.pid},
                         [spawned.pidfd, spawned.sock.fileno()])
        finally:
            os.close(spawned.pidfd)
            spawned.sock.close()


# How long the zygote may take to answer a spawn request before it is presumed stuck.
SPAWN_TIMEOUT = 30.0


class ZygoteClient:
    """The supervisor's end: ``await spawn(spec)`` returns a ``Spawned`` container init.

    Requests are serialised (the zygote handles one at a time anyway).

    Cancellation: a request, once sent, is seen through (see ``spawn``); a
    zygote that dies or stays silent breaks the client, and later calls raise
    SandboxError.
    """

    def __init__(self, proc: ZygoteProcess) -> None:
        import trio

        self.proc = proc
        self._chan = channel.AsyncChannel(proc.sock)
        self._lock = trio.Lock()
        self._next = 0
        self._broken = False

    async def spawn(self, spec: ContainerSpec) -> Spawned:
        """Cancellation: the exchange with the zygote (a clone, a few ms) is shielded, so
        the container comes back and the caller destroys it; only a zygote silent for
        ``SPAWN_TIMEOUT`` breaks the client. Cancelling mid-exchange used to leave the
        answer unread and the client broken for good: every later job of every client
        failed, because one client hung up while its job waited for a cold container.
        """
        import trio

        async with self._lock:
            if self._broken:
                raise SandboxError("the zygote is gone")
            self._next += 1
            req = self._next
            with trio.CancelScope(shield=True):
                try:
                    with trio.fail_after(SPAWN_TIMEOUT):
                        await self._chan.send({"t": "spawn", "id": req, "spec": spec.to_wire()})
                        msg, fds = await self._chan.recv()
                except BaseException as e:
                    self._broken = True
                    if isinstance(e, (channel.ChannelClosed, OSError, trio.TooSlowError)):
                        raise SandboxError(f"the zygote died: {e!r}") from e
                    raise
        if msg.get("t") != "spawned" or len(fds) != 2 or msg.get("id") != req:
            for fd in fds:
                os.close(fd)
            raise SandboxError(f"zygote could not make a container: {msg.get('message', msg)}")
        pidfd, sock_fd = fds
        return Spawned(int(msg["pid"]), pidfd, socket.socket(fileno=sock_fd),
                       job_uid=identity.slot_map(spec.slot).host_job)

    def close(self) -> None:
        """Close the socket: the zygote exits on EOF. Its containers die with it."""
        self._broken = True
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
