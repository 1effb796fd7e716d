"""``bench/run``'s engine: sandboxd and its peers side by side, in one run, interleaved.

Usage (as root, normally through ``bench/run``, which installs the peers first):
``.venv/bin/python bench/suite.py [--quick] [--out DIR] [--profile] [...]``

What it measures (docs/benchmarks.md says how to read it):

- latency of one job (``/bin/true``, ``python3 -c pass``, a hello-world C
  binary) for bare fork+exec, sandboxd warm and cold, bubblewrap, runc, crun
  where it runs and firejail where it is installed; every round runs every
  system once per command, in an order that rotates, so that the noise of a
  shared machine hits all of them alike; after a sandboxd job the suite waits
  until the daemon is idle again (pool refilled, container destroyed), so
  that sandboxd's background work never lands on the next system's sample;
- throughput at 1, 2, 8 and 32 closed-loop clients, windows interleaved the
  same way;
- sandboxd's own costs: supervisor CPU per job, USS per warm container,
  pool refill rate, protocol encode/decode per job;
- the judge path: one compile and 50 tests, sandboxd against bubblewrap one
  process at a time (and bare, the floor);
- the spread of CPU time of a fixed workload run pinned, each run in a fresh
  container, against the same binary run bare and pinned, interleaved;
- the HTTP front door (Judge0, Piston, /v1) against the msgpack socket of the
  same daemon: latency of a Python and a C hello world, throughput at 1, 8 and
  32 clients (``bench_http.py``);
- the cluster path (client -> Redis -> node -> Redis -> client) against the
  same node's local socket: latency, throughput with one and two nodes, and
  Redis's CPU per job (``bench_cluster.py``).

Writes ``results.json`` (every sample and the machine), ``results.md``
(medians, ratios to the floor, the targets), ``latency.png`` and
``throughput.png`` to ``--out`` (default ``bench/out/<timestamp>``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    BWRAP,
    COMMANDS,
    Client,
    container_pids,
    cpu_seconds,
    makers,
    spawn_wait,
    start_daemon,
    throughput,
    uss,
)
from _peers import (
    ISOLATION,
    Isolate,
    Nsjail,
    Peers,
    machine,
    rmdir_cgroup,
    rmdir_tree,
    steal_and_busy,
)

import sandboxd_protocol as proto

HERE = Path(__file__).resolve().parent
CONCURRENCY = (1, 2, 8, 32)
JUDGE_SRC = b'#include <stdio.h>\nint main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2)' \
            b' return 1; printf("%ld\\n", a + b); return 0; }\n'
JUDGE_COMPILE = ["gcc", "-std=gnu17", "-O2", "-pipe", "-o", "main", "main.c", "-lm"]  # profiles/c
JUDGE_TESTS = [(f"{i} {i * 7}\n".encode(), f"{i * 8}\n".encode()) for i in range(50)]


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or ``--quick``'s smoke check of every code path."""

    rounds: int = 300
    warmup: int = 3
    seconds: float = 2.0
    reps: int = 2
    throughput_commands: tuple[str, ...] = ("true", "py", "hello")
    concurrency: tuple[int, ...] = CONCURRENCY
    cpu_jobs: int = 500
    refill_reps: int = 3
    refill_pool: int = 8
    protocol_jobs: int = 5000
    protocol_repeat: int = 11
    judge_rounds: int = 5
    spread_rounds: int = 20
    spread_cpu_s: float = 0.2
    cold_samples: int = 1000  # the cold start's tail: this many of sandboxd cold and bwrap
    http_rounds: int = 100
    http_concurrency: tuple[int, ...] = (1, 8, 32)
    cluster_rounds: int = 200
    cluster_concurrency: tuple[int, ...] = (1, 8, 32)


QUICK = Plan(rounds=3, warmup=1, seconds=0.25, reps=1, throughput_commands=("true",),
             cpu_jobs=30, refill_reps=1, refill_pool=4, protocol_jobs=200, protocol_repeat=3,
             judge_rounds=1, spread_rounds=2, spread_cpu_s=0.02, http_rounds=2,
             cluster_rounds=3, cluster_concurrency=(1, 8), cold_samples=5)


