"""What one cluster job costs Redis: its commands (``INFO commandstats``) and its CPU, per
append-only setting, in one run.

Usage (as root): ``.venv/bin/python bench/bench_cluster_redis.py [--jobs N] [--clients C]
[--reps R]``. One node (``sandboxd serve --redis``, warm ``bash`` pools) and a real
``redis-server`` on loopback, as ``bench_cluster.py`` starts them; ``C`` client threads run
``N`` trivial jobs (``echo hello``) per window through ``Client("redis://...")``. The
windows alternate between the durability settings an operator chooses from
(docs/cluster.md, "Delivery guarantees"): ``appendfsync everysec`` (the deployed default),
``appendfsync always`` and ``appendonly no`` (switched with ``CONFIG SET`` between
windows), so the CPU figures compare within the run. Prints the commands per job (calls
and microseconds each) and Redis's CPU per job (``INFO cpu``) per setting.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository on sys.path, for sandboxd_testing)

from sandboxd_client import Client
from sandboxd_testing.redis_server import RedisServer

JOB = {"main.sh": "echo hello\n"}
SETTINGS = {
    "everysec": [("appendonly", "yes"), ("appendfsync", "everysec")],
    "always": [("appendonly", "yes"), ("appendfsync", "always")],
    "no-aof": [("appendonly", "no")],
}


def _window(url: str, jobs: int, clients: int) -> None:
    """``jobs`` jobs spread over ``clients`` threads, each with a client of its own."""
    left = [jobs]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def loop() -> None:
        with Client(url, timeout=120) as c:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                try:
                    r = c.run("bash", JOB)
                    if r.verdict != "ok" or r.text != "hello\n":
                        raise RuntimeError(f"unexpected answer: {r.verdict} {r.text!r}")
                except BaseException as e:
                    errors.append(e)
                    return

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _redis(redis: RedisServer, *args: str) -> Any:
    return subprocess.run(["redis-cli", "-p", str(redis.port), *args], check=True,
                          capture_output=True, text=True).stdout


SYSCALLS = ("read", "write", "epoll_wait", "fdatasync", "fsync", "futex", "openat",
            "close", "accept4", "lseek")


def _info(redis: RedisServer, section: str) -> dict[str, str]:
    out = {}
    for line in _redis(redis, "INFO", section).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            out[key] = value
    return out


def _commandstats(redis: RedisServer) -> dict[str, tuple[int, float]]:
    stats = {}
    for line in _redis(redis, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            cmd, _, rest = line.strip().partition(":")
            f = dict(kv.split("=") for kv in rest.split(","))
            stats[cmd[8:]] = (int(f["calls"]), float(f["usec"]))
    return stats


def breakdown(redis: RedisServer, node: Any, jobs: int, clients: int, perf: bool) -> None:
    """Where Redis's CPU goes per job at ``clients`` clients (``appendfsync everysec``):
    user and system CPU, the commands (``INFO commandstats``, script internals included),
    socket reads and writes Redis processed (``INFO stats``) and, with ``perf``, the
    system calls it made (``perf stat`` tracepoints on its pid)."""
    for key, value in SETTINGS["everysec"]:
        _redis(redis, "CONFIG", "SET", key, value)
    _redis(redis, "CONFIG", "RESETSTAT")
    cpu0, st0 = _info(redis, "cpu"), _info(redis, "stats")
    counting = None
    if perf:
        out = Path(tempfile.mkstemp(prefix="sandboxd-bench-perf-")[1])
        counting = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-o", str(out), "-p", str(redis.pid), "-e",
             ",".join(["raw_syscalls:sys_enter"]
                      + [f"syscalls:sys_enter_{s}" for s in SYSCALLS])],
            stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    t0 = time.monotonic()
    _window(redis.url, jobs, clients)
    t1 = time.monotonic()
    if counting is not None:
        counting.send_signal(signal.SIGINT)
        counting.wait()
    cpu1, st1 = _info(redis, "cpu"), _info(redis, "stats")
    stats = _commandstats(redis)
    node.settle()
    print(f"\n{clients} client(s), {jobs} jobs, {jobs / (t1 - t0):.0f} jobs/s, "
          "appendfsync everysec; per job:")
    for part in ("used_cpu_user", "used_cpu_sys"):
        print(f"  {part:26s} {(float(cpu1[part]) - float(cpu0[part])) / jobs * 1e6:7.1f} us")
    for part in ("total_reads_processed", "total_writes_processed", "total_net_input_bytes",
                 "total_net_output_bytes"):
        print(f"  {part:26s} {(int(st1[part]) - int(st0[part])) / jobs:7.2f}")
    for cmd, (calls, usec) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
        print(f"  cmd {cmd:22s} {calls / jobs:5.2f} calls {usec / jobs:6.1f} us "
              f"({usec / max(calls, 1):5.1f} us/call)")
    if counting is not None:
        for line in out.read_text().splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2].startswith(("raw_syscalls", "syscalls")):
                with contextlib.suppress(ValueError):
                    print(f"  {parts[2].split(':')[1]:26s} {int(parts[0]) / jobs:7.2f}")
        out.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--breakdown", metavar="CLIENTS", help="instead: per-job breakdown at "
                    "these client counts (e.g. 1,8), with appendfsync everysec")
    ap.add_argument("--perf", action="store_true", help="with --breakdown: count Redis's "
                    "system calls with perf stat")
    a = ap.parse_args()
    from suite import Daemon

    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-cluster-redis-"))
    redis = RedisServer(tmp).start()
    node = None
    try:
        node = Daemon(tmp, "node1", 4, redis=redis.url, node_id="bench-redis-node1",
                      redis_claim_idle=30.0)
        _window(redis.url, 20, 2)  # warm: the pools, the scripts' cache
        node.settle()
        if a.breakdown:
            for clients in (int(c) for c in a.breakdown.split(",")):
                breakdown(redis, node, a.jobs, clients, a.perf)
            return 0
        # Redis's CPU with the node connected and no job (its cron, the node's heartbeat and
        # blocked reads timing out): a cost per second, not per job, that a low job rate
        # spreads over few jobs.
        c0 = redis.cpu_seconds()
        time.sleep(5.0)
        idle = (redis.cpu_seconds() - c0) / 5.0
        cpu: dict[str, list[float]] = {k: [] for k in SETTINGS}
        rates: list[float] = []
        stats: dict[str, tuple[int, float]] = {}
        for rep in range(a.reps):
            for name in (list(SETTINGS) if rep % 2 == 0 else list(SETTINGS)[::-1]):
                for key, value in SETTINGS[name]:
                    _redis(redis, "CONFIG", "SET", key, value)
                _redis(redis, "CONFIG", "RESETSTAT")
                c0, t0 = redis.cpu_seconds(), time.monotonic()
                _window(redis.url, a.jobs, a.clients)
                c1, t1 = redis.cpu_seconds(), time.monotonic()
                cpu[name].append((c1 - c0) / a.jobs)
                rates.append(a.jobs / (t1 - t0))
                node.settle()
                if name == "everysec" and rep == 0:
                    for line in _redis(redis, "INFO", "commandstats").splitlines():
                        if line.startswith("cmdstat_"):
                            cmd, _, rest = line.partition(":")
                            f = dict(kv.split("=") for kv in rest.split(","))
                            stats[cmd[8:]] = (int(f["calls"]), float(f["usec"]))
        print(f"Commands per job ({a.jobs} jobs, {a.clients} clients, appendfsync everysec):")
        for cmd, (calls, usec) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
            print(f"  {cmd:12s} {calls / a.jobs:5.2f} calls/job  {usec / a.jobs:6.1f} us/job  "
                  f"{usec / max(calls, 1):5.1f} us/call")
        total = sum(u for _c, u in stats.values()) / a.jobs
        print(f"  commands in all: {total:.1f} us/job")
        rate = statistics.median(rates)
        print(f"Redis idle (node connected, no jobs): {idle * 1000:.2f} ms of CPU per second; "
              f"at this run's {rate:.0f} jobs/s that is {idle / rate * 1000:.3f} ms per job")
        print("Redis CPU per job (INFO cpu, median of the windows):")
        for name, v in cpu.items():
            print(f"  {name:9s} {statistics.median(v) * 1000:.3f} ms  "
                  f"(windows: {', '.join(f'{x * 1000:.3f}' for x in v)})")
        return 0
    finally:
        if node is not None:
            node.close()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
