"""The daemon, side by side with bare fork+exec and bubblewrap, in one run.

Usage: ``.venv/bin/python bench/bench_daemon.py [--rounds N] [--seconds S] [--json FILE]``

- Latency: one client sends one job at a time (``/bin/true`` and
  ``python3 -c pass``), from sending the job to holding the result, with a
  warm pool; interleaved round by round with bare ``posix_spawn`` + wait of the
  same command and with bubblewrap (``--unshare-all``, read-only /usr, new
  /proc, /dev, tmpfs /tmp), so that the machine's noise hits all three alike.
- Throughput: closed loops of 1, 2, 8 and 32 concurrent clients for S seconds,
  each client on its own connection, against the same number of concurrent
  bubblewrap loops.
- Costs: unique memory (USS, from smaps_rollup) of each waiting container's
  processes, and CPU time the supervisor (and, apart, the zygote) spends per job.

Every sandboxd job here is fully isolated and single use: new namespaces,
its own cgroup with limits, seccomp, Landlock, no capabilities, own uid.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    BWRAP,
    COMMANDS,
    Client,
    container_pids,
    cpu_seconds,
    makers,
    pct,
    spawn_wait,
    start_daemon,
    throughput,
    uss,
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", default="1,2,8,32")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-"))
    ncpu = os.cpu_count() or 1
    daemon = start_daemon(tmp, pool_size=4, concurrency=ncpu)
    out: dict[str, object] = {"machine": {"cpus": ncpu, "kernel": os.uname().release}}
    try:
        client = Client(daemon.socket)
        for _ in range(20):
            client.run_command(["/bin/true"])
        lat: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, argv in COMMANDS.items():
                lat.setdefault(f"bare {name}", []).append(spawn_wait(argv))
                lat.setdefault(f"bwrap {name}", []).append(spawn_wait(BWRAP + argv))
                t = time.perf_counter()
                client.run_command(argv)
                lat.setdefault(f"sandboxd-warm {name}", []).append(time.perf_counter() - t)
                time.sleep(0.005)  # let the pool refill between jobs, as it would between users
        print(f"{'latency':24} {'p50 ms':>8} {'p90':>7} {'p99':>7} {'max':>7} {'vs bare':>8} "
              f"{'vs bwrap':>9}")
        summary = {}
        for key, v in lat.items():
            cmd = key.rsplit(" ", 1)[1]
            p50 = statistics.median(v) * 1000
            bare = statistics.median(lat[f"bare {cmd}"]) * 1000
            bw = statistics.median(lat[f"bwrap {cmd}"]) * 1000
            summary[key] = {"p50": p50, "p90": pct(v, .9) * 1000, "p99": pct(v, .99) * 1000,
                            "max": max(v) * 1000}
            print(f"{key:24} {p50:8.2f} {pct(v, .9) * 1000:7.2f} {pct(v, .99) * 1000:7.2f} "
                  f"{max(v) * 1000:7.2f} {p50 / bare:8.2f} {p50 / bw:9.2f}")
        out["latency_ms"] = summary
        out["latency_samples_s"] = lat

        # Costs: USS of waiting containers; supervisor and zygote CPU per job.
        time.sleep(1.0)
        zyg = makers(daemon.pid)
        boxes = container_pids(zyg)
        per_box = [sum(uss(p) for p in pids) for pids in boxes.values() if len(pids) == 2]
        n = 300
        s0, z0 = cpu_seconds(daemon.pid), sum(cpu_seconds(z) for z in zyg)
        for _ in range(n):
            client.run_command(["/bin/true"])
        s1, z1 = cpu_seconds(daemon.pid), sum(cpu_seconds(z) for z in zyg)
        out["costs"] = {"uss_per_warm_container_bytes": per_box,
                        "supervisor_cpu_per_job_ms": (s1 - s0) / n * 1000,
                        "zygote_cpu_per_job_ms": (z1 - z0) / n * 1000}
        print(f"USS per warm container: median {statistics.median(per_box) / 1024:.0f} KiB "
              f"({len(per_box)} containers)" if per_box else "USS: no waiting container found")
        print(f"supervisor CPU per job: {(s1 - s0) / n * 1000:.2f} ms; "
              f"zygote (container making): {(z1 - z0) / n * 1000:.2f} ms")

        tput = {}
        print(f"{'throughput jobs/s':24} {'clients':>7} {'sandboxd':>9} {'bwrap':>7} {'ratio':>6}")
        for c in [int(x) for x in args.concurrency.split(",")]:
            def sbx() -> object:
                cl = Client(daemon.socket)
                return lambda: cl.run_command(["/bin/true"])

            def bw() -> object:
                return lambda: spawn_wait([*BWRAP, "/bin/true"])

            a = throughput(sbx, c, args.seconds)
            b = throughput(bw, c, args.seconds)
            tput[c] = {"sandboxd": a, "bwrap": b}
            print(f"{'/bin/true':24} {c:7} {a:9.1f} {b:7.1f} {a / b:6.2f}")
        out["throughput_jobs_s"] = tput
    finally:
        daemon.stop(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