class Daemon:
    """A daemon of the suite, and a stats connection to wait on it with."""

    def __init__(self, tmp: Path, name: str, pool_size: int,
                 pool_profiles: tuple[str, ...] = ("bash",), accounted: bool = False,
                 args: tuple[str, ...] = (), **config: object) -> None:
        # ``accounted``: the daemon runs in a v1 cpuacct cgroup of its own, beneath which its
        # job cgroups nest, so that cpu_ns() is everything it runs: supervisor, zygote, fork
        # server, the containers' inits and job processes (the fork server's children are
        # reaped by the kernel, so no process's cutime holds them).
        acct = cpuacct_dir() if accounted else None
        self.acct = f"{acct}/sandboxd-bench-acct-{os.getpid()}-{name}" if acct else None
        if self.acct:
            os.mkdir(self.acct)
        try:
            self.daemon = start_daemon(tmp / name, pool_size, os.cpu_count() or 1,
                                       name=f"-{name}", pool_profiles=pool_profiles,
                                       cgroup=self.acct, args=args, **config)
        except BaseException:
            self._remove_acct()
            raise
        self._stats: Client | None = None

    def cpu_ns(self) -> int | None:
        """CPU time of everything the daemon ran (``accounted`` only), in ns."""
        return int(Path(self.acct, "cpuacct.usage").read_text()) if self.acct else None

    def _remove_acct(self) -> None:
        if self.acct:
            rmdir_cgroup(self.acct, time.monotonic() + 10)

    def stats(self) -> proto.ServerStats:
        for attempt in range(2):  # an idle connection may have been timed out
            try:
                if self._stats is None:
                    self._stats = Client(self.daemon.socket)
                return self._stats.stats()
            except (OSError, ConnectionError):
                self._stats = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until no job runs, every pool is full and every used container destroyed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.stats()
            warm = sum(p.warm for p in st.pools)
            live = st.counters["containers_created"] - st.counters["containers_destroyed"]
            if (not st.jobs_running and not st.jobs_queued and live <= warm
                    and warm >= sum(p.target for p in st.pools)):
                return
            time.sleep(0.005)  # each stats request costs the daemon CPU too

    def close(self) -> None:
        if self._stats is not None:
            self._stats.close()
        self.daemon.stop(timeout=60)
        self._remove_acct()


def cpuacct_dir() -> str | None:
    """This process's cgroup in the v1 cpuacct hierarchy; None on cgroup v2."""
    from sandboxd.cgroups import _fs

    mount = next((m for m in _fs.mounts() if m.fstype == "cgroup" and "cpuacct" in m.options),
                 None)
    own = next((p for k, p in _fs.own_cgroups().items() if "cpuacct" in k.split(",")), None)
    return None if mount is None or own is None else _fs.on_disk(mount, own)


