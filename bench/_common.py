"""What every benchmark here shares: the baselines, measured the same way everywhere, and
the pieces that drive a real daemon (start it, talk to it, read its costs).

bubblewrap runs with the isolation of research/baseline.md: ``--unshare-all``
(user, pid, net, ipc, uts and cgroup namespaces), read-only /usr, new /proc
and /dev, a tmpfs /tmp; no cgroup limits and no seccomp. The floor is a bare
``posix_spawn`` + ``waitpid`` of the same command.

The daemon is driven with a bare protocol client (``Client``) rather than
``sandboxd_client``: one blocking socket, no threads, no retries, so that what
is timed is the daemon and the protocol, not a client library's conveniences.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sandboxd_protocol as proto

COMMANDS = {"true": ["/bin/true"], "py": ["/usr/bin/python3", "-c", "pass"]}
BWRAP = [shutil.which("bwrap") or "/usr/bin/bwrap", "--unshare-all", "--die-with-parent",
         "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib",
         "/lib", "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev",
         "--tmpfs", "/tmp", "--"]
# The same limits for every system that has limits (runc's spec, sandboxd's job).
MEMORY_LIMIT = 256 << 20
PIDS_LIMIT = 64


def spawn_wait(argv: list[str]) -> float:
    """Seconds to spawn ``argv`` (stdin from, output to /dev/null) and reap it; raises if it
    failed."""
    t = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
    _, status = os.waitpid(pid, 0)
    if status:
        raise RuntimeError(f"{argv}: status {status}")
    return time.perf_counter() - t


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile by rank (no interpolation), as the daemon's own stats compute it."""
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


# ------------------------------------------------------------------ the daemon


class Client:
    """One connection to the daemon, one job at a time, over the bare protocol."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.conn = proto.Connection(proto.CLIENT)
        self.sock.sendall(self.conn.send(proto.Hello(client="bench")))
        assert isinstance(self.next(), proto.Welcome)
        self.n = 0

    def close(self) -> None:
        self.sock.close()

    def next(self) -> object:
        while True:
            ev = self.conn.next_event()
            if ev is not proto.NEED_DATA:
                return ev
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the daemon closed the connection")
            self.conn.receive_data(data)

    def job(self, **fields: object) -> proto.JobResult:
        """Submit one job (``JobSubmission`` fields but the id) and wait for its result."""
        self.n += 1
        self.sock.sendall(self.conn.send(proto.JobSubmission(id=str(self.n), **fields)))
        while True:
            ev = self.next()
            if isinstance(ev, proto.JobResult):
                return ev
            if isinstance(ev, proto.ErrorReport):
                raise RuntimeError(f"job {fields}: {ev}")

    def run(self, argv: list[str]) -> proto.JobResult:
        """Run ``argv`` in a container of the ``bash`` profile; raises unless it was ``ok``."""
        result = self.job(profile="bash", argv=tuple(argv), limits=proto.JobLimits(
            memory=MEMORY_LIMIT, pids=PIDS_LIMIT))
        if result.steps[0].verdict != "ok":
            raise RuntimeError(f"{argv}: {result.steps[0]}")
        return result

    def stats(self) -> proto.ServerStats:
        self.sock.sendall(self.conn.send(proto.StatsRequest()))
        ev = self.next()
        assert isinstance(ev, proto.ServerStats), ev
        return ev


def start_daemon(tmp: Path, pool_size: int, concurrency: int, *, name: str = "",
                 pool_profiles: tuple[str, ...] = ("bash",),
                 cgroup: str | None = None) -> tuple[subprocess.Popen, str]:
    """A daemon of its own in ``tmp`` (socket, state, log), answering once it is warm.

    ``name`` tells several daemons of one benchmark apart (their cgroups are
    ``sandboxd-bench-<pid><name>``). With ``cgroup`` (a v1 cgroup directory), the
    daemon starts in it, before it makes anything, so that everything it runs is
    counted there.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    sock = str(tmp / "sandboxd.sock")
    cfg = tmp / "sandboxd.toml"
    profiles = ", ".join(f'"{p}"' for p in pool_profiles)
    cfg.write_text(f'socket = "{sock}"\nstate_dir = "{tmp}/state"\n'
                   f'instance = "bench-{os.getpid()}{name}"\npool_size = {pool_size}\n'
                   f"pool_profiles = [{profiles}]\n"
                   f"concurrency = {concurrency}\nqueue_length = 256\nlog_level = \"warning\"\n")
    log = open(tmp / "daemon.log", "wb")  # noqa: SIM115 - lives as long as the daemon
    argv = [sys.executable, "-m", "sandboxd", "serve", "--config", str(cfg)]
    if cgroup is not None:
        argv = ["/bin/sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *argv]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    for _ in range(600):
        if proc.poll() is not None:
            break
        if os.path.exists(sock):
            try:
                Client(sock).close()
                return proc, sock
            except OSError:
                pass
        time.sleep(0.05)
    stop_daemon(proc)
    raise RuntimeError((tmp / "daemon.log").read_text())


def stop_daemon(proc: subprocess.Popen) -> None:
    """SIGTERM (the daemon drains, empties its pool, removes its cgroups), then reap."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, all its threads, living or gone."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the supervisor's: its zygote)."""
    found = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(e))
            except OSError:
                pass
    return found


def makers(pid: int) -> list[int]:
    """The daemon's container makers: its zygote, and the zygote's native fork server
    (which clones the containers: the inits are its children)."""
    zygotes = children(pid)
    return zygotes + [c for z in zygotes for c in children(z)]


def uss(pid: int) -> int:
    """Unique set size: the memory that would be freed if ``pid`` exited."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) * 1024 for line in f
                   if line.startswith(("Private_Clean:", "Private_Dirty:")))


def container_pids(zygotes: list[int] | None = None) -> dict[int, list[int]]:
    """{init pid: [init, job process]} for every waiting container (by our uid ranges).

    With ``zygotes`` (``makers``), only the containers these made (their inits are the
    fork server's children): other daemons on a shared machine have theirs.
    """
    from sandboxd.isolation import identity

    inits: dict[int, list[int]] = {}
    procs = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/status") as f:
                st = f.read()
        except OSError:
            continue
        uid = int(st.split("Uid:")[1].split()[0])
        ppid = int(st.split("PPid:")[1].split()[0])
        if identity.INIT_BASE <= uid < identity.INIT_BASE + identity.MAX_SLOTS:
            if zygotes is None or ppid in zygotes:
                inits.setdefault(int(e), [int(e)])
        elif identity.JOB_BASE <= uid < identity.JOB_BASE + identity.MAX_SLOTS:
            procs.append((int(e), ppid))
    for pid, ppid in procs:
        if ppid in inits:
            inits[ppid].append(pid)
    return inits


def throughput(fn: Callable[[], Callable[[], object]], clients: int, seconds: float) -> float:
    """Jobs/s of ``clients`` closed loops (threads) for ``seconds``.

    ``fn`` makes one client's state and returns the call that runs one job.
    Jobs started before the deadline are counted and waited for, and the
    time includes them, so slow systems are not flattered by a cut-off tail.
    """
    count = [0] * clients
    errors: list[BaseException] = []
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        try:
            one = fn()
            while time.monotonic() < stop:
                one()
                count[i] += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return sum(count) / (time.monotonic() - t)
