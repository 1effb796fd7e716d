"""``sandboxd serve``: start-up, the listeners, and SIGTERM's drain.

Strategy: ``main`` does, in order, everything that must happen before trio
runs (configuration, logging, the cgroup root and the removal of whatever a
crashed run left there, and the zygote, which must be forked while this
process is single-threaded), then ``trio.run(serve)``. ``serve`` builds the
job service over a pool, starts it with ``nursery.start`` (so that jobs are
accepted only once the pool is warm), then opens each front door's
listeners, and on SIGTERM stops accepting, lets admitted jobs finish within
the grace period, and stops. Nothing here knows what a job is.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import grp
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import trio

from sandboxd import cgroups, zygote
from sandboxd.cgroups import CgroupBackend, CgroupError
from sandboxd.config import Config, ConfigError, egress_policy, load
from sandboxd.front.msgpack_api import MsgpackFront
from sandboxd.log import event, setup_logging
from sandboxd.pool import Pool
from sandboxd.profiles import Profile, ProfileError, load_dir
from sandboxd.result import SandboxError
from sandboxd.service import JobService
from sandboxd.workers import Worker


def _bind_unix(path: str, mode: int, group: str) -> socket.socket:
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ECONNREFUSED):
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket of a crashed run
    else:
        raise SandboxError(f"another daemon is already listening on {path}")
    finally:
        probe.close()
    sock.bind(path)
    os.chmod(path, mode)
    if group:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    sock.listen(512)
    return sock


async def serve(cfg: Config, zproc: zygote.ZygoteProcess, backend: CgroupBackend,
                profiles: dict[str, Profile], versions: dict[str, str] | None = None, *,
                worker: Worker | None = None,
                task_status: trio.TaskStatus[JobService] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until SIGTERM (drain, then stop) or cancellation.

    Cancellation: every job is cancelled (its containers killed and removed),
    the pool is emptied, the zygote stopped and the socket file removed.

    ``worker`` (``workers = N``, sandboxd/workers.py): this process is worker k of
    N; the listening sockets are the daemon's (bound by the parent, never removed
    here), the HTTP front door is worker 0's alone, and a private control socket
    answers the siblings' ps, stats and kill.
    """
    zclient = zygote.ZygoteClient(zproc)
    pool = Pool(zclient, backend, cfg.pool_size)
    service = JobService(profiles, pool, concurrency=cfg.concurrency,
                         queue_length=cfg.queue_length, versions=versions,
                         caches=dict(cfg.caches), workspace_max_files=cfg.workspace_max_files,
                         artifacts_max_files=cfg.artifacts_max_files,
                         artifacts_max_bytes=cfg.artifacts_max_bytes,
                         egress=egress_policy(cfg),
                         cpus=worker.cpus if worker is not None else None)
    siblings = None
    if worker is not None:
        from sandboxd.front._siblings import Siblings
        siblings = Siblings(worker.index, worker.control_paths, worker.loads)
    front = MsgpackFront(cfg, service, siblings)
    http_front = http_sock = http_private = None
    if cfg.http and (worker is None or worker.http_sock is not None):
        # imported only when asked: hypercorn and starlette cost start-up time
        from sandboxd.front.http import HttpFront, Router, bind_http

        # With workers, its ps, stats, kill and /metrics are the whole daemon's, and a
        # request for another worker's stored result is relayed there through that
        # worker's private HTTP socket (front/http/_route.py).
        router = None
        if worker is not None:
            router = Router(worker.index, worker.count, worker.http_paths)
            http_private = _bind_unix(worker.http_paths[worker.index], 0o600, "")
        http_front = HttpFront(cfg, service, front.view if siblings is not None else None,
                               router, siblings)
        http_sock = (worker.http_sock if worker is not None
                     else bind_http(cfg.http, cfg.http_send_timeout))
    if worker is None:
        unix_sock = _bind_unix(cfg.socket, cfg.socket_mode, cfg.socket_group)
    else:
        unix_sock = worker.unix_sock
        control_sock = _bind_unix(worker.control_path, 0o600, "")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run, list(cfg.pool_profiles))
            if cfg.redis:  # a node of a cluster too (coredis: the `cluster` extra)
                from sandboxd.front.redis_queue import RedisNode
                await nursery.start(RedisNode(cfg, service).run)
            async with trio.open_nursery() as connections:
                accepting = trio.CancelScope()
                listeners: list[trio.abc.Listener[Any]]
                if worker is not None:  # the daemon's sockets, bound by the parent, shared
                    from sandboxd.front._siblings import BalancedListener
                    assert siblings is not None
                    siblings.publish(0)
                    listeners = [BalancedListener(unix_sock, siblings)]
                    tcp_listeners = [BalancedListener(s, siblings) for s in worker.tcp_socks]
                else:
                    listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(unix_sock))]
                    if cfg.tcp:
                        host, _, port = cfg.tcp.rpartition(":")
                        tcp_listeners = await trio.open_tcp_listeners(int(port), host=host)
                    else:
                        tcp_listeners = []

                async def handle_tcp(stream: trio.abc.Stream) -> None:
                    await front.handle(stream, tcp=True)

                async def accept() -> None:
                    with accepting:
                        async with trio.open_nursery() as acceptors:
                            acceptors.start_soon(partial(
                                trio.serve_listeners, front.handle, listeners,
                                handler_nursery=connections))
                            if tcp_listeners:
                                acceptors.start_soon(partial(
                                    trio.serve_listeners, handle_tcp, tcp_listeners,
                                    handler_nursery=connections))

                connections.start_soon(accept)
                if worker is not None:  # siblings' ps, stats and kill; never closed by drain
                    control = trio.SocketListener(trio.socket.from_stdlib_socket(control_sock))
                    connections.start_soon(partial(
                        trio.serve_listeners, partial(front.handle, control=True), [control],
                        handler_nursery=connections))
                http_address = "off"
                if http_front is not None:
                    http_address = await connections.start(http_front.serve, http_sock,
                                                           http_private)
                # What start-up made (modules, profiles, the HTTP app: ~50,000 objects)
                # lives as long as the daemon. Frozen, a full collection no longer walks
                # it: 5-15 ms of the event loop, landing in the middle of some job's
                # answer (a C hello world through HTTP took 16 ms more in 1 of 40).
                gc.collect()
                gc.freeze()
                if worker is None:
                    event("ready", socket=cfg.socket, tcp=cfg.tcp or "off", http=http_address,
                          concurrency=cfg.concurrency, pool_size=cfg.pool_size,
                          cgroup_version=backend.version, profiles=len(profiles))
                else:
                    event("worker_ready", pid=os.getpid(), concurrency=cfg.concurrency,
                          pool_size=cfg.pool_size,
                          cpus=",".join(map(str, worker.cpus)), http=http_address,
                          cgroup_version=backend.version, profiles=len(profiles))
                    worker.notify_ready(http_address, backend.version)
                task_status.started(service)
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    # One that came while starting (``_early``) drains at once.
                    signum = _early.signum or await anext(aiter(signals))
                    event("draining", signal=signal.Signals(signum).name,
                          running=service.in_flight, grace=cfg.grace_period)
                    accepting.cancel()  # no new connections; open ones may finish
                    if http_front is not None:
                        http_front.stop()
                    await service.drain(cfg.grace_period)
                    if http_front is not None:  # the last answers on their way
                        with trio.move_on_after(2.0):
                            await http_front.stopped.wait()
                connections.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await zclient.aclose()
        with contextlib.suppress(FileNotFoundError):
            # A worker's listening socket is the daemon's, which the parent removes.
            os.unlink(cfg.socket if worker is None else worker.control_path)
        if http_private is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(worker.http_paths[worker.index])  # type: ignore[union-attr]
        event("stopped")


