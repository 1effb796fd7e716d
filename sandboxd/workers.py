"""``workers = N``: N supervisor processes behind one daemon's listening sockets.

Why. One supervisor is one Python thread, and it spends ~1.5 ms of CPU per
``/bin/true`` job: however many cores a host has, one daemon then tops out
near 600-700 jobs/s. With ``workers = N`` the daemon is N complete
supervisors (each its own job service, pool, zygote, fork server and cgroup
root ``sandboxd-<instance>-w<k>``) accepting connections from the same
listening sockets, so the supervisors' work spreads over N cores.

How. The daemon process (this module's ``supervise``) binds the Unix socket,
the TCP sockets and the HTTP socket, then forks the workers. It forks rather
than starting fresh interpreters because it is single-threaded and never runs
trio (so a fork is safe, and the child may still start its own zygote before
its event loop, as a single daemon does), the children inherit the listening
sockets and the profiles and runtime versions already probed (a fresh
interpreter would probe every runtime again, ~0.15 s per worker and per
restart), and ``PR_SET_PDEATHSIG`` is reliable: it fires when the thread that
forked exits, and here that thread is the process's only one. Each worker
then runs ``daemon.run_worker``: its cgroup root (stale leftovers removed),
its zygote, ``trio.run(serve)``.

The parent then only supervises: it logs ``ready`` once every worker has
said it is ready (a line on a pipe), restarts a worker that dies (its jobs
are lost to their clients as a closed connection, as in a daemon crash), and
on SIGTERM or SIGINT sends SIGTERM to every worker (each drains within the
grace period), waits for them, removes the socket and exits. Each worker is
in a process group of its own, so a terminal's ^C reaches the parent only and
each worker gets exactly one SIGTERM. If the parent is SIGKILLed, every worker
gets SIGKILL (PR_SET_PDEATHSIG), its zygote dies with it, and so on down to
the containers; the next start removes the cgroups left behind
(``remove_stale_workers``).

What is divided. ``concurrency`` and ``queue_length`` are the daemon's totals,
split among the workers (worker k gets ``total // N``, plus one for the first
``total % N``); the CPUs the daemon may use are dealt out too (worker k pins
jobs only on every N-th CPU from the k-th), so no two workers pin steps on
one CPU unless there are more workers than CPUs. ``pool_size``,
``max_connections`` and ``max_buffered`` are each worker's.

This module knows neither the front doors nor trio: the daemon hands it the
bound sockets and the function that runs one worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import mmap
import os
import re
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from sandboxd import slots
from sandboxd.cgroups import CgroupBackend, open_backend
from sandboxd.config import Config
from sandboxd.isolation import _libc
from sandboxd.log import event

# A worker that dies within this many seconds of its start is restarted after a
# delay that doubles each time (up to RESTART_DELAY_MAX): a crash loop must not
# spin the host. One that lived longer is restarted at once.
STABLE_AFTER = 10.0
RESTART_DELAY_MAX = 5.0
# Past the grace period, how long the workers get to empty their pools and stop
# before the parent kills them.
STOP_MARGIN = 30.0

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
_GONE = 1 << 30  # a dead worker's connection count (front/_siblings.py: GONE)


@dataclass
class Listeners:
    """The daemon's listening sockets, bound by the parent and shared by every worker."""

    unix: socket.socket
    tcp: list[socket.socket] = field(default_factory=list)
    http: socket.socket | None = None  # every worker's too (docs/configuration.md)


@dataclass
class Worker:
    """What worker ``index`` of ``count`` serves with (``daemon.serve``'s ``worker``)."""

    index: int
    count: int
    unix_sock: socket.socket
    tcp_socks: list[socket.socket]
    http_sock: socket.socket | None
    control_path: str  # this worker's control socket (the siblings' ps, stats, kill)
    control_paths: dict[int, str]  # every worker's, this one's included
    http_paths: dict[int, str]  # every worker's private HTTP socket (front/http/_route.py)
    cpus: list[int]
    ready_fd: int
    loads: mmap.mmap | None = None  # every worker's connection count (front/_siblings.py)

    @property
    def tag(self) -> str:
        return f"w{self.index}"

    def notify_ready(self, http_address: str, cgroup_version: int) -> None:
        """Tell the parent this worker serves (once; later calls do nothing)."""
        if self.ready_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, f"ready {http_address} {cgroup_version}\n".encode())
            os.close(self.ready_fd)
            self.ready_fd = -1


