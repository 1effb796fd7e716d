"""What every benchmark here shares: the baselines, measured the same way everywhere, and
the pieces that drive a real daemon (start it, talk to it, read its costs).

bubblewrap runs with the isolation docs/benchmarks.md gives it: ``--unshare-all``
(user, pid, net, ipc, uts and cgroup namespaces), read-only /usr, new /proc
and /dev, a tmpfs /tmp; no cgroup limits and no seccomp. The floor is a bare
``posix_spawn`` + ``waitpid`` of the same command.

The daemon is started and driven with the repository's test support
(``sandboxd_testing``: ``Daemon``, and its bare protocol ``Client`` rather than
``sandboxd_client``): one blocking socket, no threads, no retries, so that what
is timed is the daemon and the protocol, not a client library's conveniences.
Every bench script imports this module first; it puts the repository's root on
``sys.path`` so that ``sandboxd_testing`` (not installed) imports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# sandboxd_testing is not installed: it imports from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sandboxd_protocol as proto
from sandboxd.isolation import identity
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Client as BareClient
from sandboxd_testing.daemon import Daemon

COMMANDS = {"true": ["/bin/true"], "py": ["/usr/bin/python3", "-c", "pass"]}
BWRAP = [shutil.which("bwrap") or "/usr/bin/bwrap", "--unshare-all", "--die-with-parent",
         "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib",
         "/lib", "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev",
         "--tmpfs", "/tmp", "--"]
# The same limits for every system that has limits (runc's spec, sandboxd's job).
MEMORY_LIMIT = 256 << 20
PIDS_LIMIT = 64


def spawn_wait(argv: list[str]) -> float:
    """Seconds to spawn ``argv`` (stdin from, output to /dev/null) and reap it; raises if it
    failed."""
    t = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
    _, status = os.waitpid(pid, 0)
    if status:
        raise RuntimeError(f"{argv}: status {status}")
    return time.perf_counter() - t


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile by rank (no interpolation), as the daemon's own stats compute it."""
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


# ------------------------------------------------------------------ the daemon


class Client(BareClient):
    """One connection to the daemon, one job at a time, over the bare protocol; no read
    timeout (the socket stays blocking, so that no poll() is timed with each job)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, name="bench", timeout=None)

    def run_command(self, argv: list[str]) -> proto.JobResult:
        """Run ``argv`` in a container of the ``bash`` profile; raises unless it was ``ok``."""
        result = self.job(profile="bash", argv=tuple(argv), limits=proto.JobLimits(
            memory=MEMORY_LIMIT, pids=PIDS_LIMIT))
        if result.steps[0].verdict != "ok":
            raise RuntimeError(f"{argv}: {result.steps[0]}")
        return result


def start_daemon(tmp: Path, pool_size: int, concurrency: int, *, name: str = "",
                 pool_profiles: tuple[str, ...] = ("bash",),
                 cgroup: str | None = None, args: tuple[str, ...] = (),
                 **config: object) -> Daemon:
    """A daemon of its own below ``tmp`` (socket, state, log), answering once it is warm;
    stop it with ``stop(timeout=60)``.

    ``name`` tells several daemons of one benchmark apart (their cgroups are
    ``sandboxd-bench-<pid><name>``). With ``cgroup`` (a v1 cgroup directory), the
    daemon starts in it, before it makes anything, so that everything it runs is
    counted there. It logs warnings only: a line per job would be supervisor CPU.
    ``args`` (more ``sandboxd serve`` options) and ``config`` (more configuration keys)
    are for the HTTP front door's benchmark.
    """
    return Daemon(tmp, args, instance=f"bench-{os.getpid()}{name}", pool_size=pool_size,
                  pool_profiles=list(pool_profiles), concurrency=concurrency,
                  queue_length=256, log_level="warning", **config).start(cgroup=cgroup)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, all its threads, living or gone."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the supervisor's: its zygote)."""
    return [child for child, parent in leftovers.parents().items() if parent == pid]


def makers(pid: int) -> list[int]:
    """The daemon's container makers: its zygote, and the zygote's native fork server
    (which clones the containers: the inits are its children)."""
    zygotes = children(pid)
    return zygotes + [c for z in zygotes for c in children(z)]


