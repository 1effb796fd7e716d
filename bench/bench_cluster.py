"""The cluster path against the local socket: the same node, the same job, one run.

Usage (as root): ``.venv/bin/python bench/bench_cluster.py [--rounds N] [--seconds S]
[--json FILE] [--quick]``; ``bench/suite.py`` runs the same measurement (``measure``)
as part of ``bench/run`` and reports it (docs/benchmarks.md, docs/cluster.md).

A real ``redis-server`` on a loopback port (append-only file on, as
docs/cluster.md deploys it) and up to two nodes (``sandboxd serve`` with
``redis = URL``, warm ``bash`` pools) on this machine. The job is a trivial
one (``echo hello`` in the ``bash`` profile), submitted with the client
library (``sandboxd_client.Client``) both ways, so the difference is the path
alone:

- ``local``: ``Client(<node 1's socket>)``, the daemon's own socket;
- ``cluster``: ``Client("redis://...")``: client -> Redis -> node -> Redis -> client.

Latency: every round runs both once, in alternating order, each sample with
the node idle (pool refilled, container destroyed). Throughput: closed loops
of 1, 8 and 32 clients for a window each: local, cluster with node 1 alone,
then (node 2 started) cluster with both nodes and local again, windows
interleaved within each phase. Redis's CPU per job: its own ``INFO cpu``
(getrusage, microseconds) before and after the cluster windows, over the
jobs they ran; the window's clients connect before it starts (a client's
connection is not a job's cost), and the figure with their connecting
counted in is kept too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import pct, throughput

from sandboxd_client import Client
from sandboxd_testing.redis_server import RedisServer

PATHS = ("local", "cluster")
TPUT = ("local", "cluster-1-node", "cluster-2-nodes")
JOB = {"main.sh": "echo hello\n"}
NODE_CONFIG = {"redis_claim_idle": 30.0}


def _runner(address: str, opened: list[Client], counter: list[int] | None = None,
            lock: threading.Lock | None = None) -> Callable[[], None]:
    """A client of its own (kept in ``opened``) and the call that runs the job once."""
    client = Client(address, timeout=120)
    opened.append(client)

    def one() -> None:
        r = client.run("bash", JOB)
        if r.verdict != "ok" or r.text != "hello\n":
            raise RuntimeError(f"unexpected answer: {r.verdict} {r.text!r}")
        if counter is not None and lock is not None:
            with lock:
                counter[0] += 1
    return one


def _close(opened: list[Client]) -> None:
    for c in opened:
        c.close()
    opened.clear()


def measure(tmp: Path, make_node: Callable[[str], Any], *, rounds: int, warmup: int,
            seconds: float, reps: int, concurrency: tuple[int, ...],
            log: Callable[[str], None] = lambda _m: None,
            redis_alone_on: int | None = None) -> dict[str, Any]:
    """Latency of both paths, throughput of local, one node and two nodes, Redis CPU per job.

    ``make_node(url)``: starts a node (the suite's ``Daemon`` wrapper, with ``settle``
    and ``close``) fed from ``url``. Every sample is kept: ``summary`` derives the figures.
    ``redis_alone_on``: Redis alone on that CPU, this process (and so the nodes and clients it
    starts) on the others, as a deployment with Redis on a host of its own has it: on
    shared cores each of Redis's wake-ups starts with caches the jobs left cold.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(tmp).start()
    if redis_alone_on is not None:
        others = os.sched_getaffinity(0) - {redis_alone_on}
        if not others:
            raise SystemExit(f"--redis-cpu {redis_alone_on}: no CPU left for the nodes")
        os.sched_setaffinity(redis.pid, {redis_alone_on})
        os.sched_setaffinity(0, others)
    nodes: list[Any] = []
    opened: list[Client] = []
    try:
        nodes.append(make_node(redis.url))
        first = nodes[0]
        addresses = {"local": first.daemon.socket, "cluster": redis.url}
        runs = {p: _runner(a, opened) for p, a in addresses.items()}
        for one in runs.values():  # a path that cannot run its job fails the run at once
            one()
            first.settle()
        log(f"cluster: latency, {rounds} rounds")
        lat: dict[str, list[float]] = {p: [] for p in PATHS}
        for r in range(warmup + rounds):
            for p in (PATHS if r % 2 == 0 else PATHS[::-1]):
                t = time.perf_counter()
                runs[p]()
                dt = time.perf_counter() - t
                first.settle()
                if r >= warmup:
                    lat[p].append(dt)
        _close(opened)
        tput: dict[str, dict[str, list[float]]] = {k: {} for k in TPUT}
        redis_cpu: dict[str, list[float]] = {}
        redis_cpu_connecting: dict[str, list[float]] = {}

        def window(name: str, address: str, conc: int) -> None:
            count, lock = [0], threading.Lock()
            cpu0 = redis.cpu_seconds()
            # The clients connect before the window (a client's connection and hello are
            # not a job's cost: 3-s windows of fresh clients would count them per job).
            ready = [_runner(address, opened, count, lock) for _ in range(conc)]
            cpu1 = redis.cpu_seconds()
            rate = throughput(ready.pop, conc, seconds)
            cpu2 = redis.cpu_seconds()
            _close(opened)
            for n in nodes:
                n.settle()
            tput[name].setdefault(str(conc), []).append(rate)
            if name != "local" and count[0]:
                redis_cpu.setdefault(name, []).append((cpu2 - cpu1) / count[0])
                redis_cpu_connecting.setdefault(name, []).append((cpu2 - cpu0) / count[0])

        log(f"cluster: throughput with one node at {concurrency} clients")
        for _rep in range(reps):
            for conc in concurrency:
                for name in (("local", "cluster-1-node") if _rep % 2 == 0
                             else ("cluster-1-node", "local")):
                    window(name, addresses["local" if name == "local" else "cluster"], conc)
        nodes.append(make_node(redis.url))
        log(f"cluster: throughput with two nodes at {concurrency} clients")
        for _rep in range(reps):
            for conc in concurrency:
                window("cluster-2-nodes", redis.url, conc)
        return {"latency_s": lat, "throughput_jobs_s": tput,
                "redis_cpu_per_job_s": redis_cpu,
                "redis_cpu_per_job_with_connecting_s": redis_cpu_connecting,
                "redis_version": redis.info("server").get("redis_version", "?"),
                "redis_alone_on": redis_alone_on}
    finally:
        _close(opened)
        for n in nodes:
            n.close()
        redis.stop()


