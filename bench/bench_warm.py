"""Warm runtimes (issue 18): a Python or JavaScript snippet through the warm pool, side by
side with the same snippet started bare, under bubblewrap, and on sandboxd started plainly.

Usage (as root): ``.venv/bin/python bench/bench_warm.py [--rounds N] [--seconds S]
[--json FILE]``

- Latency, client to client: one client sends one job (``print("hello")`` as main.py
  for the ``python3`` profile, ``console.log("hello")`` as main.js for ``javascript``)
  and waits for its result; interleaved round by round, in an order that rotates, with
  bare ``python3 -c 'print("hello")'`` (``node -e``), the same under bubblewrap, and the
  same job on sandboxd with ``warm_runtime: false`` (its plain start, from a warm pool of
  plain containers). After each sandboxd job the run waits until the daemon is idle
  again (pool refilled), as a user arriving at an idle service finds it.
- Throughput: closed loops of 1, 8 and 32 clients running Python snippets for S seconds,
  sandboxd (warm) against bubblewrap and sandboxd's plain start.
- Costs: USS of a waiting warm container (init + the waiting interpreter), per runtime;
  the refill rate (warm containers made per second while a pool fills from empty, and
  the mean time to make one); from the USS, how many waiting interpreters 24 GiB holds.
- CPU per Python snippet, split (``--no-costs`` skips it too): a daemon in a v1
  ``cpuacct`` cgroup of its own runs N snippets back to back from one client; per job,
  the supervisor's CPU (its ``/proc`` stat), the zygote's and fork server's, the job's
  own (``cpu_time``: the cgroup's, from the hand-over to the reaping) and the rest of the
  cgroup's: the container that replaces it and the interpreter started in it (the refill,
  and the used container's end). Beside it, bubblewrap's CPU per snippet (its launcher's
  loop, bwrap and python3, in a cgroup of their own), and from both the ceiling of
  throughput on this machine's CPUs (CPUs / CPU per job).

Every sandboxd job here is fully isolated and single use. Ratios matter more than
absolute figures on a shared machine: every system meets the same noise.
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
from collections.abc import Callable
from pathlib import Path

from _common import BWRAP, Client, container_pids, cpu_seconds, makers, pct, spawn_wait, uss
from _peers import rmdir_cgroup
from suite import Daemon, cpuacct_dir

from sandboxd.profiles import load_dir

GiB = 1 << 30
SNIPPET = b"print(sum(i * i for i in range(1000)))\n"
LANGS = {
    # profile: (entry, source, bare argv)
    "python3": ("main.py", b'print("hello")\n', ["/usr/bin/python3", "-c", 'print("hello")']),
    "javascript": ("main.js", b'console.log("hello")\n',
                   [shutil.which("node") or "/usr/bin/node", "-e", 'console.log("hello")']),
}


def job(client: Client, profile: str, files: dict[str, bytes], warm: bool) -> None:
    res = client.job(profile=profile, files=files, warm_runtime=None if warm else False)
    step = res.steps[0]
    if step.verdict != "ok":
        raise RuntimeError(f"{profile}: {step}")


def latency(d: Daemon, profile: str, rounds: int) -> dict[str, list[float]]:
    entry, source, bare = LANGS[profile]
    client = Client(d.daemon.socket)
    systems: dict[str, Callable[[], object]] = {
        "bare": lambda: spawn_wait(bare),
        "bwrap": lambda: spawn_wait([*BWRAP, *bare]),
        "sandboxd warm": lambda: job(client, profile, {entry: source}, True),
        "sandboxd plain": lambda: job(client, profile, {entry: source}, False),
    }
    for fn in systems.values():  # warm-up, and both pools exist
        for _ in range(3):
            fn()
            d.settle()
    samples: dict[str, list[float]] = {name: [] for name in systems}
    names = list(systems)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            systems[name]()
            samples[name].append(time.perf_counter() - t)
            if name.startswith("sandboxd"):
                d.settle()
    client.close()
    return samples


def throughputs(d: Daemon, clients: tuple[int, ...], seconds: float) -> dict[str, dict[int, float]]:
    from _common import throughput

    def sbx(warm: bool) -> Callable[[], Callable[[], object]]:
        def make() -> Callable[[], object]:
            c = Client(d.daemon.socket)
            return lambda: job(c, "python3", {"main.py": SNIPPET}, warm)
        return make

    systems: dict[str, Callable[[], Callable[[], object]]] = {
        "sandboxd warm": sbx(True),
        "sandboxd plain": sbx(False),
        "bwrap": lambda: lambda: spawn_wait([*BWRAP, "/usr/bin/python3", "-c",
                                             SNIPPET.decode()]),
    }
    out: dict[str, dict[int, float]] = {name: {} for name in systems}
    for n in clients:
        for name, make in systems.items():
            d.settle(timeout=30)
            out[name][n] = throughput(make, n, seconds)
    return out


def waiting_uss(d: Daemon) -> dict[str, list[int]]:
    """USS of each waiting warm container (its init and its waiting interpreter), by the
    interpreter's name."""
    from sandboxd_testing import leftovers

    out: dict[str, list[int]] = {}
    for pids in container_pids(makers(d.daemon.pid)).values():
        if len(pids) == 2 and leftovers.waiting_runtime(pids[1]):
            name = Path(f"/proc/{pids[1]}/comm").read_text().strip()
            out.setdefault(name, []).append(sum(uss(p) for p in pids))
    return out