@dataclass
class System:
    """One system under test: how to make a job runner for a command, and how to wait."""

    name: str
    make: Callable[[list[str], int], Callable[[], object]]
    command: Callable[[list[str]], list[str]] | None = None  # a peer's full command line
    settle: Callable[[], None] = lambda: None
    clients: list[Client] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # command -> why

    def close_clients(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()


def peer(name: str, command: Callable[[list[str], int], list[str]]) -> System:
    """A system that runs one job per process: ``command(argv, worker)`` is its command line."""
    return System(name, lambda argv, w: lambda: spawn_wait(command(argv, w)),
                  command=lambda argv: command(argv, 0))


def sandboxd_system(name: str, daemon: Daemon) -> System:
    def make(argv: list[str], _w: int) -> Callable[[], object]:
        client = Client(daemon.daemon.socket)
        system.clients.append(client)
        return lambda: client.run_command(argv)

    system = System(name, make, settle=daemon.settle)
    return system


def systems_for(peers: Peers, warm: Daemon, cold: Daemon, only: set[str] | None,
                given: dict[str, Isolate | Nsjail] | None = None,
                workers: Daemon | None = None) -> list[System]:
    """Every system this machine has, in the order of the report; ``given``: the peers
    whose binaries bench/run was handed (isolate, nsjail); ``workers``: a daemon of two
    supervisor processes (the `workers` setting)."""
    found = [peer("bare", lambda argv, _w: argv), sandboxd_system("sandboxd-warm", warm),
             sandboxd_system("sandboxd-cold", cold)]
    if workers is not None:
        found.append(sandboxd_system("sandboxd-warm-w2", workers))
    for name, tool in (given or {}).items():
        found.append(peer(name, tool.argv))
    if shutil.which("bwrap"):
        found.append(peer("bwrap", lambda argv, _w: BWRAP + argv))
    for tool in ("runc", "crun"):
        if shutil.which(tool):
            found.append(peer(tool, lambda argv, w, t=tool: peers.runc_argv(t, argv, w)))
    if shutil.which("firejail"):
        found.append(peer("firejail", lambda argv, _w: Peers.firejail_argv(argv)))
    return [s for s in found if only is None or s.name in only]


def probe(systems: list[System], commands: dict[str, list[str]]) -> dict[str, str]:
    """Run each command once in each system; a failure leaves that pair out, with its reason."""
    missing = {}
    for s in systems:
        for cmd, argv in commands.items():
            try:
                s.make(argv, 0)()
                s.settle()
            except Exception as e:
                why = f"{type(e).__name__}: {str(e)[-300:]}"
                if s.command is not None:  # run it again to say why, in its own words
                    run = subprocess.run(s.command(argv), capture_output=True, text=True,
                                         stdin=subprocess.DEVNULL, check=False)
                    why = f"exit {run.returncode}: {(run.stderr or run.stdout).strip()[-300:]}"
                s.unavailable[cmd] = why
                missing[f"{s.name} {cmd}"] = s.unavailable[cmd]
        s.close_clients()
    for s in systems:
        if s.name in ("sandboxd-warm", "sandboxd-cold") and s.unavailable:
            raise RuntimeError(f"{s.name} cannot run the benchmark's jobs: {s.unavailable}")
    return missing


def rotated(items: list[System], r: int) -> list[System]:
    k = r % len(items)
    return items[k:] + items[:k]


def measure_latency(systems: list[System], commands: dict[str, list[str]], plan: Plan,
                    ) -> tuple[dict[str, dict[str, list[float]]], dict[str, int]]:
    """Seconds per job, every system once per command per round, in a rotating order."""
    samples: dict[str, dict[str, list[float]]] = {s.name: {c: [] for c in commands}
                                                  for s in systems}
    failures: dict[str, int] = {}
    runners = {(s.name, c): s.make(argv, 0) for s in systems for c, argv in commands.items()
               if c not in s.unavailable}
    for r in range(plan.warmup + plan.rounds):
        for s in rotated(systems, r):
            for c in commands:
                if (s.name, c) not in runners:
                    continue
                t = time.perf_counter()
                try:
                    runners[s.name, c]()
                except Exception:
                    failures[f"{s.name} {c}"] = failures.get(f"{s.name} {c}", 0) + 1
                    continue
                dt = time.perf_counter() - t
                s.settle()
                if r >= plan.warmup:
                    samples[s.name][c].append(dt)
    for s in systems:
        s.close_clients()
    return samples, failures


def measure_cold_tail(systems: list[System], argv: list[str], plan: Plan,
                      ) -> dict[str, list[float]]:
    """Seconds per job of sandboxd cold and bubblewrap, alternating, ``plan.cold_samples``
    each (``measure_latency``'s rounds, for these two): the latency rounds' p99 is the
    maximum of 100 samples, one stray wake-up on a shared machine; the cold start's tail
    (issue 16: its p99 within 2x of bubblewrap's) needs more of them."""
    pair = [s for s in systems if s.name in ("sandboxd-cold", "bwrap")
            and not s.unavailable]
    if len(pair) != 2:
        return {}
    samples, _ = measure_latency(pair, {"true": argv},
                                 dataclasses.replace(plan, rounds=plan.cold_samples))
    return {name: per_cmd["true"] for name, per_cmd in samples.items()}


def measure_throughput(systems: list[System], commands: dict[str, list[str]], plan: Plan,
                       ) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Jobs/s of closed loops, per system, command and concurrency; windows interleaved."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {s.name: {} for s in systems}
    n = 0
    for _rep in range(plan.reps):
        for c in plan.throughput_commands:
            argv = commands[c]
            for conc in plan.concurrency:
                n += 1
                for s in rotated(systems, n):
                    if c in s.unavailable:
                        continue
                    workers = itertools.count()  # each client thread its own worker index
                    rate = throughput(lambda s=s, w=workers, a=argv: s.make(a, next(w)), conc,
                                      plan.seconds)
                    s.close_clients()
                    s.settle()
                    out[s.name].setdefault(c, {}).setdefault(str(conc), []).append(rate)
    return out


# ------------------------------------------------------------------ sandboxd's own costs


def supervisor_costs(warm: Daemon, plan: Plan, out_dir: Path, profile: bool) -> dict[str, object]:
    """USS of the waiting containers; CPU per job of the supervisor, the zygote and all
    of sandboxd (``/bin/true`` jobs back to back, with the refills and destructions they
    cause); then, apart, a py-spy profile of the same loop (py-spy stops the process at
    every sample, which would inflate the CPU figures)."""
    warm.settle()
    zygotes = makers(warm.daemon.pid)
    boxes = container_pids(zygotes)
    per_box = [sum(uss(p) for p in pids) for pids in boxes.values() if len(pids) == 2]
    client = Client(warm.daemon.socket)

    def loop() -> float:
        t0 = time.perf_counter()
        for _ in range(plan.cpu_jobs):
            client.run_command(["/bin/true"])
        wall = time.perf_counter() - t0
        warm.settle()
        return wall

    s0, z0, a0 = cpu_seconds(warm.daemon.pid), sum(cpu_seconds(z) for z in zygotes), warm.cpu_ns()
    wall = loop()
    s1, z1, a1 = cpu_seconds(warm.daemon.pid), sum(cpu_seconds(z) for z in zygotes), warm.cpu_ns()
    n = plan.cpu_jobs
    costs: dict[str, object] = {
        "uss_per_warm_container_bytes": per_box,
        "supervisor_cpu_per_job_ms": (s1 - s0) / n * 1000,
        "zygote_cpu_per_job_ms": (z1 - z0) / n * 1000,
        "sandboxd_cpu_per_job_ms": (a1 - a0) / n / 1e6 if a0 is not None and a1 else None,
        "cpu_jobs": n, "cpu_jobs_s": n / wall,
        "clock_tick_ms": 1000 / os.sysconf("SC_CLK_TCK"),
    }
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if profile and os.path.exists(pyspy):
        spy = subprocess.Popen([pyspy, "record", "--gil", "-p", str(warm.daemon.pid), "-r", "1000",
                                "-f", "raw", "-o", str(out_dir / "supervisor-profile.txt")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let py-spy attach before the jobs start
        loop()
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30)
        costs["profile"] = summarize_profile(out_dir / "supervisor-profile.txt")
    client.close()
    return costs


_LAUNCHER = '''
import os, sys
acct, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
with open(acct + "/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
def usage():
    with open(acct + "/cpuacct.usage") as f:
        return int(f.read())
null = [(os.POSIX_SPAWN_OPEN, fd, "/dev/null", os.O_RDWR, 0) for fd in (0, 1, 2)]
u0 = usage()
for _ in range(n):
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=null)
    os.waitpid(pid, 0)
print(usage() - u0)
'''


def peer_cpu_cgroup(systems: list[System], commands: dict[str, list[str]], n: int,
                    acct_dirs: dict[str, str]) -> dict[str, float]:
    """CPU per ``/bin/true`` job of each one-process-per-job system (ms), from a v1
    cpuacct cgroup around it: a launcher joins the cgroup, then spawns and reaps ``n``
    jobs, so that everything the system runs for a job counts, kernel work done on its
    behalf and processes its outer process never reaps (bubblewrap's init) included.
    The launcher's own loop counts too, alike for every system: see ``bare``. A peer
    that puts its jobs in cgroups of its own (isolate) is given a directory above them
    (``acct_dirs``); the others get a new one beneath this process's cgroup."""
    own = cpuacct_dir()
    if own is None:
        return {}
    out = {}
    for s in systems:
        if s.command is None or "true" in s.unavailable:
            continue
        acct = acct_dirs.get(s.name)
        made = None
        if acct is None:
            acct = made = f"{own}/sandboxd-bench-peeracct-{os.getpid()}-{s.name}"
            os.mkdir(made)
        try:
            run = subprocess.run([sys.executable, "-c", _LAUNCHER, acct, str(n),
                                  *s.command(commands["true"])],
                                 capture_output=True, text=True, check=True)
            out[s.name] = int(run.stdout.split()[-1]) / n / 1e6
        finally:
            if made:  # runc nests its jobs' cgroups beneath the launcher's: children first
                rmdir_tree(made, time.monotonic() + 10)
    return out


def peer_cpu(systems: list[System], commands: dict[str, list[str]], n: int,
             ) -> dict[str, float]:
    """CPU per ``/bin/true`` job of each one-process-per-job system (ms), from ``wait4``'s
    rusage, which holds the job's reaped descendants too: what sandboxd's is weighed
    against when throughput is CPU-bound."""
    out = {}
    for s in systems:
        if s.command is None or "true" in s.unavailable:
            continue
        total = 0.0
        for _ in range(n):
            argv = s.command(commands["true"])
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
                (os.POSIX_SPAWN_OPEN, fd, "/dev/null", os.O_RDWR, 0) for fd in (0, 1, 2)])
            _, _, ru = os.wait4(pid, 0)
            total += ru.ru_utime + ru.ru_stime
        out[s.name] = total / n * 1000
    return out