def control_path(state_dir: str, index: int) -> str:
    return os.path.join(state_dir, f"sandboxd-worker-{index}.sock")


def http_path(state_dir: str, index: int) -> str:
    return os.path.join(state_dir, f"sandboxd-worker-{index}-http.sock")


# A Unix socket's path holds at most 107 bytes; a longer one is reached through a
# descriptor of its directory (/proc/self/fd/N/NAME), which every worker inherits.
_SUN_PATH_MAX = 107


def share(total: int, index: int, count: int) -> int:
    """Worker ``index``'s part of ``total`` (the parts add up to ``total``)."""
    return total // count + (1 if index < total % count else 0)


def worker_cpus(cpus: list[int], index: int, count: int) -> list[int]:
    """The CPUs worker ``index`` pins jobs on: every ``count``-th of ``cpus`` from the
    ``index``-th; with more workers than CPUs, one CPU (shared with other workers)."""
    mine = cpus[index::count]
    return mine or [cpus[index % len(cpus)]]


def worker_config(cfg: Config, index: int) -> Config:
    """Worker ``index``'s configuration: its own cgroup instance, its share of the
    daemon's concurrency and queue, and (with ``redis``) a cluster node of its own,
    ``<node_id>-w<k>`` (without node_id, ``<hostname>-<instance>-w<k>`` by default)."""
    n = cfg.workers
    return dataclasses.replace(cfg, instance=f"{cfg.instance}-w{index}",
                               concurrency=max(1, share(cfg.concurrency, index, n)),
                               queue_length=share(cfg.queue_length, index, n),
                               node_id=f"{cfg.node_id}-w{index}" if cfg.node_id else "")


def stale_worker_roots(backend: CgroupBackend, instance: str) -> list[str]:
    """Tags (``<instance>-w<k>``) of worker cgroup roots found beside ``backend``'s root:
    what workers of an earlier run (perhaps with more workers, perhaps SIGKILLed) left."""
    parents: set[str] = set()
    roots = getattr(backend, "_roots", None)  # v1: a root per hierarchy
    if isinstance(roots, dict):
        parents = {os.path.dirname(r) for r in roots.values()}
    own = getattr(backend, "own", None)  # v2: one root
    if isinstance(own, str):
        parents.add(own)
    pattern = re.compile(rf"sandboxd-({re.escape(instance)}-w\d+)")
    tags: set[str] = set()
    for parent in parents:
        with contextlib.suppress(OSError):
            for name in os.listdir(parent):
                m = pattern.fullmatch(name)
                if m and os.path.isdir(os.path.join(parent, name)):
                    tags.add(m.group(1))
    return sorted(tags)


def remove_stale_workers(backend: CgroupBackend, instance: str) -> int:
    """Kill and remove every worker cgroup root an earlier run left; how many there were."""
    tags = stale_worker_roots(backend, instance)
    for tag in tags:
        open_backend(tag).close()  # close: every job cgroup killed and removed, the root too
    return len(tags)


class _Child:
    def __init__(self, index: int) -> None:
        self.index = index
        self.pid = 0
        self.ready_fd = -1
        self.ready = False
        self.started = 0.0
        self.delay = 0.0  # before the next restart
        self.restart_at: float | None = None
        self.status: int | None = None  # exit status, once it ended for good


RunWorker = Callable[[Config, Worker], int]


