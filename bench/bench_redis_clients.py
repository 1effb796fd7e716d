"""One Redis command's round trip per client the cluster could use, in one run.

Usage: ``.venv/bin/python bench/bench_redis_clients.py [--n N] [--reps R]``. A real
``redis-server`` on loopback; ``N`` ``PING`` round trips per client, the clients
alternating for ``R`` repetitions, p50 of each: coredis under trio (the node's client
for everything off the job's path), coredis under asyncio, redis-py's asyncio client with
hiredis (the submitter's bridge thread, sandboxd_client/_cluster.py) and the node's lean
trio connection (sandboxd/front/_resp.py, its job-path commands). docs/cluster.md,
"Speed", says why this cost matters: a cluster job has four such commands in series.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import trio

from sandboxd.front._resp import open_lean
from sandboxd_testing.redis_server import RedisServer


async def _loop(ping: Callable[[], Awaitable[object]], n: int) -> list[float]:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        await ping()
        ts.append(time.perf_counter() - t)
    return ts


async def _coredis(url: str, n: int) -> list[float]:
    import coredis
    async with coredis.Redis.from_url(url) as r:
        return await _loop(r.ping, n)


async def _redispy(url: str, n: int) -> list[float]:
    import redis.asyncio
    async with redis.asyncio.Redis.from_url(url) as r:
        return await _loop(r.ping, n)


async def _lean(url: str, n: int) -> list[float]:
    lean = open_lean(url)
    assert lean is not None
    try:
        return await _loop(lambda: lean.execute("PING"), n)
    finally:
        await lean.aclose()


CLIENTS: dict[str, Callable[[str, int], list[float]]] = {
    "coredis (trio)": lambda url, n: trio.run(_coredis, url, n),
    "coredis (asyncio)": lambda url, n: anyio.run(_coredis, url, n),
    "redis-py + hiredis (asyncio)": lambda url, n: asyncio.run(_redispy(url, n)),
    "lean trio + hiredis": lambda url, n: trio.run(_lean, url, n),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    redis = RedisServer(Path(tempfile.mkdtemp(prefix="sandboxd-bench-redis-clients-"))).start()
    try:
        p50: dict[str, list[float]] = {k: [] for k in CLIENTS}
        for rep in range(a.reps):
            for name in (list(CLIENTS) if rep % 2 == 0 else list(CLIENTS)[::-1]):
                p50[name].append(statistics.median(CLIENTS[name](redis.url, a.n)))
        for name, v in p50.items():
            print(f"{name:30s} PING p50 {statistics.median(v) * 1000:.3f} ms  "
                  f"(per repetition: {', '.join(f'{x * 1000:.3f}' for x in v)})")
        return 0
    finally:
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