def summarize_profile(path: Path, top: int = 14) -> dict[str, list[tuple[str, float]]]:
    """Shares of py-spy's ``--gil`` samples (raw collapsed stacks): by the trio task they
    ran in (the frame just under trio's ``unrolled_run``: a job's run, a refill, a
    destroy, a session), and by the file of the innermost frame (sandboxd's code or the
    trio machinery around it)."""
    task: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    if not path.exists():
        return {}

    def short(frame: str) -> str:  # "name (path/file.py:12)" -> "name (file.py)"
        name, _, where = frame.partition(" (")
        return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})"

    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [short(f) for f in stack.split(";")]
        runs = [i for i, f in enumerate(frames) if f.startswith("unrolled_run ")]
        root = ("outside trio.run" if not runs else frames[runs[-1] + 1]
                if runs[-1] + 1 < len(frames) else "trio's scheduler itself")
        task[root] = task.get(root, 0) + n
        file = frames[-1].rsplit("(", 1)[-1].rstrip(")") if frames else "?"
        leaf[file] = leaf.get(file, 0) + n

    def best(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, v / total) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": [("total", float(total))], "by_task": best(task),
            "by_file": best(leaf)}


def refill_rate(tmp: Path, plan: Plan) -> dict[str, object]:
    """Containers/s while a pool fills from empty: a fresh daemon, its first job's profile."""
    rates, means = [], []
    for i in range(plan.refill_reps):
        d = Daemon(tmp, f"refill{i}", plan.refill_pool, pool_profiles=())
        try:
            client = Client(d.daemon.socket)
            t0 = time.perf_counter()
            client.run_command(["/bin/true"])  # first use of the profile: its pool starts filling
            while True:
                st = d.stats()
                if st.pools and all(p.warm >= p.target for p in st.pools):
                    break
                time.sleep(0.001)
            elapsed = time.perf_counter() - t0
            rates.append(st.counters["containers_created"] / elapsed)
            means.append(float(st.counters["refill_mean_s"]))
            client.close()
        finally:
            d.close()
    return {"refill_containers_per_s": rates, "refill_mean_s": means,
            "pool_size": plan.refill_pool}