class Supervisor:
    """The parent: forks, watches and stops the workers."""

    def __init__(self, cfg: Config, listeners: Listeners, run_worker: RunWorker,
                 cgroup_version: int) -> None:
        self.cfg = cfg
        self.listeners = listeners
        self.run_worker = run_worker
        self.cgroup_version = cgroup_version
        self.n = cfg.workers
        self.children = [_Child(k) for k in range(self.n)]
        self.cpus = sorted(os.sched_getaffinity(0))
        self.real_paths = {k: control_path(cfg.state_dir, k) for k in range(self.n)}
        self.real_http_paths = {k: http_path(cfg.state_dir, k) for k in range(self.n)}
        # What the workers bind and connect to.
        self.paths, self.http_paths = dict(self.real_paths), dict(self.real_http_paths)
        if any(len(p.encode()) > _SUN_PATH_MAX for p in self.real_http_paths.values()):
            state_fd = os.open(cfg.state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self.paths, self.http_paths = (
                {k: f"/proc/self/fd/{state_fd}/{os.path.basename(p)}" for k, p in real.items()}
                for real in (self.real_paths, self.real_http_paths))
        self.http_address = "off"
        self.stopping = False
        self._failed = False  # a worker could not start: the daemon exits 1
        self._signals: list[int] = []  # caught, not yet handled
        # Each worker's connection count, shared (MAP_SHARED, anonymous) with every
        # worker forked after this: how the workers balance accepts.
        self.loads = mmap.mmap(-1, 4 * self.n)
        self._wake = (-1, -1)

    def _on_signal(self, signo: int, _frame: object) -> None:
        self._signals.append(signo)  # the loop acts on it (woken by the wakeup fd)

    # -- one worker ---------------------------------------------------------

    def _fork(self, child: _Child) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker; never returns
            os.close(r)
            self._in_worker(child.index, w, parent)
        os.close(w)
        child.pid, child.ready_fd, child.ready = pid, r, False
        child.started, child.restart_at = time.monotonic(), None

    def _in_worker(self, index: int, ready_fd: int, parent: int) -> None:
        code = 1
        try:
            _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before we could notice
                os._exit(1)
            os.setpgid(0, 0)  # a terminal's ^C is the parent's to pass on, once
            for sig in (signal.SIGTERM, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.set_wakeup_fd(-1)
            os.close(self._wake[0])
            os.close(self._wake[1])
            for other in self.children:  # the siblings' ready pipes are not ours
                if other.ready_fd >= 0:
                    os.close(other.ready_fd)
            # Each worker has its own descriptor on the host's slot lock file: OFD
            # locks of one open file description never conflict, so a shared one would
            # let two workers take the same uid slot (slots.py). The parent never opens
            # it; should it ever, the worker still opens its own at first use.
            slots._HOST = None
            worker = Worker(index=index, count=self.n, unix_sock=self.listeners.unix,
                            tcp_socks=list(self.listeners.tcp), http_sock=self.listeners.http,
                            control_path=self.paths[index], control_paths=dict(self.paths),
                            http_paths=dict(self.http_paths),
                            cpus=worker_cpus(self.cpus, index, self.n), ready_fd=ready_fd,
                            loads=self.loads)
            _tag_log_lines(index)
            code = self.run_worker(worker_config(self.cfg, index), worker)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(code)

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        """Fork every worker, serve until SIGTERM/SIGINT, stop them; the exit status."""
        # Signals wake the loop through a pipe (set_wakeup_fd) that select watches with
        # the workers' ready pipes: the loop sleeps until something happens.
        self._wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(self._wake[1])
        old = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        try:
            for child in self.children:
                self._fork(child)
            return self._loop()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_wakeup)
            os.close(self._wake[0])
            os.close(self._wake[1])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.cfg.socket)
            for path in [*self.real_paths.values(), *self.real_http_paths.values()]:
                # a killed worker's, if any
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    def _loop(self) -> int:
        announced = False
        stop_deadline = float("inf")
        while True:
            self._read_ready()
            if not announced and all(c.ready for c in self.children):
                announced = True
                cfg = self.cfg
                event("ready", socket=cfg.socket, tcp=cfg.tcp or "off", http=self.http_address,
                      workers=self.n, concurrency=cfg.concurrency, pool_size=cfg.pool_size,
                      cgroup_version=self.cgroup_version, pid=os.getpid())
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake[0], 512):
                    pass
            while self._signals:
                signo = self._signals.pop(0)
                if signo in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                    self._stop(signal.Signals(signo).name)
                    stop_deadline = time.monotonic() + self.cfg.grace_period + STOP_MARGIN
            failed = self._reap(announced)
            if failed is not None and not self.stopping:
                # A worker that could not start at all: the daemon cannot serve as
                # configured; say so with its status, as a single daemon would.
                event("worker_failed", logging.ERROR, worker=failed.index,
                      status=failed.status)
                self._stop("worker_failed")
                stop_deadline = time.monotonic() + self.cfg.grace_period + STOP_MARGIN
            if self.stopping:
                live = [c for c in self.children if c.pid]
                if not live:
                    break
                if time.monotonic() > stop_deadline:
                    for c in live:
                        event("worker_killed", logging.WARNING, worker=c.index, pid=c.pid)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(c.pid, signal.SIGKILL)
                    stop_deadline = float("inf")
            else:
                now = time.monotonic()
                for c in self.children:
                    if not c.pid and c.restart_at is not None and now >= c.restart_at:
                        self._fork(c)
                        event("worker_restarted", worker=c.index, pid=c.pid)
            fds = [c.ready_fd for c in self.children if c.ready_fd >= 0] + [self._wake[0]]
            wake_at = [c.restart_at for c in self.children
                       if not c.pid and c.restart_at is not None]
            if self.stopping and stop_deadline != float("inf"):
                wake_at.append(stop_deadline)
            timeout = max(0.0, min([*wake_at, time.monotonic() + 5.0]) - time.monotonic())
            if not self._signals:
                select.select(fds, [], [], timeout)
        statuses = [c.status or 0 for c in self.children]
        code = 0 if not any(statuses) and not self._failed else 1
        event("stopped", workers=self.n, status=code)
        return code

    def _read_ready(self) -> None:
        for c in self.children:
            if c.ready_fd < 0:
                continue
            r, _, _ = select.select([c.ready_fd], [], [], 0)
            if not r:
                continue
            try:
                data = os.read(c.ready_fd, 4096)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                data = b""
            if data.startswith(b"ready"):
                c.ready = True
                parts = data.decode(errors="replace").split()
                if c.index == 0 and len(parts) > 1:
                    self.http_address = parts[1]
            os.close(c.ready_fd)
            c.ready_fd = -1

    def _reap(self, announced: bool) -> _Child | None:
        """Reap ended workers; schedule restarts. A worker that ended before the daemon
        was first ready is returned: start-up failed."""
        failed = None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return failed
            if pid == 0:
                return failed
            child = next((c for c in self.children if c.pid == pid), None)
            if child is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            child.pid = 0
            if child.ready_fd >= 0:
                os.close(child.ready_fd)
                child.ready_fd = -1
            if self.stopping:
                child.status = code
                event("worker_stopped", worker=child.index, pid=pid, status=code)
                continue
            if not announced:
                child.status = code if code else 1
                self._failed = True
                failed = child
                continue
            # Until it is back (it writes 0 once it accepts), no sibling waits for it.
            struct.pack_into("i", self.loads, 4 * child.index, _GONE)
            lived = time.monotonic() - child.started
            child.delay = 0.0 if lived > STABLE_AFTER else min(
                RESTART_DELAY_MAX, max(0.1, child.delay * 2))
            child.restart_at = time.monotonic() + child.delay
            event("worker_died", logging.WARNING, worker=child.index, pid=pid, status=code,
                  lived=round(lived, 3), restart_in=child.delay)

    def _stop(self, why: str) -> None:
        self.stopping = True
        live = [c for c in self.children if c.pid]
        event("draining", signal=why, workers=len(live), grace=self.cfg.grace_period)
        for c in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.pid, signal.SIGTERM)
        # No worker will be started again: the parent's copies of the listening sockets
        # go, so that once every worker has stopped accepting, a new connection is
        # refused at once (as by a single draining daemon) instead of waiting in the
        # backlog for a daemon that is leaving.
        for sock in [self.listeners.unix, *self.listeners.tcp, self.listeners.http]:
            if sock is not None:
                sock.close()


def _tag_log_lines(index: int) -> None:
    """Every log line of this worker says ``worker=<index>`` (after the event's name)."""
    tag = {"worker": index}

    def add(record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and "worker" not in fields:
            record.fields = {**tag, **fields}
        return True

    for handler in logging.getLogger("sandboxd").handlers:
        handler.addFilter(add)


def supervise(cfg: Config, listeners: Listeners, run_worker: RunWorker,
              cgroup_version: int) -> int:
    """Run ``cfg.workers`` workers over ``listeners`` until SIGTERM; the exit status."""
    return Supervisor(cfg, listeners, run_worker, cgroup_version).run()