def refill(tmp: Path, profile: str, pool: int) -> dict[str, float]:
    """Warm containers made per second while a pool of ``pool`` fills from empty."""
    d = Daemon(tmp, f"refill-{profile}", pool, pool_profiles=())
    try:
        client = Client(d.daemon.socket)
        entry, source, _bare = LANGS[profile]
        t0 = time.perf_counter()
        job(client, profile, {entry: source}, True)  # first use: its pool starts filling
        while True:
            st = d.stats()
            if st.pools and all(p.warm >= p.target for p in st.pools):
                break
            time.sleep(0.002)
        elapsed = time.perf_counter() - t0
        client.close()
        return {"containers_per_s": st.counters["containers_created"] / elapsed,
                "mean_make_s": float(st.counters["refill_mean_s"])}
    finally:
        d.close()


def cpu_split(tmp: Path, jobs: int) -> dict[str, float] | None:
    """CPU per Python snippet of a warm daemon, split by who spent it, and bubblewrap's
    (ms); None without a v1 cpuacct hierarchy."""
    acct = cpuacct_dir()
    if acct is None:
        return None
    d = Daemon(tmp, "cpu", 4, pool_profiles=("python3",), accounted=True)
    try:
        d.settle(timeout=60)
        client = Client(d.daemon.socket)
        files = {"main.py": SNIPPET}
        for _ in range(5):  # every code path once, and the pool back to full
            job(client, "python3", files, True)
        d.settle()
        zygotes = makers(d.daemon.pid)
        s0, z0, a0 = (cpu_seconds(d.daemon.pid), sum(cpu_seconds(z) for z in zygotes),
                      d.cpu_ns() or 0)
        own = 0.0
        for _ in range(jobs):
            res = client.job(profile="python3", files=files)
            if res.steps[0].verdict != "ok":
                raise RuntimeError(f"python3: {res.steps[0]}")
            own += res.steps[0].cpu_time
        d.settle(timeout=30)  # the last jobs' refills belong to them
        s1, z1, a1 = (cpu_seconds(d.daemon.pid), sum(cpu_seconds(z) for z in zygotes),
                      d.cpu_ns() or 0)
        client.close()
    finally:
        d.close()
    out = {"supervisor_ms": (s1 - s0) / jobs * 1e3, "zygote_forkserver_ms": (z1 - z0) / jobs * 1e3,
           "job_ms": own / jobs * 1e3, "all_ms": (a1 - a0) / jobs / 1e6}
    out["refill_and_end_ms"] = (out["all_ms"] - out["supervisor_ms"]
                                - out["zygote_forkserver_ms"] - out["job_ms"])
    # bubblewrap: this process (the launcher), bwrap and python3 in a cgroup of their own
    cg = f"{acct}/sandboxd-bench-warm-bwrap-{os.getpid()}"
    os.mkdir(cg)
    try:
        Path(cg, "cgroup.procs").write_text(str(os.getpid()))
        b0 = int(Path(cg, "cpuacct.usage").read_text())
        argv = [*BWRAP, "/usr/bin/python3", "-c", SNIPPET.decode()]
        for _ in range(jobs):
            spawn_wait(argv)
        out["bwrap_all_ms"] = (int(Path(cg, "cpuacct.usage").read_text()) - b0) / jobs / 1e6
    finally:
        Path(acct, "cgroup.procs").write_text(str(os.getpid()))
        rmdir_cgroup(cg, time.monotonic() + 10)
    ncpu = os.cpu_count() or 1
    out["ceiling_warm_jobs_s"] = ncpu / out["all_ms"] * 1e3
    out["ceiling_bwrap_jobs_s"] = ncpu / out["bwrap_all_ms"] * 1e3
    return out


def summary(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"p50_ms": statistics.median(v) * 1000, "p90_ms": pct(v, .9) * 1000,
                   "p99_ms": pct(v, .99) * 1000} for name, v in samples.items()}


