"""Redis's own cost of one cluster job, with no sandbox and no client library around it: its
floor on this machine, per way of sending the job's commands and per append-only setting.

Usage: ``.venv/bin/python bench/bench_cluster_floor.py [--jobs N] [--reps R]``. A real
``redis-server`` on loopback (as ``bench_cluster.py`` starts it) and two raw connections
in this one process playing the submitter and the node with the cluster's real records,
keys and scripts (``sandboxd_protocol.cluster``), one job at a time, so every step wakes
Redis as a lone submitter and an idle node do. Ways (docs/cluster.md, "Speed"):

- ``four-wakeups``: the submit, the node's read re-armed, the answer, the submitter's
  read re-armed: four writes to Redis per job (the code before 2026-12-06 07:00);
- ``two-wakeups``: the submit with the submitter's read, the answer with the node's next
  read (``sandboxd_client``'s job path, ``RedisNode._read_lean``);
- ``eight-per-wakeup``: eight jobs in each write (eight submits, the node's read of eight,
  its eight answers: three wake-ups for eight jobs): what a busy Redis costs per job when wake-ups
  carry several jobs (many submitters, nodes with several jobs ending at once);
- with ``--gap MS``, ``four-`` and ``two-wakeups-gap-MS``: the same with the job "running"
  for MS between its delivery and its answer, as in a real cluster, where whatever else
  runs meanwhile leaves Redis's caches cold;
- ``two-wakeups-no-lua``: two wake-ups without scripts (a bare ``XADD``; ``SET NX``,
  ``XADD``, ``XACK``, ``XDEL`` in ``MULTI``): what the two scripts' Lua costs, not a
  way the cluster may work (no queue limit, a second answer would be posted).

Windows alternate between ways and settings; Redis's CPU (``INFO cpu``) per job is printed
per window and as the median, with its idle CPU per second for reference.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hiredis
from _common import throughput  # noqa: F401  (puts the repository on sys.path)

import sandboxd_protocol as proto
from sandboxd_protocol import cluster
from sandboxd_testing.redis_server import RedisServer

SETTINGS = {"everysec": [("appendonly", "yes"), ("appendfsync", "everysec")],
            "no-aof": [("appendonly", "no")]}


class Conn:
    """A raw connection: write commands, read replies in order."""

    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.r = hiredis.Reader()

    def send(self, *commands: tuple[Any, ...]) -> None:
        self.s.sendall(b"".join(cluster.resp_command(c) for c in commands))

    def reply(self) -> Any:
        while (got := self.r.gets()) is False:
            self.r.feed(self.s.recv(1 << 16))
        if isinstance(got, hiredis.ReplyError):
            raise RuntimeError(str(got))
        return got


def run(redis: RedisServer, way: str, jobs: int, gap: float = 0.0) -> float:
    """Redis's CPU seconds per job over ``jobs`` jobs sent ``way``."""
    submitter = "f" * 32
    reply_key = cluster.reply_key(submitter)
    job = cluster.pack(proto.JobSubmission(id="0" * 32, profile="bash",
                                           files={"main.sh": b"echo hello\n"}))
    answer = b"x" * 420  # about a trivial job's packed JobResult
    conns = [Conn(redis.port) for _ in range(4)]
    client, client_read, node, node_answer = conns
    client.send(("DEL", reply_key))
    client.reply()
    sub_sha = client.send(("SCRIPT", "LOAD", cluster.SUBMIT_SCRIPT)) or client.reply()
    ans_sha = client.send(("SCRIPT", "LOAD", cluster.ANSWER_SCRIPT)) or client.reply()
    read_group = ("XREADGROUP", "GROUP", cluster.GROUP, "floor", "COUNT", 4, "BLOCK", 5000,
                  "STREAMS", cluster.JOBS, ">")
    last = b"0-0"
    run_id = time.monotonic_ns()

    def submit_cmd() -> tuple[Any, ...]:
        if way.endswith("no-lua"):
            return ("XADD", cluster.JOBS, "*", "job", job, "reply", submitter)
        return ("EVALSHA", sub_sha, 1, cluster.JOBS, 10_000, job, submitter)

    def answer_cmds(i: int, entry: bytes) -> list[tuple[Any, ...]]:
        jid = f"floor-{run_id}-{i}"
        if way.endswith("no-lua"):
            return [("MULTI",), ("SET", cluster.result_key(jid), answer, "NX", "EX", 3600),
                    ("XADD", reply_key, "*", "job", jid, "done", "1", "answer", answer),
                    ("XACK", cluster.JOBS, cluster.GROUP, entry),
                    ("XDEL", cluster.JOBS, entry), ("EXEC",)]
        return [("EVALSHA", ans_sha, 3, cluster.result_key(jid), reply_key, cluster.JOBS,
                 answer, 3600, jid, cluster.GROUP, submitter, "1", entry)]

    def xread() -> tuple[Any, ...]:
        return ("XREAD", "COUNT", 256, "BLOCK", 10_000, "STREAMS", reply_key, last)

    batch = 8 if way == "eight-per-wakeup" else 1
    if batch > 1:  # the node reads after the submits, all eight at once
        read_group = (*read_group[:5], batch, *read_group[6:])
    else:
        node.send(read_group)
    if way.startswith("four-wakeups"):
        client_read.send(xread())
    time.sleep(0.05)
    c0 = redis.cpu_seconds()
    for i in range(0, jobs, batch):
        if batch > 1:
            client.send(*[submit_cmd() for _ in range(batch)], xread())
            for _ in range(batch):
                client.reply()
            node.send(read_group)
            got = node.reply()[0][1]
            cmds = [c for k, e in enumerate(got) for c in answer_cmds(i + k, e[0])]
            node.send(*cmds)
            for _ in cmds:
                node.reply()
            seen = 0
            while seen < batch:
                entries = client.reply()[0][1]
                seen += len(entries)
                last = entries[-1][0]
                if seen < batch:
                    client.send(xread())
        elif way.startswith("four-wakeups"):
            client.send(submit_cmd())
            client.reply()
            entry = node.reply()[0][1][0][0]
            node.send(read_group)  # re-armed at once
            time.sleep(gap)  # the job runs
            cmds = answer_cmds(i, entry)
            node_answer.send(*cmds)
            for _ in cmds:
                node_answer.reply()
            last = client_read.reply()[0][1][-1][0]
            client_read.send(xread())
        else:
            client.send(submit_cmd(), xread())
            client.reply()
            entry = node.reply()[0][1][0][0]
            if gap:
                time.sleep(gap)  # the job runs
            cmds = answer_cmds(i, entry)
            node.send(*cmds, read_group)
            for _ in cmds:
                node.reply()
            last = client.reply()[0][1][-1][0]
        if (i + batch) % 64 == 0:
            client.send(("XTRIM", reply_key, "MINID", last))
            client.reply()
    cpu = (redis.cpu_seconds() - c0) / jobs
    for c in conns:
        c.s.close()
    return cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gap", type=float, default=0.0, metavar="MS",
                    help="also: two wake-ups with MS of sleep while the job 'runs' (what "
                    "else runs on the machine meanwhile cools Redis's caches)")
    ap.add_argument("--only-gaps", action="store_true", help="with --gap: only those ways")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-cluster-floor-"))
    redis = RedisServer(tmp).start()
    try:
        admin = Conn(redis.port)
        admin.send(("XGROUP", "CREATE", cluster.JOBS, cluster.GROUP, "0", "MKSTREAM"))
        admin.reply()
        c0 = redis.cpu_seconds()
        time.sleep(3)
        idle = (redis.cpu_seconds() - c0) / 3
        ways: tuple[str, ...] = ("four-wakeups", "two-wakeups", "eight-per-wakeup",
                                 "two-wakeups-no-lua")
        if a.only_gaps:
            ways = ()
        if a.gap:
            ways += (f"four-wakeups-gap-{a.gap:g}ms", f"two-wakeups-gap-{a.gap:g}ms",
                     f"two-wakeups-gap-{a.gap:g}ms-no-lua")
        got: dict[tuple[str, str], list[float]] = {}
        for rep in range(a.reps):
            for setting in (SETTINGS if rep % 2 == 0 else list(SETTINGS)[::-1]):
                for k, v in SETTINGS[setting]:
                    admin.send(("CONFIG", "SET", k, v))
                    admin.reply()
                for way in (ways if rep % 2 == 0 else ways[::-1]):
                    got.setdefault((way, setting), []).append(run(
                        redis, way, a.jobs if "gap" not in way else a.jobs // 4,
                        a.gap / 1000 if "gap" in way else 0.0))
        print(f"Redis CPU per job, one job at a time ({a.jobs} jobs a window; idle: "
              f"{idle * 1000:.2f} ms of CPU per second):")
        for (way, setting), v in got.items():
            print(f"  {way:20s} {setting:9s} {statistics.median(v) * 1e6:6.1f} us  "
                  f"(windows: {', '.join(f'{x * 1e6:.1f}' for x in v)})")
        return 0
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