# ------------------------------------------------------------------ figures


def summary(c: dict[str, Any]) -> dict[str, Any]:
    """p50/p90/p99 (ms) per path and the cluster's excess at p50; throughput medians and
    their ratio to local's; Redis CPU per job (ms, median over the windows)."""
    lat = {}
    for p, v in c["latency_s"].items():
        if v:
            lat[p] = {"p50": statistics.median(v) * 1000, "p90": pct(v, .9) * 1000,
                      "p99": pct(v, .99) * 1000, "n": len(v)}
    over = (lat["cluster"]["p50"] - lat["local"]["p50"]
            if "cluster" in lat and "local" in lat else None)
    tput: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, per_c in c["throughput_jobs_s"].items():
        for conc, v in per_c.items():
            base = c["throughput_jobs_s"].get("local", {}).get(conc)
            med = statistics.median(v)
            ref = statistics.median(base) if base else None
            tput.setdefault(name, {})[conc] = {"jobs_s": med,
                                               "vs_local": med / ref if ref else None}
    cpu = {k: statistics.median(v) * 1000 for k, v in c["redis_cpu_per_job_s"].items() if v}
    connecting = {k: statistics.median(v) * 1000 for k, v in
                  c.get("redis_cpu_per_job_with_connecting_s", {}).items() if v}
    return {"latency_ms": lat, "cluster_over_local_p50_ms": over, "throughput": tput,
            "redis_cpu_per_job_ms": cpu, "redis_cpu_per_job_with_connecting_ms": connecting}