def uss(pid: int) -> int:
    """Unique set size: the memory that would be freed if ``pid`` exited."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) * 1024 for line in f
                   if line.startswith(("Private_Clean:", "Private_Dirty:")))


def container_pids(zygotes: list[int] | None = None) -> dict[int, list[int]]:
    """{init pid: [init, job process]} for every waiting container (by our uid ranges).

    With ``zygotes`` (``makers``), only the containers these made (their inits are the
    fork server's children): other daemons on a shared machine have theirs.
    """
    ppid = leftovers.parents()
    listed = leftovers.container_processes()
    inits = {pid: [pid] for pid, uid, _name in listed
             if uid < identity.JOB_BASE and (zygotes is None or ppid.get(pid) in zygotes)}
    for pid, uid, _name in listed:
        if uid >= identity.JOB_BASE and ppid.get(pid) in inits:
            inits[ppid[pid]].append(pid)
    return inits


def throughput(fn: Callable[[], Callable[[], object]], clients: int, seconds: float) -> float:
    """Jobs/s of ``clients`` closed loops (threads) for ``seconds``.

    ``fn`` makes one client's state and returns the call that runs one job.
    Jobs started before the deadline are counted and waited for, and the
    time includes them, so slow systems are not flattered by a cut-off tail.
    """
    count = [0] * clients
    errors: list[BaseException] = []
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        try:
            one = fn()
            while time.monotonic() < stop:
                one()
                count[i] += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return sum(count) / (time.monotonic() - t)


def make_cpuset(name: str, cpus: str) -> str:
    """A v1 cpuset cgroup ``name`` beneath this process's own, limited to ``cpus``: where a
    benchmark puts a daemon to measure it on fewer CPUs. The caller removes it."""
    from sandboxd.cgroups import _fs

    mount = next(m for m in _fs.mounts() if m.fstype == "cgroup" and "cpuset" in m.options)
    own = next(p for k, p in _fs.own_cgroups().items() if "cpuset" in k.split(","))
    cpuset = f"{_fs.on_disk(mount, own)}/{name}"
    os.mkdir(cpuset)
    Path(cpuset, "cpuset.mems").write_text(Path(cpuset, "..", "cpuset.mems").read_text())
    Path(cpuset, "cpuset.cpus").write_text(cpus)
    return cpuset


def start_in(daemon: Daemon, acct: str | None, cpuset: str | None) -> None:
    """Start ``daemon`` inside the cgroup ``acct`` (``start(cgroup=)``) and, if given, the
    cpuset ``cpuset`` too, both before it makes anything: a shell (the daemon's
    ``prefix``, run after it entered ``acct``) writes the second cgroup.procs, then execs
    the daemon."""
    if cpuset is not None:
        daemon.prefix = ("/bin/sh", "-c", f'echo $$ > {cpuset}/cgroup.procs && exec "$@"',
                         "sh")
    daemon.start(cgroup=acct)


def side_by_side(loop: Callable[[Any], object], each: list[Any]) -> None:
    """``loop(x)`` for every ``x`` of ``each``, in a thread each, all at once; returns when
    every one has: the closed loops of a throughput measurement."""
    threads = [threading.Thread(target=loop, args=(x,)) for x in each]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def c_loop_rounds(source: Path, variants: Callable[[Path], dict[str, list[str]]], *,
                  children: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    """Build ``source`` (a C loop of ``children`` forked children that prints one JSON
    object) and run it once per variant per round, in an order that rotates, so that the
    machine's drift falls on every variant alike. ``variants`` gets the temporary
    directory (for files the variants need) and gives each variant's extra arguments."""
    tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-cloop-"))
    try:
        exe = tmp / source.stem
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(source)], check=True)
        extra = variants(tmp)
        names = list(extra)
        got: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                out = subprocess.run([str(exe), str(children), *extra[name]], check=True,
                                     capture_output=True, text=True).stdout
                got[name].append(json.loads(out))
        return got
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def c_loop_main(source: Path, variants: Callable[[Path], dict[str, list[str]]],
                summarize: Callable[[dict[str, list[dict[str, float]]]], dict[str, Any]], *,
                children: int) -> int:
    """A C loop's whole script: ``--children``, ``--rounds`` and ``--json``, the rounds
    (``c_loop_rounds``), ``summarize`` (which prints), and the JSON of both."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--children", type=int, default=children)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    got = c_loop_rounds(source, variants, children=args.children, rounds=args.rounds)
    summary = summarize(got)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": got, "summary": summary}, indent=1))
    return 0