def _bind_tcp(address: str) -> list[socket.socket]:
    """Listening sockets for ``HOST:PORT`` (every address the host name has), as
    ``trio.open_tcp_listeners`` makes them, but before trio: for the workers to share."""
    host, _, port = address.rpartition(":")
    socks: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto_, _name, addr in socket.getaddrinfo(
                host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            sock = socket.socket(family, kind, proto_)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(512)
    except OSError as e:
        for sock in socks:
            sock.close()
        raise SandboxError(f"cannot listen on tcp {address}: {e.strerror or e}") from e
    return socks


def run_worker(cfg: Config, worker: Worker, *, profiles: dict[str, Profile],
               versions: dict[str, str]) -> int:
    """One worker of ``workers = N`` (in the process ``workers.Supervisor`` forked): its
    cgroup root (what a killed predecessor left, removed), its zygote, then ``serve``;
    its exit status. ``cfg`` is the worker's (``workers.worker_config``)."""
    with _signals_deferred():
        try:
            backend = cgroups.open_backend(cfg.instance)
        except Exception as e:
            sys.stderr.write(f"sandboxd: worker {worker.index}: cannot set up cgroups: {e}\n")
            return 1
        try:
            stale = backend.remove_stale()
            if stale:
                event("removed_stale", cgroups=len(stale))
            return _supervise(cfg, backend, profiles, versions, worker)
        finally:
            backend.close()


class _Deferred:
    """The SIGTERM or SIGINT handler while trio's receiver is not listening (the daemon
    still starting, or already stopping): the signal is remembered, not fatal.

    At the default disposition a SIGTERM in those windows killed the daemon outright,
    its cgroups left behind: while it started (its backend made, its pool warming), or
    while it cleaned up after its receiver had closed (destroying containers, removing
    cgroups), which a crash makes long. ``serve`` drains at once for one that came early.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            self.signum = signum


_early = _Deferred()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    old = {sig: signal.signal(sig, _early) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _supervise(cfg: Config, backend: CgroupBackend, profiles: dict[str, Profile],
               versions: dict[str, str], worker: Worker | None = None) -> int:
    """The zygote, then ``serve`` until it returns; the zygote killed and reaped after,
    whatever happened. 0, or 1 with the reason on stderr."""
    policies = tuple(sorted({p.seccomp for p in profiles.values()} | {"default"}))
    zproc = zygote.start(policies)
    try:
        trio.run(partial(serve, worker=worker), cfg, zproc, backend, profiles, versions)
    except SandboxError as e:
        who = f"worker {worker.index}: " if worker is not None else ""
        sys.stderr.write(f"sandboxd: {who}{e.reason}\n")
        return 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(zproc.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(zproc.pid, 0)
    return 0


def _open_backend(cfg: Config) -> CgroupBackend | None:
    """The cgroup backend, its problems logged and a dead daemon's cgroups removed; None,
    said on stderr, when cgroups cannot be set up (the caller exits 1)."""
    try:
        backend = cgroups.open_backend(cfg.instance)
    except Exception as e:
        sys.stderr.write(f"sandboxd: cannot set up cgroups: {e}\n"
                         "Run `sandboxd check-environment` for what is missing.\n")
        return None
    try:
        for problem in backend.problems():
            event("environment", logging.WARNING, problem=problem)
        if cfg.cgroup_favordynmods:
            # Before any thread or job: a pool miss's move then never waits for an RCU
            # grace period (sandboxd/cgroups/_dynmods.py). Host-wide until reboot.
            try:
                event("cgroup_favordynmods", mode=cgroups.favor_dynmods(cfg.state_dir))
            except CgroupError as e:
                event("cgroup_favordynmods", logging.WARNING if os.geteuid() == 0
                      else logging.INFO, problem=str(e))
        stale = backend.remove_stale()
        if stale:
            event("removed_stale", cgroups=len(stale))
    except BaseException:
        backend.close()
        raise
    return backend


def _probe_versions(profiles: dict[str, Profile]) -> dict[str, str]:
    """Each runtime's version: a subprocess each, side by side (the JVM ones, java and
    kotlin's compiler, take 0.2-2 s alone and more on a loaded host). The threads are
    joined on return, so a fork after it (the workers) copies none."""
    with ThreadPoolExecutor(max_workers=8) as probes:
        return dict(zip(profiles, probes.map(Profile.version, profiles.values()),
                        strict=True))


def _serve_workers(cfg: Config, profiles: dict[str, Profile]) -> int:
    """``workers = N`` (N > 1): bind the listeners here, then fork and supervise the
    workers (sandboxd/workers.py)."""
    from sandboxd import workers

    backend = _open_backend(cfg)
    if backend is None:
        return 1
    try:
        gone = workers.remove_stale_workers(backend, cfg.instance)
        if gone:
            event("removed_stale_workers", roots=gone)
        # Probed once, here: the workers inherit them (and a restarted worker too). The
        # probing threads are joined before the fork (ThreadPoolExecutor's exit).
        versions = _probe_versions(profiles)
        tcp: list[socket.socket] = []
        http_sock = None
        try:
            if cfg.tcp:
                tcp = _bind_tcp(cfg.tcp)
            if cfg.http:  # served by every worker (docs/configuration.md, "Workers")
                from sandboxd.front.http import bind_http
                http_sock = bind_http(cfg.http, cfg.http_send_timeout)
            unix_sock = _bind_unix(cfg.socket, cfg.socket_mode, cfg.socket_group)
        except SandboxError as e:
            sys.stderr.write(f"sandboxd: {e.reason}\n")
            return 1
        listeners = workers.Listeners(unix=unix_sock, tcp=tcp, http=http_sock)
        code = workers.supervise(cfg, listeners, partial(run_worker, profiles=profiles,
                                                         versions=versions), backend.version)
        # What a worker that was killed (or failed to start) could not remove itself.
        gone = workers.remove_stale_workers(backend, cfg.instance)
        if gone:
            event("removed_stale_workers", roots=gone)
        return code
    finally:
        backend.close()


def _raise_open_files() -> None:
    """The soft descriptor limit up to the hard one (at most 65536, as the systemd units
    set): each job cgroup keeps up to 19 counter and control files open (cgroups/v1.py),
    so 1024, a shell's usual soft limit, runs out near 50 containers in use and warm."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(config_path: str | None = None, socket_path: str | None = None,
         http: str | None = None, redis: str | None = None, workers: int | None = None) -> int:
    try:
        cfg = load(config_path, socket=socket_path, http=http, redis=redis, workers=workers)
    except ConfigError as e:
        sys.stderr.write(f"sandboxd: {e}\n")
        return 2
    setup_logging(cfg.log_level)
    _raise_open_files()
    if os.geteuid() != 0:  # rootless (docs/rootless.md): say what this costs, then serve
        event("rootless", logging.WARNING, uid=os.geteuid(),
              costs="one host uid for every container (the daemon's), the job keeps the "
                    "user's supplementary groups, no pool priority, no egress")
    try:
        profiles = load_dir(cfg.profiles_dir or None)
    except ProfileError as e:
        sys.stderr.write(f"sandboxd: {e}\n")
        return 2
    try:
        os.makedirs(cfg.state_dir, mode=0o755, exist_ok=True)
        if not os.access(cfg.state_dir, os.W_OK | os.X_OK):
            # There already, but not ours: e.g. root's /run/sandboxd, for an ordinary user.
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:  # e.g. the default /run/sandboxd, as an ordinary user
        sys.stderr.write(f"sandboxd: cannot create the state directory {cfg.state_dir}: "
                         f"{e.strerror} (set state_dir, or SANDBOXD_STATE_DIR)\n")
        return 2
    if cfg.workers > 1:
        return _serve_workers(cfg, profiles)
    with _signals_deferred():
        backend = _open_backend(cfg)
        if backend is None:
            return 1
        try:
            # Each runtime's version, once: here, before trio and before the zygote, never
            # per welcome.
            return _supervise(cfg, backend, profiles, _probe_versions(profiles))
        finally:
            backend.close()
