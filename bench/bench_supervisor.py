"""Supervisor CPU per job, this tree against other trees of sandboxd, interleaved in one run.

Usage: ``.venv/bin/python bench/bench_supervisor.py [--tree NAME=PATH ...] [--rounds N]
[--jobs N] [--clients 1,8] [--seconds S] [--cpus LIST] [--json FILE]``

Each round starts one daemon per tree (each tree's own ``sandboxd`` and native
binary: the daemon runs with the tree as its working directory), in turn,
and for each measures, in a v1 cpuacct cgroup of its own (beneath this
process's, ``sandboxd`` in the name) so that kernel work done for it counts:

- the supervisor's CPU per ``/bin/true`` job (its /proc stat: all its threads),
  the container makers' (zygote and native fork server) and the whole daemon's
  (the cgroup: supervisor, makers, every container's init and job process),
  over ``--jobs`` jobs sent by ``--clients`` closed loops;
- the rate those loops reached.

``--cpus`` restricts each daemon (and all it makes) to those CPUs with a
cpuset (e.g. ``0`` for one CPU), for the scaling figures of docs/benchmarks.md.
Trees are run in an order that rotates round by round, so that a shared
machine's noise hits all of them alike; the figures to quote are the ratios
of the same round.
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


def child(tree: Path, jobs: int, clients: int, cpus: str | None) -> dict[str, float]:
    """Run in a fresh interpreter whose ``sandboxd`` is ``tree``'s; prints one JSON line."""
    sys.path.insert(0, str(HERE / "bench"))
    sys.path.insert(0, str(tree))
    os.chdir(tree)
    import _common
    from suite import cpuacct_dir

    acct_root = cpuacct_dir()
    if acct_root is None:
        raise SystemExit("bench_supervisor: needs the v1 cpuacct hierarchy")
    acct = f"{acct_root}/sandboxd-bench-sup-{os.getpid()}"
    os.mkdir(acct)
    cpuset = None
    if cpus is not None:
        cpuset = _common.make_cpuset(f"sandboxd-bench-sup-{os.getpid()}", cpus)
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-sup-"))
    daemon = None
    try:
        # The daemon enters both cgroups before it makes anything (start(cgroup=) writes
        # one directory's cgroup.procs; a shell writes the second).
        daemon = _common.Daemon(tmp, (), instance=f"bench-sup-{os.getpid()}", pool_size=4,
                                pool_profiles=["bash"], concurrency=os.cpu_count() or 1,
                                queue_length=256, log_level="warning")
        _common.start_in(daemon, acct, cpuset)
        pid = daemon.proc.pid
        warm = _common.Client(daemon.socket)
        for _ in range(30):
            warm.run_command(["/bin/true"])
        time.sleep(0.5)
        makers = _common.makers(pid)
        per = max(1, jobs // clients)
        conns = [_common.Client(daemon.socket) for _ in range(clients)]

        def loop(c: _common.Client) -> None:
            for _ in range(per):
                c.run_command(["/bin/true"])

        s0 = _common.cpu_seconds(pid)
        z0 = sum(_common.cpu_seconds(z) for z in makers)
        a0 = int(Path(acct, "cpuacct.usage").read_text())
        t0 = time.monotonic()
        _common.side_by_side(loop, conns)
        wall = time.monotonic() - t0
        time.sleep(0.3)  # the last containers' teardown and refills are the jobs' cost too
        s1 = _common.cpu_seconds(pid)
        z1 = sum(_common.cpu_seconds(z) for z in makers)
        a1 = int(Path(acct, "cpuacct.usage").read_text())
        n = per * clients
        return {"jobs": n, "rate": n / wall, "supervisor_ms": (s1 - s0) / n * 1e3,
                "makers_ms": (z1 - z0) / n * 1e3, "all_ms": (a1 - a0) / n / 1e6,
                "supervisor_share": (s1 - s0) / wall}
    finally:
        if daemon is not None:
            daemon.stop(timeout=60)
        from _peers import rmdir_cgroup
        for d in (acct, cpuset):
            if d is not None:
                rmdir_cgroup(d, time.monotonic() + 10)
        shutil.rmtree(tmp, ignore_errors=True)  # the daemon's state and log


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", action="append", default=[],
                    help="NAME=PATH of another sandboxd tree (its native binary built)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=400)
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--cpus", help="cpuset for the daemons, e.g. 0 or 0-1")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        tree, clients = args.child.rsplit(":", 1)
        print(json.dumps(child(Path(tree), args.jobs, int(clients), args.cpus)))
        return 0
    trees = {"this": HERE} | {t.split("=", 1)[0]: Path(t.split("=", 1)[1]).resolve()
                              for t in args.tree}
    names = list(trees)
    res: dict[str, dict[int, list[dict[str, float]]]] = {n: {} for n in names}
    print(f"load {os.getloadavg()[0]:.1f}, cpus {args.cpus or 'all'}", flush=True)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for c in [int(x) for x in args.clients.split(",")]:
            for name in order:
                cmd = [sys.executable, __file__, "--child", f"{trees[name]}:{c}",
                       "--jobs", str(args.jobs)] + (["--cpus", args.cpus] if args.cpus else [])
                out = subprocess.run(cmd, check=True, capture_output=True, text=True)
                m = json.loads(out.stdout.strip().splitlines()[-1])
                res[name].setdefault(c, []).append(m)
                print(f"round {r} {name:8} clients {c:2}: {m['rate']:7.1f} jobs/s, "
                      f"supervisor {m['supervisor_ms']:.3f} ms, makers {m['makers_ms']:.3f} ms,"
                      f" all {m['all_ms']:.3f} ms, supervisor share {m['supervisor_share']:.2f}"
                      f" (load {os.getloadavg()[0]:.1f})", flush=True)
    print("medians:")
    for name in names:
        for c, ms in res[name].items():
            med = {k: statistics.median(m[k] for m in ms) for k in ms[0]}
            print(f"  {name:8} clients {c:2}: {med['rate']:7.1f} jobs/s, supervisor "
                  f"{med['supervisor_ms']:.3f} ms, makers {med['makers_ms']:.3f} ms, all "
                  f"{med['all_ms']:.3f} ms, share {med['supervisor_share']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