def protocol_cost(plan: Plan) -> dict[str, object]:
    """bench_protocol's round trip: encode + decode + validate of a job and its result."""
    import bench_protocol

    bench_protocol.run(min(plan.protocol_jobs, 1000))
    us = [bench_protocol.run(plan.protocol_jobs) / plan.protocol_jobs * 1e6
          for _ in range(plan.protocol_repeat)]
    return {"protocol_us_per_job": us}


# ------------------------------------------------------------------ the judge path


def judge_sandboxd(client: Client) -> float:
    t = time.perf_counter()
    res = client.job(profile="c", files={"main.c": JUDGE_SRC}, tests=tuple(
        proto.TestCase(stdin=i, expected_output=o) for i, o in JUDGE_TESTS))
    dt = time.perf_counter() - t
    verdicts = {s.verdict for s in res.steps}
    if res.compile is None or res.compile.verdict != "ok" or verdicts != {"ok"}:
        raise RuntimeError(f"judge on sandboxd: compile {res.compile}, tests {verdicts}")
    return dt


def judge_local(prefix: list[str], work: Path) -> float:
    """Compile, then run the 50 tests one process at a time; ``prefix`` is the sandbox."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "main.c").write_bytes(JUDGE_SRC)
    t = time.perf_counter()
    subprocess.run(prefix + JUDGE_COMPILE, cwd=work, check=True, stdin=subprocess.DEVNULL)
    for stdin, expected in JUDGE_TESTS:
        out = subprocess.run([*prefix, "./main"], cwd=work, input=stdin, capture_output=True,
                             check=True).stdout
        if out.rstrip() != expected.rstrip():
            raise RuntimeError(f"judge {prefix[:1]}: {out!r} != {expected!r}")
    return time.perf_counter() - t


def measure_judge(warm: Daemon, tmp: Path, plan: Plan) -> dict[str, list[float]]:
    work = tmp / "judge"
    client = Client(warm.daemon.socket)
    ways: dict[str, Callable[[], float]] = {
        "bare": lambda: judge_local([], work),
        "sandboxd-warm": lambda: judge_sandboxd(client)}
    if shutil.which("bwrap"):
        # The judge's directory is the only writable place, as sandboxd's /box is.
        box = [*BWRAP[:-1], "--bind", str(work), "/box", "--chdir", "/box", "--"]
        ways["bwrap"] = lambda: judge_local(box, work)
    out: dict[str, list[float]] = {k: [] for k in ways}
    names = list(ways)
    for r in range(plan.judge_rounds + 1):  # round 0 warms the c pool and the page cache
        for name in names[r % len(names):] + names[:r % len(names)]:
            dt = ways[name]()
            warm.settle()
            if r:
                out[name].append(dt)
    client.close()
    return out


# ------------------------------------------------------------------ CPU-time spread

BUSY_SRC = b"""#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    unsigned long n = strtoul(argv[1], 0, 10), x = 88172645463325252UL;
    for (unsigned long i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
    printf("%lu\\n", x & 1);
    return 0;
}
"""


def bare_cpu_time(exe: Path, n: int, cpu: int) -> float:
    """User + system CPU (rusage) of one bare run of ``exe n`` pinned to ``cpu``."""
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.sched_setaffinity(0, {cpu})
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            os.execv(str(exe), [str(exe), str(n)])
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"bare busy loop exited {status}")
    return usage.ru_utime + usage.ru_stime


def measure_cpu_spread(warm: Daemon, tmp: Path, plan: Plan) -> dict[str, list[float]]:
    """CPU seconds of a register-only busy loop calibrated to ``plan.spread_cpu_s``: run
    pinned in a fresh container (a ``c`` job with ``cpuset_pin``), and bare pinned to the
    CPU the daemon hands out first, interleaved round by round. sandboxd's spread against
    the bare one's says how much noise sandboxd adds; the bare spread is the host's."""
    src, exe = tmp / "busy.c", tmp / "busy"
    src.write_bytes(BUSY_SRC)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    cpu = min(os.sched_getaffinity(0))
    n0 = 100_000_000
    calib = sorted(bare_cpu_time(exe, n0, cpu) for _ in range(3))[1]
    n = max(1, round(n0 * plan.spread_cpu_s / calib))
    client = Client(warm.daemon.socket)
    out: dict[str, list[float]] = {"sandboxd-warm": [], "bare": []}
    try:
        for r in range(plan.spread_rounds):
            res = client.job(profile="c", files={"main.c": BUSY_SRC}, argv=("./main", str(n)),
                             cpuset_pin=True, tests=(proto.TestCase(),))
            if res.steps[0].verdict != "ok":
                raise RuntimeError(f"busy loop on sandboxd: {res.steps[0]}")
            warm.settle()  # the pool's refills must not land on the control's run
            sample = res.steps[0].cpu_time
            bare = bare_cpu_time(exe, n, cpu)
            if r or plan.spread_rounds == 1:
                out["sandboxd-warm"].append(sample)
                out["bare"].append(bare)
    finally:
        client.close()
    return out


# ------------------------------------------------------------------ the HTTP front door


def measure_http(tmp: Path, plan: Plan, daemons: list[Daemon]) -> dict[str, object]:
    """bench_http's run: a daemon of its own with ``--http`` and warm ``python3`` and ``c``
    pools; a Python and a C hello world through Judge0, Piston, /v1 and the msgpack
    socket, interleaved; throughput at ``plan.http_concurrency`` clients."""
    import bench_http

    args = bench_http.http_args()
    web = Daemon(tmp, "http", 4, pool_profiles=bench_http.POOL_PROFILES, args=args,
                 **bench_http.CONFIG)
    daemons.append(web)
    return bench_http.measure(web, args, rounds=plan.http_rounds, warmup=plan.warmup,
                              seconds=plan.seconds, reps=plan.reps,
                              concurrency=plan.http_concurrency,
                              throughput_programs=("py",), log=log)


# ------------------------------------------------------------------ the cluster


def measure_cluster(tmp: Path, plan: Plan) -> dict[str, object]:
    """bench_cluster's run: a redis-server and up to two nodes of their own; a trivial job
    through the cluster against the first node's socket; throughput with one and two
    nodes; Redis's CPU per job. The nodes are stopped before it returns."""
    import bench_cluster

    made = [0]

    def make_node(url: str) -> Daemon:
        made[0] += 1
        return Daemon(tmp, f"node{made[0]}", 4, redis=url,
                      node_id=f"bench-{os.getpid()}-node{made[0]}", **bench_cluster.NODE_CONFIG)

    return bench_cluster.measure(tmp / "cluster", make_node, rounds=plan.cluster_rounds,
                                 warmup=plan.warmup, seconds=plan.seconds, reps=plan.reps,
                                 concurrency=plan.cluster_concurrency, log=log)


