"""``sandboxd gateway``: the HTTP front door over a cluster, running no job here.

Strategy: as ``sandboxd serve`` (``daemon.py``) builds the job service and
opens the front doors over it, this builds a ``ClusterService``
(``sandboxd.front._cluster_service``: the service's shape, every job
forwarded to the cluster's Redis queue) and opens the HTTP front door over
it. No cgroups, no zygote, no root: a gateway runs nothing itself, so N
gateways and M nodes scale apart. docs/cluster.md has the design.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import cast

import trio
from coredis.exceptions import RedisError

from sandboxd import __version__
from sandboxd.config import Config, ConfigError, load
from sandboxd.front._cluster_service import ClusterService, redacted
from sandboxd.log import event, setup_logging
from sandboxd.profiles import Profile, ProfileError, load_dir
from sandboxd.service import JobService


async def serve(cfg: Config, profiles: dict[str, Profile], *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve HTTP over the cluster until SIGTERM (drain, then stop) or cancellation."""
    from sandboxd.front.http import HttpFront, bind_http

    service = ClusterService(cfg, profiles)
    sock = bind_http(cfg.http, cfg.http_send_timeout)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        # Built once the nodes' announcements are read: Piston's API fixes its runtime
        # list (versions from the nodes) when it is built.
        front = HttpFront(cfg, cast(JobService, service))
        if not service.versions:
            event("gateway_no_nodes", logging.WARNING,
                  note="no node has announced itself yet: jobs wait in the queue; Piston's "
                       "runtimes list no versions until the gateway restarts")
        async with trio.open_nursery() as connections:
            address = await connections.start(front.serve, sock)
            event("ready", role="gateway", http=address, redis=redacted(cfg.redis),
                  version=__version__)
            task_status.started()
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    event("draining", signal=signal.Signals(signum).name,
                          running=service.in_flight, grace=cfg.grace_period)
                    front.stop()
                    await service.drain(cfg.grace_period)
                    with trio.move_on_after(2.0):
                        await front.stopped.wait()
                    break
            connections.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    event("stopped")


def main(config_path: str | None = None, http: str | None = None,
         redis: str | None = None) -> int:
    try:
        cfg = load(config_path, http=http, redis=redis)
    except ConfigError as e:
        sys.stderr.write(f"sandboxd gateway: {e}\n")
        return 2
    if not cfg.redis or not cfg.http:
        sys.stderr.write("sandboxd gateway: needs --redis URL and --http HOST:PORT (or "
                         "`redis` and `http` in the configuration)\n")
        return 2
    setup_logging(cfg.log_level)
    try:
        profiles = load_dir(cfg.profiles_dir or None)
    except ProfileError as e:
        sys.stderr.write(f"sandboxd gateway: {e}\n")
        return 2
    try:
        trio.run(serve, cfg, profiles)
    except (OSError, RedisError, BaseExceptionGroup) as e:
        leaf = _leaf(e)
        if not isinstance(leaf, (OSError, RedisError)):
            raise
        sys.stderr.write(f"sandboxd gateway: cannot reach Redis at {redacted(cfg.redis)}: "
                         f"{leaf}\n")
        return 1
    return 0


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
