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
import grp
import logging
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import trio

from sandboxd import cgroups, zygote
from sandboxd.cgroups import CgroupBackend
from sandboxd.config import Config, ConfigError, egress_policy, load
from sandboxd.front.msgpack_api import MsgpackFront
from sandboxd.log import event, setup_logging
from sandboxd.pool import Pool
from sandboxd.profiles import Profile, ProfileError, load_dir
from sandboxd.result import SandboxError
from sandboxd.service import JobService


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
                task_status: trio.TaskStatus[JobService] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until SIGTERM (drain, then stop) or cancellation.

    Cancellation: every job is cancelled (its containers killed and removed),
    the pool is emptied, the zygote stopped and the socket file removed.
    """
    zclient = zygote.ZygoteClient(zproc)
    pool = Pool(zclient, backend, cfg.pool_size)
    service = JobService(profiles, pool, concurrency=cfg.concurrency,
                         queue_length=cfg.queue_length, versions=versions,
                         caches=dict(cfg.caches), workspace_max_files=cfg.workspace_max_files,
                         artifacts_max_files=cfg.artifacts_max_files,
                         artifacts_max_bytes=cfg.artifacts_max_bytes,
                         egress=egress_policy(cfg))
    front = MsgpackFront(cfg, service)
    http_front = http_sock = None
    if cfg.http:  # imported only when asked: hypercorn and starlette cost start-up time
        from sandboxd.front.http import HttpFront, bind_http

        http_front = HttpFront(cfg, service)
        http_sock = bind_http(cfg.http, cfg.http_send_timeout)
    unix_sock = _bind_unix(cfg.socket, cfg.socket_mode, cfg.socket_group)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run, list(cfg.pool_profiles))
            if cfg.redis:  # a node of a cluster too (coredis: the `cluster` extra)
                from sandboxd.front.redis_queue import RedisNode
                await nursery.start(RedisNode(cfg, service).run)
            async with trio.open_nursery() as connections:
                accepting = trio.CancelScope()
                listeners: list[trio.abc.Listener[Any]] = [
                    trio.SocketListener(trio.socket.from_stdlib_socket(unix_sock))]
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
                http_address = "off"
                if http_front is not None:
                    http_address = await connections.start(http_front.serve, http_sock)
                event("ready", socket=cfg.socket, tcp=cfg.tcp or "off", http=http_address,
                      concurrency=cfg.concurrency, pool_size=cfg.pool_size,
                      cgroup_version=backend.version, profiles=len(profiles))
                task_status.started(service)
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        event("draining", signal=signal.Signals(signum).name,
                              running=service.in_flight, grace=cfg.grace_period)
                        accepting.cancel()  # no new connections; open ones may finish
                        if http_front is not None:
                            http_front.stop()
                        await service.drain(cfg.grace_period)
                        if http_front is not None:  # the last answers on their way
                            with trio.move_on_after(2.0):
                                await http_front.stopped.wait()
                        break
                connections.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await zclient.aclose()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cfg.socket)
        event("stopped")


def main(config_path: str | None = None, socket_path: str | None = None,
         http: str | None = None, redis: str | None = None) -> int:
    try:
        cfg = load(config_path, socket=socket_path, http=http, redis=redis)
    except ConfigError as e:
        sys.stderr.write(f"sandboxd: {e}\n")
        return 2
    setup_logging(cfg.log_level)
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
    except OSError as e:  # e.g. the default /run/sandboxd, as an ordinary user
        sys.stderr.write(f"sandboxd: cannot create the state directory {cfg.state_dir}: "
                         f"{e.strerror} (set state_dir, or SANDBOXD_STATE_DIR)\n")
        return 2
    try:
        backend = cgroups.open_backend(cfg.instance)
    except Exception as e:
        sys.stderr.write(f"sandboxd: cannot set up cgroups: {e}\n"
                         "Run `sandboxd check-environment` for what is missing.\n")
        return 1
    try:
        for problem in backend.problems():
            event("environment", logging.WARNING, problem=problem)
        stale = backend.remove_stale()
        if stale:
            event("removed_stale", cgroups=len(stale))
        policies = tuple(sorted({p.seccomp for p in profiles.values()} | {"default"}))
        # Each runtime's version, once: here, before trio and before the zygote, never
        # per welcome. A subprocess each, side by side: the JVM ones (java, kotlin's
        # compiler) take 0.2-2 s alone and more on a loaded host.
        with ThreadPoolExecutor(max_workers=8) as probes:
            versions = dict(zip(profiles, probes.map(Profile.version, profiles.values()),
                                strict=True))
        zproc = zygote.start(policies)
        try:
            trio.run(serve, cfg, zproc, backend, profiles, versions)
        except SandboxError as e:
            sys.stderr.write(f"sandboxd: {e.reason}\n")
            return 1
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(zproc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(zproc.pid, 0)
    finally:
        backend.close()
    return 0
