"""Jobs/s of ``/bin/true`` with ``workers = 1`` against ``workers = 2``, on 1 CPU and on 2.

Usage: ``.venv/bin/python bench/bench_workers.py [--rounds N] [--jobs N] [--clients 8]
[--workers 1,2] [--cpus 0,0-1] [--json FILE]``

The scaling figures of issue 16 ("no single thread or process of sandboxd may
bound throughput"): for each cpuset (the daemon and all it makes restricted to
those CPUs, a v1 cpuset beneath this process's) and each worker count, one
daemon is started (``concurrency`` = the machine's CPUs, the same total for
every worker count; ``pool_size`` 4 per worker), warmed, and ``--jobs`` jobs are
sent by ``--clients`` closed loops (threads of this process, outside the
cpuset). Measured, in a v1 cpuacct cgroup around the daemon:

- the rate;
- the supervisors' CPU per job (every worker's /proc stat, all threads; with one
  worker, the daemon process) and the parent's (with workers: it only waits);
- the busiest supervisor's share of a core (its CPU seconds over the wall time):
  near 1.0, that one thread is the bound;
- all of sandboxd's CPU per job (the cgroup: supervisors, makers, containers).

Configurations are run in an order that rotates round by round, so that a
shared machine's noise hits all alike; the figures to quote are the ratios of
the same round (workers = 1 on the same cpuset is the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def child(workers: int, cpus: str, jobs: int, clients: int) -> dict[str, float]:
    """One measurement, in a fresh interpreter; prints one JSON line."""
    sys.path.insert(0, str(HERE / "bench"))
    sys.path.insert(0, str(HERE))
    import _common
    from suite import cpuacct_dir


    acct_root = cpuacct_dir()
    if acct_root is None:
        raise SystemExit("bench_workers: needs the v1 cpuacct hierarchy")
    name = f"sandboxd-bench-wk-{os.getpid()}"
    acct = f"{acct_root}/{name}"
    os.mkdir(acct)
    cpuset = _common.make_cpuset(name, cpus)
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-wk-"))
    daemon = None
    try:
        ncpu = os.cpu_count() or 1
        daemon = _common.Daemon(tmp, (), instance=f"bench-wk-{os.getpid()}", pool_size=4,
                                pool_profiles=["bash"], concurrency=max(ncpu, workers),
                                queue_length=256, log_level="warning", workers=workers)
        _common.start_in(daemon, acct, cpuset)
        assert daemon.proc is not None
        pid = daemon.proc.pid
        # Warm every worker: enough connections that each lands on all of them.
        warm = [_common.Client(daemon.socket) for _ in range(4 * workers)]
        for _ in range(10):
            for c in warm:
                c.run_command(["/bin/true"])
        for c in warm:
            c.close()
        time.sleep(0.5)
        sups = [pid] if workers == 1 else _common.children(pid)
        assert len(sups) == workers, sups
        makers = [z for s in sups for z in _common.children(s)]
        makers += [c for z in makers for c in _common.children(z)]
        per = max(1, jobs // clients)
        conns = [_common.Client(daemon.socket) for _ in range(clients)]

        def loop(c: _common.Client) -> None:
            for _ in range(per):
                c.run_command(["/bin/true"])

        s0 = [_common.cpu_seconds(s) for s in sups]
        p0 = _common.cpu_seconds(pid) if workers > 1 else 0.0
        z0 = sum(_common.cpu_seconds(z) for z in makers)
        a0 = int(Path(acct, "cpuacct.usage").read_text())
        t0 = time.monotonic()
        _common.side_by_side(loop, conns)
        wall = time.monotonic() - t0
        s_mid = [_common.cpu_seconds(s) for s in sups]
        time.sleep(0.3)  # the last containers' teardown and refills are the jobs' cost too
        s1 = [_common.cpu_seconds(s) for s in sups]
        p1 = _common.cpu_seconds(pid) if workers > 1 else 0.0
        z1 = sum(_common.cpu_seconds(z) for z in makers)
        a1 = int(Path(acct, "cpuacct.usage").read_text())
        n = per * clients
        st = daemon.stats()
        per_worker = [st.counters.get(f"w{k}_jobs_completed", 0) for k in range(workers)]
        return {"jobs": n, "rate": n / wall,
                "supervisor_ms": (sum(s1) - sum(s0)) / n * 1e3,
                "parent_ms": (p1 - p0) / n * 1e3,
                "makers_ms": (z1 - z0) / n * 1e3, "all_ms": (a1 - a0) / n / 1e6,
                "busiest_share": max(b - a for a, b in zip(s0, s_mid, strict=True)) / wall,
                "supervisors_share": (sum(s_mid) - sum(s0)) / wall,
                "least_worker_fraction": (min(per_worker) / max(1, sum(per_worker))
                                          if workers > 1 else 1.0)}
    finally:
        if daemon is not None:
            daemon.stop(timeout=60)
        from _peers import rmdir_cgroup
        for d in (acct, cpuset):
            rmdir_cgroup(d, time.monotonic() + 10)
        shutil.rmtree(tmp, ignore_errors=True)  # the daemon's state and log


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1600)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--cpus", default="0,0-1", help="cpusets to compare, comma-separated "
                    "(a range is one cpuset: 0-1)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        workers, cpus = args.child.split(":", 1)
        print(json.dumps(child(int(workers), cpus, args.jobs, args.clients)))
        return 0
    configs = [(w, c) for c in args.cpus.split(",") for w in map(int, args.workers.split(","))]
    res: dict[tuple[int, str], list[dict[str, float]]] = {k: [] for k in configs}
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
          flush=True)
    for r in range(args.rounds):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for w, c in order:
            cmd = [sys.executable, __file__, "--child", f"{w}:{c}", "--jobs", str(args.jobs),
                   "--clients", str(args.clients)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            res[(w, c)].append(m)
            print(f"round {r} workers {w} cpus {c:4}: {m['rate']:7.1f} jobs/s, supervisors "
                  f"{m['supervisor_ms']:.3f} ms/job, parent {m['parent_ms']:.3f}, makers "
                  f"{m['makers_ms']:.3f}, all {m['all_ms']:.3f}; busiest supervisor "
                  f"{m['busiest_share']:.2f} of a core, all supervisors "
                  f"{m['supervisors_share']:.2f}; least worker's jobs "
                  f"{m['least_worker_fraction']:.2f} (load {os.getloadavg()[0]:.1f})",
                  flush=True)
    print("medians (ratio: against workers 1 on the same cpus, median of per-round ratios):")
    for w, c in configs:
        ms = res[(w, c)]
        med = {k: statistics.median(m[k] for m in ms) for k in ms[0]}
        base = res.get((1, c))
        ratio = (statistics.median(a["rate"] / b["rate"] for a, b in zip(ms, base, strict=True))
                 if base else float("nan"))
        print(f"  workers {w} cpus {c:4}: {med['rate']:7.1f} jobs/s (x{ratio:.2f}), "
              f"supervisors {med['supervisor_ms']:.3f} ms/job, all {med['all_ms']:.3f} ms/job, "
              f"busiest supervisor {med['busiest_share']:.2f} of a core")
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{w}:{c}": v for (w, c), v in res.items()},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