# ------------------------------------------------------------------ the run


def given_peers(args: argparse.Namespace, tmp: Path,
                closing: list[Callable[[], list[str]]],
                ) -> tuple[dict[str, Isolate | Nsjail], dict[str, str]]:
    """The peers whose binaries were given (set up; their ``close`` queued on ``closing``),
    and why each other one is left out of the run."""
    given: dict[str, Isolate | Nsjail] = {}
    left_out: dict[str, str] = {}
    for name, path, make in (("isolate", args.isolate, lambda p: Isolate(p, tmp)),
                             ("nsjail", args.nsjail, Nsjail)):
        if not path:
            left_out[name] = f"not given (bench/run --{name} PATH; not packaged in Debian)"
            continue
        try:
            tool = make(path)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
            left_out[name] = f"{path}: {e}"
            continue
        closing.append(tool.close)
        given[name] = tool
    return given, left_out



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    ap.add_argument("--out", type=Path, help="output directory (default bench/out/<time>)")
    ap.add_argument("--rounds", type=int, help="latency rounds")
    ap.add_argument("--seconds", type=float, help="seconds per throughput window")
    ap.add_argument("--reps", type=int, help="throughput windows per system and concurrency")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy the supervisor while its CPU per job is measured")
    ap.add_argument("--systems", help="comma-separated subset of systems (debugging)")
    ap.add_argument("--isolate", metavar="PATH",
                    help="an isolate 1.x binary (ioi/isolate; cgroup v1), run on ready boxes")
    ap.add_argument("--nsjail", metavar="PATH", help="an nsjail binary (google/nsjail)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run needs root (namespaces, cgroups, runc)", file=sys.stderr)
        return 2
    # A SIGTERM (a timeout, a stopped session) ends the run through its clean-up, as ^C
    # does: at the default disposition it left the peers' cgroups behind.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    plan = QUICK if args.quick else Plan()
    overrides = {k: v for k, v in (("rounds", args.rounds), ("seconds", args.seconds),
                                   ("reps", args.reps)) if v is not None}
    plan = Plan(**{**plan.__dict__, **overrides})
    out_dir = args.out or HERE / "out" / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    only = set(args.systems.split(",")) if args.systems else None

    steal0, busy0, t_start = *steal_and_busy(), time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-"))
    daemons: list[Daemon] = []
    peers_closing: list[Callable[[], list[str]]] = []
    try:
        # Peers first: its snapshot of the mount table must predate any firejail call
        # (even `firejail --version`, in machine(), mounts its /run/firejail files).
        with Peers() as peers:
            results: dict[str, object] = {"machine": machine(), "plan": plan.__dict__,
                                          "quick": args.quick, "started": time.time()}
            commands = {**COMMANDS, "hello": peers.hello()}
            results["commands"] = commands
            given, left_out = given_peers(args, tmp, peers_closing)
            warm = Daemon(tmp, "warm", 4, accounted=True)
            daemons.append(warm)
            cold = Daemon(tmp, "cold", 0)
            daemons.append(cold)
            workers = None
            if only is None or "sandboxd-warm-w2" in only:
                workers = Daemon(tmp, "warm2", 4, workers=2)
                daemons.append(workers)
            systems = systems_for(peers, warm, cold, only, given, workers)
            results["isolation"] = {s.name: ISOLATION[s.name] for s in systems}
            results["unavailable"] = {**left_out, **probe(systems, commands)}
            log(f"systems: {[s.name for s in systems]}; left out: {results['unavailable']}")
            log(f"latency: {plan.rounds} rounds")
            results["latency_s"], results["failures"] = measure_latency(systems, commands, plan)
            log(f"the cold start's tail: {plan.cold_samples} of each")
            results["cold_tail_s"] = measure_cold_tail(systems, commands["true"], plan)
            log("throughput")
            results["throughput_jobs_s"] = measure_throughput(systems, commands, plan)
            log("judge path")
            results["judge_s"] = measure_judge(warm, tmp, plan)
            log("pinned CPU-time spread")
            results["cpu_spread_s"] = measure_cpu_spread(warm, tmp, plan)
            log("sandboxd's costs")
            costs = supervisor_costs(warm, plan, out_dir, args.profile)
            costs.update(refill_rate(tmp, plan))
            costs.update(protocol_cost(plan))
            costs["peer_cpu_per_job_ms"] = peer_cpu(systems, commands, plan.cpu_jobs // 5)
            costs["peer_cpu_cgroup_per_job_ms"] = peer_cpu_cgroup(
                systems, commands, plan.cpu_jobs // 5,
                {n: t.accounting_dir() for n, t in given.items() if isinstance(t, Isolate)})
            results["costs"] = costs
            log("the HTTP front door against the msgpack socket")
            results["http"] = measure_http(tmp, plan, daemons)
            log("the cluster path against the local socket")
            results["cluster"] = measure_cluster(tmp, plan)
            for d in daemons:
                d.close()
            daemons.clear()
            results["leftovers_removed"] = peers.close()
            for close in peers_closing:
                results["leftovers_removed"] += close()
            peers_closing.clear()
    finally:
        for close in peers_closing:
            close()
        for d in daemons:
            d.close()
        shutil.rmtree(tmp, ignore_errors=True)
    steal1, busy1 = steal_and_busy()
    elapsed = time.monotonic() - t_start
    hz = os.sysconf("SC_CLK_TCK")
    machine_info = results["machine"]
    assert isinstance(machine_info, dict)
    machine_info.update(loadavg_end=os.getloadavg(), seconds=elapsed,
                        steal_cores=(steal1 - steal0) / hz / elapsed,
                        busy_cores=(busy1 - busy0) / hz / elapsed)

    from _report import write_outputs

    write_outputs(results, out_dir)
    log(f"wrote {out_dir}/results.json, results.md, latency.png, throughput.png")
    print((out_dir / "results.md").read_text())
    return 0


_t0 = time.monotonic()
_log_lock = threading.Lock()


def log(msg: str) -> None:
    with _log_lock:
        print(f"[{time.monotonic() - _t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