def targets(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15's: the cluster path adds at most 2 ms at p50; Redis under 0.2 ms of CPU
    per job."""
    rows = []
    over = s["cluster_over_local_p50_ms"]
    if over is not None:
        lat = s["latency_ms"]
        rows.append({"target": "cluster path at most 2 ms over the local socket at p50",
                     "figure": f"{lat['cluster']['p50']:.2f} ms vs {lat['local']['p50']:.2f} ms "
                               f"({over:+.2f} ms)",
                     "met": over <= 2.0, "margin": f"{2.0 - over:+.2f} ms"})
    cpu = s["redis_cpu_per_job_ms"]
    if cpu:
        worst = max(cpu.values())
        rows.append({"target": "Redis CPU per cluster job < 0.2 ms",
                     "figure": ", ".join(f"{k}: {v:.3f} ms" for k, v in sorted(cpu.items())),
                     "met": worst < 0.2, "margin": f"{0.2 - worst:+.3f} ms"})
    return rows


def markdown(c: dict[str, Any], s: dict[str, Any], seconds: float, reps: int) -> list[str]:
    """The report's section: latency per path, throughput per concurrency, Redis's CPU."""
    lines = ["## The cluster path against the local socket", "",
             f"redis-server {c.get('redis_version', '?')} on loopback (append-only file on"
             + (f"; alone on CPU {c['redis_alone_on']}, the nodes and clients on the others"
                if c.get("redis_alone_on") is not None else "") + "); "
             "nodes are `sandboxd serve --redis` with warm `bash` pools; the job is `echo hello`"
             " (bash) through `sandboxd_client.Client`, to node 1's socket (local) or to the "
             "`redis://` URL (cluster); both once per round, alternating, each sample with the "
             "node idle.", "",
             "| path | p50 ms | p90 | p99 | n | p50 over local |", "|---|---|---|---|---|---|"]
    for p, st in s["latency_ms"].items():
        over = s["cluster_over_local_p50_ms"]
        gap = "-" if p == "local" or over is None else f"{over:+.2f} ms"
        lines.append(f"| {p} | {st['p50']:.2f} | {st['p90']:.2f} | {st['p99']:.2f} | "
                     f"{int(st['n'])} | {gap} |")
    conc = sorted({k for per in s["throughput"].values() for k in per}, key=int)
    lines += ["", f"Throughput (jobs/s, median of {reps} windows of {seconds:g} s; in brackets "
              "the ratio to local's):", "",
              "| path | " + " | ".join(f"{k} client{'s' if k != '1' else ''}" for k in conc)
              + " |", "|---|" + "---|" * len(conc)]
    for name in TPUT:
        per = s["throughput"].get(name, {})
        cells = []
        for k in conc:
            t = per.get(k)
            cells.append("-" if t is None else f"{t['jobs_s']:.1f}" + (
                f" ({t['vs_local']:.2f}x)" if name != "local" and t["vs_local"] else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if s["redis_cpu_per_job_ms"]:
        lines += ["", "Redis CPU per job (its `INFO cpu` over the throughput windows, the "
                  "clients connected beforehand): "
                  + ", ".join(f"{k} {v:.3f} ms" for k, v in
                              sorted(s["redis_cpu_per_job_ms"].items()))
                  + "; with the clients' connecting and hello counted in: "
                  + ", ".join(f"{k} {v:.3f} ms" for k, v in
                              sorted(s.get("redis_cpu_per_job_with_connecting_ms", {}).items()))
                  + "."]
    return [*lines, ""]


# ------------------------------------------------------------------ on its own


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--redis-cpu", type=int, metavar="N",
                    help="Redis alone on CPU N, the nodes and clients on the others")
    a = ap.parse_args()
    from suite import Daemon  # the suite's wrapper (settle, stats); suite imports us too

    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-cluster-"))
    made = [0]

    def make_node(url: str) -> Any:
        made[0] += 1
        return Daemon(tmp, f"node{made[0]}", 4, redis=url, node_id=f"bench-node{made[0]}",
                      **NODE_CONFIG)

    seconds = 0.5 if a.quick else a.seconds
    reps = 1 if a.quick else a.reps
    try:
        out = measure(tmp, make_node, rounds=5 if a.quick else a.rounds,
                      warmup=1 if a.quick else 5, seconds=seconds, reps=reps,
                      concurrency=(1, 8) if a.quick else (1, 8, 32),
                      log=lambda m: print(m, file=sys.stderr, flush=True),
                      redis_alone_on=a.redis_cpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    s = summary(out)
    print("\n".join(markdown(out, s, seconds, reps)))
    for t in targets(s):
        print(f"{'met ' if t['met'] else 'MISS'} {t['target']}: {t['figure']}")
    if a.json:
        Path(a.json).write_text(json.dumps({**out, "summary": s}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