def targets(out: dict[str, object]) -> list[dict[str, object]]:
    """Issue 18's, each against a baseline of the same run: Python's hello world through
    the warm pool at most 3 ms at p50 client to client (with bare python3's p50 beside it),
    and Python snippets' throughput at least 3x bubblewrap's at every client count."""
    rows: list[dict[str, object]] = []
    lat = out.get("latency python3")
    if isinstance(lat, dict):
        warm, bare = lat["sandboxd warm"]["p50_ms"], lat["bare"]["p50_ms"]
        rows.append({"target": "Python hello world, warm, p50 at most 3 ms client to client",
                     "figure": f"{warm:.2f} ms (bare python3 {bare:.2f} ms, "
                               f"{warm / bare:.2f}x)",
                     "met": warm <= 3.0, "margin": f"{3.0 - warm:+.2f} ms"})
    tp = out.get("throughput python snippets jobs/s")
    if isinstance(tp, dict):
        for n, rate in tp["sandboxd warm"].items():
            ratio = rate / tp["bwrap"][n]
            rows.append({"target": f"Python snippets' throughput at least 3x bubblewrap's "
                                   f"({n} client{'s' if n != 1 else ''})",
                         "figure": f"{rate:.1f} vs {tp['bwrap'][n]:.1f} jobs/s ({ratio:.2f}x)",
                         "met": ratio >= 3.0, "margin": f"{ratio - 3.0:+.2f}"})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--runtimes", default=",".join(LANGS),
                    help="the profiles to measure (default: python3,javascript)")
    ap.add_argument("--no-costs", action="store_true", help="skip USS, refill and CPU split")
    ap.add_argument("--cpu-jobs", type=int, default=300,
                    help="snippets for the CPU split (default 300)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    profiles = load_dir()
    langs = [p for p in LANGS if not profiles[p].unavailable and profiles[p].warm_runtime
             and p in args.runtimes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-warm-"))
    out: dict[str, object] = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
                              "runtimes": langs}
    d = Daemon(tmp, "warm", 4, pool_profiles=tuple(langs))
    try:
        d.settle(timeout=60)
        for profile in langs:
            s = summary(latency(d, profile, args.rounds))
            out[f"latency {profile}"] = s
            print(f"\n{profile}: hello world, client to client ({args.rounds} rounds)")
            print(f"  {'':16} {'p50 ms':>8} {'p90':>7} {'p99':>7} {'vs bare':>8} {'vs bwrap':>9}")
            for name, v in s.items():
                print(f"  {name:16} {v['p50_ms']:8.2f} {v['p90_ms']:7.2f} {v['p99_ms']:7.2f} "
                      f"{v['p50_ms'] / s['bare']['p50_ms']:8.2f} "
                      f"{v['p50_ms'] / s['bwrap']['p50_ms']:9.2f}")
        if "python3" in langs:
            tp = throughputs(d, tuple(int(c) for c in args.clients.split(",")), args.seconds)
            out["throughput python snippets jobs/s"] = tp
            print("\nthroughput, Python snippets (jobs/s)")
            print(f"  {'clients':>7} " + " ".join(f"{name:>15}" for name in tp)
                  + f" {'warm/bwrap':>11}")
            for n in tp["bwrap"]:
                print(f"  {n:7} " + " ".join(f"{tp[name][n]:15.1f}" for name in tp)
                      + f" {tp['sandboxd warm'][n] / tp['bwrap'][n]:11.2f}")
        d.settle(timeout=60)
        time.sleep(0.5)
        costs: dict[str, object] = {}
        print()
        for name, per in ({} if args.no_costs else waiting_uss(d)).items():
            med = statistics.median(per)
            costs[f"uss {name}"] = {"bytes": per, "in_24GiB": int(24 * GiB // med)}
            print(f"USS per waiting warm container ({name}): median {med / (1 << 20):.2f} MiB "
                  f"({len(per)} containers): {int(24 * GiB // med)} fit in 24 GiB")
        for profile in [] if args.no_costs else langs:
            r = refill(tmp, profile, 8)
            costs[f"refill {profile}"] = r
            print(f"refill {profile}: {r['containers_per_s']:.1f} warm containers/s while a "
                  f"pool of 8 fills; {r['mean_make_s'] * 1000:.1f} ms to make one")
        if "python3" in langs and not args.no_costs:
            split = cpu_split(tmp, args.cpu_jobs)
            costs["cpu per python snippet"] = split
            if split is not None:
                print(f"CPU per Python snippet ({args.cpu_jobs} back to back, ms): supervisor "
                      f"{split['supervisor_ms']:.2f}, zygote + fork server "
                      f"{split['zygote_forkserver_ms']:.2f}, the job from its hand-over "
                      f"{split['job_ms']:.2f}, its replacement container and interpreter "
                      f"(and the used one's end) {split['refill_and_end_ms']:.2f}; all "
                      f"{split['all_ms']:.2f} against bubblewrap's {split['bwrap_all_ms']:.2f}. "
                      f"Ceiling on {os.cpu_count()} CPUs: {split['ceiling_warm_jobs_s']:.0f} "
                      f"jobs/s against {split['ceiling_bwrap_jobs_s']:.0f} "
                      f"({split['bwrap_all_ms'] / split['all_ms']:.2f}x)")
        out["costs"] = costs
    finally:
        d.close()
        shutil.rmtree(tmp, ignore_errors=True)
    out["targets"] = targets(out)
    for t in out["targets"]:
        print(f"{'met ' if t['met'] else 'MISS'} {t['target']}: {t['figure']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
