"""Soak: thousands of mixed jobs from many clients, the daemon SIGKILLed and restarted once.

What it checks, and reports as counts:

- every job the daemon **accepted** got exactly one answer (a result, or a job
  error), unless its client saw the connection fail (the SIGKILL) or hung up
  itself (the "disconnect" kind): nothing accepted is lost, nothing answered
  twice;
- verdicts are the ones each kind of job must get (ok, runtime error, CPU and
  wall time limits, memory limit, output limit, cancelled, streamed output
  equal to the result's);
- the SIGKILLed daemon's containers die with it (the death-signal chain), and
  the restarted one removes its cgroups, then serves;
- afterwards: no process, cgroup or mount of ours, no SysV IPC object on the
  host, the daemon's descriptors and memory back near where they started.

    sudo .venv/bin/python tests/soak/soak.py --jobs 3000 --clients 16   # 90 s on 2 CPUs

``soak`` is also called by tests/soak/test_soak.py for a bounded run, in every
run of the suite (it is marked slow, not skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# Run as a script, this needs the repository's root for sandboxd_testing (not installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import sandboxd_protocol as proto
from sandboxd_testing import leftovers  # the suite's definition of "left behind"
from sandboxd_testing.daemon import Client, Daemon, fds_but_cgroup_files

MiB = 1 << 20

# ------------------------------------------------------------------- the jobs


@dataclass(frozen=True)
class Kind:
    """One kind of job: how to submit it, what its client does, what it must get."""

    weight: float
    profile: str
    files: dict[str, bytes]
    limits: proto.JobLimits | None = None
    verdicts: tuple[str, ...] = ("ok",)
    action: str = ""  # "cancel", "disconnect" (after acceptance) or "" (wait)
    stream: bool = False


SLEEPER = {"main.sh": b"echo started; sleep 10"}
KINDS: dict[str, Kind] = {
    "ok": Kind(30, "bash", {"main.sh": b"echo ok"}),
    "python": Kind(8, "python3", {"main.py": b"print(sum(range(1000)))"}),
    "runtime_error": Kind(10, "bash", {"main.sh": b"echo failing >&2; exit 3"},
                          verdicts=("runtime_error",)),
    "cpu_limit": Kind(8, "bash", {"main.sh": b"while :; do :; done"},
                      proto.JobLimits(cpu_time=0.2, wall_time=5.0), ("time_limit",)),
    "wall_limit": Kind(5, "bash", {"main.sh": b"sleep 5"},
                       proto.JobLimits(wall_time=0.3), ("time_limit",)),
    "memory_limit": Kind(8, "python3", {"main.py": b"x = b'x' * (256 << 20)"},
                         proto.JobLimits(memory=48 * MiB), ("memory_limit",)),
    "output_limit": Kind(8, "bash", {"main.sh": b"head -c 2000000 /dev/zero"},
                         proto.JobLimits(output=64 * 1024), ("output_limit",)),
    "cancelled": Kind(8, "bash", SLEEPER, verdicts=("cancelled",), action="cancel",
                      stream=True),
    "disconnect": Kind(5, "bash", SLEEPER, verdicts=(), action="disconnect", stream=True),
    "streaming": Kind(10, "bash", {"main.sh": b"for i in 1 2 3 4 5; do echo line $i; "
                                              b"echo err $i >&2; sleep 0.01; done"},
                      stream=True),
}


@dataclass
class Counts:
    """What happened to every job, by the clients' own accounts."""

    submitted: int = 0
    accepted: int = 0
    answered: int = 0  # results and job errors after acceptance
    refused: Counter[str] = field(default_factory=Counter)  # job errors instead of acceptance
    verdicts: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    disconnected: int = 0  # accepted, then the client hung up on purpose
    connection_failed: int = 0  # accepted, then the connection failed (the SIGKILL)
    failed_before_acceptance: int = 0
    wrong: list[str] = field(default_factory=list)  # verdicts or outputs not as expected
    lost: list[str] = field(default_factory=list)  # accepted, never answered, no failure seen
    duplicates: list[str] = field(default_factory=list)

    def invariant_holds(self) -> bool:
        return (self.accepted == self.answered + self.disconnected + self.connection_failed
                and not self.lost and not self.duplicates)


# ----------------------------------------------------------------- the daemon


def soak_daemon(tmp: Path, **config: Any) -> Daemon:
    """``sandboxd serve`` below ``tmp``, instance ``soak-<pid>``; SIGKILL and restart
    (``stop(SIGKILL)``, ``start()``) keep the config and the log."""
    return Daemon(tmp, **{"instance": f"soak-{os.getpid()}",
                          "pool_profiles": ["bash", "python3"], "pool_size": 2,
                          "queue_length": 256, "idle_timeout": 30.0, **config})


def wait_idle(daemon: Daemon, timeout: float = 60.0) -> None:
    """Until no job runs or waits, every pool is full and only the asking client is
    connected; then a moment more (used containers are destroyed after their results)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = daemon.stats()
        if not st.jobs_running and not st.jobs_queued and all(
                p.warm >= p.target for p in st.pools) and st.connections <= 1:
            break
        time.sleep(0.1)
    time.sleep(0.5)


def fds(daemon: Daemon) -> int:
    """Descriptors, less the counter files each job cgroup keeps open (recycled cgroups:
    their number follows the peak concurrency, not the jobs run)."""
    return fds_but_cgroup_files(daemon.pid)


def connect(path: str, timeout: float = 60.0) -> Client:
    """Connect, retrying while the daemon is down (the restart) or busy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Client(path, name="soak", timeout=120)
        except (OSError, ConnectionError, proto.RemoteProtocolError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ------------------------------------------------------------------ one job


class StaleConnection(Exception):
    """The submission could not even be sent: the daemon never saw this job."""


def run_one(c: Client, job_id: str, kind: Kind, counts: Counts, lock: threading.Lock) -> bool:
    """Submit, act, and account for one job; False if the connection is gone after it.

    Raises ``StaleConnection`` when the connection was already dead (the daemon was
    killed, or dropped it as idle, between two jobs): the caller submits again.
    """
    try:
        c.send(proto.JobSubmission(id=job_id, profile=kind.profile, files=kind.files,
                                   limits=kind.limits, stream=kind.stream))
    except OSError as e:
        raise StaleConnection(str(e)) from e
    accepted = cancelled = False
    chunks: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    try:
        while True:
            ev = c.next()
            if isinstance(ev, proto.JobAcceptance) and ev.id == job_id:
                accepted = True
                with lock:
                    counts.accepted += 1
                if kind.action == "disconnect":
                    c.next()  # its first output: it runs; then hang up
                    with lock:
                        counts.disconnected += 1
                    c.close()
                    return False
            elif isinstance(ev, proto.OutputChunk) and ev.id == job_id:
                chunks[ev.stream] += ev.data
                if kind.action == "cancel" and not cancelled:
                    c.send(proto.Cancellation(id=job_id))
                    cancelled = True
            elif isinstance(ev, proto.ErrorReport) and ev.id == job_id:
                with lock:
                    if accepted:
                        counts.answered += 1
                        counts.wrong.append(f"{job_id}: job error {ev.code}: {ev.message}")
                    else:
                        counts.refused[ev.code] += 1
                return True
            elif isinstance(ev, proto.JobResult) and ev.id == job_id:
                step = ev.steps[0] if ev.steps else ev.compile
                verdict = step.verdict if step else "?"
                with lock:
                    counts.answered += 1
                    counts.verdicts[verdict] += 1
                    if verdict not in kind.verdicts:
                        counts.wrong.append(f"{job_id}: {verdict} ({step and step.reason})")
                    if kind.stream and kind.action == "" and step is not None and (
                            chunks["stdout"] != step.stdout or chunks["stderr"] != step.stderr):
                        counts.wrong.append(f"{job_id}: streamed output differs from the result")
                return True
    except (OSError, ConnectionError):
        with lock:
            if accepted:
                counts.connection_failed += 1
            else:
                counts.failed_before_acceptance += 1
        return False
    except proto.RemoteProtocolError as e:  # e.g. a second result for one job
        with lock:
            counts.duplicates.append(f"{job_id}: {e.code}: {e.message}")
        return False


# ------------------------------------------------------------------- the soak


@dataclass
class Report:
    jobs: int
    clients: int
    seconds: float = 0.0
    counts: Counts = field(default_factory=Counts)
    killed_at_accepted: int = 0
    # Container processes of the killed daemon still alive 5 s after the SIGKILL. On
    # cgroup v1 a job whose cgroup the daemon had frozen (to kill it: freeze, SIGKILL,
    # thaw) when it was killed stays frozen, deaf to SIGKILL, its init waiting for it,
    # until the next daemon removes the stale cgroups: each survivor says so.
    containers_left_by_the_kill: int = 0
    kill_survivors: list[str] = field(default_factory=list)
    kill_survivors_after_restart: int = 0
    stale_cgroups_removed: bool = False
    rss_kib: dict[str, int] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    leftovers: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    log_errors: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return (self.counts.invariant_holds() and not self.counts.wrong
                and frozen_explained(self.kill_survivors)
                and not self.kill_survivors_after_restart and self.stale_cgroups_removed
                and not self.leftovers and self.exit_code == 0 and not self.log_errors)

    def summary(self) -> str:
        c = self.counts
        return (f"{self.jobs} jobs from {self.clients} clients in {self.seconds:.0f} s: "
                f"submitted {c.submitted}, accepted {c.accepted}, answered {c.answered}, "
                f"connection failed {c.connection_failed} (SIGKILL at {self.killed_at_accepted} "
                f"accepted), disconnected {c.disconnected}, refused {dict(c.refused)}, "
                f"failed before acceptance {c.failed_before_acceptance}; verdicts "
                f"{dict(sorted(c.verdicts.items()))}; wrong {len(c.wrong)}, lost {len(c.lost)},"
                f" duplicates {len(c.duplicates)}; alive 5 s after the kill "
                f"{self.kill_survivors or 0}, after the restart "
                f"{self.kill_survivors_after_restart}; leftovers {self.leftovers or 'none'}; "
                f"RSS KiB {self.rss_kib}; fds {self.fds}; exit {self.exit_code}")


def soak(tmp: Path, jobs: int, clients: int, seed: int = 1,
         kill_after: float = 0.5, **config: Any) -> Report:
    """Run ``jobs`` jobs from ``clients`` threads; SIGKILL the daemon once ``kill_after`` of
    them were accepted, restart it, go on; check and count everything."""
    report = Report(jobs, clients)
    counts = report.counts
    before = leftovers.snapshot(ipc=True)
    daemon = soak_daemon(tmp, **config)
    t0 = time.monotonic()
    daemon.start(60)
    wait_idle(daemon)
    report.rss_kib["first_start"] = daemon.rss_kib()
    lock = threading.Lock()
    # Between the SIGKILL and the restart, the dying containers' inits may print a
    # traceback (their control socket broke): the death of the daemon, not a bug.
    kill_window = [0, 0]
    up = threading.Event()
    up.set()
    names = list(KINDS)
    weights = [KINDS[n].weight for n in names]

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        c: Client | None = None
        while True:
            with lock:
                if counts.submitted >= jobs:
                    break
                counts.submitted += 1
                n = counts.submitted
            name = rng.choices(names, weights)[0]
            with lock:
                counts.by_kind[name] += 1
            for _attempt in range(3):
                up.wait(120)
                try:
                    if c is None:
                        c = connect(daemon.socket)
                    done = run_one(c, f"{k}-{n}", KINDS[name], counts, lock)
                except StaleConnection:
                    done = False
                except (OSError, ConnectionError, proto.RemoteProtocolError):
                    with lock:
                        counts.failed_before_acceptance += 1
                    break
                else:
                    if not done:
                        with contextlib.suppress(OSError):
                            c.close()
                        c = None
                    break
                with contextlib.suppress(OSError):
                    c.close()  # stale: submit again on a new connection
                c = None
        if c is not None:
            c.close()

    def killer() -> None:
        target = int(jobs * kill_after)
        while True:
            with lock:
                if counts.accepted >= target or counts.submitted >= jobs:
                    report.killed_at_accepted = counts.accepted
                    break
            time.sleep(0.01)
        up.clear()
        old_zygotes = leftovers.descendants(daemon.pid)
        report.rss_kib["at_kill"] = daemon.rss_kib()
        kill_window[0] = daemon.log.stat().st_size
        daemon.stop(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            mine = _orphans(old_zygotes)
            if not mine:
                break
            time.sleep(0.05)
        survivors = _orphans(old_zygotes)
        report.kill_survivors = [_describe(p) for p in sorted(survivors)]
        report.containers_left_by_the_kill = len(survivors)
        offset = kill_window[1] = daemon.log.stat().st_size
        daemon.start(60)
        report.stale_cgroups_removed = "event=removed_stale" in daemon.log.read_text()[offset:]
        wait_idle(daemon)
        report.kill_survivors_after_restart = len(_orphans(survivors))
        report.rss_kib["restart"] = daemon.rss_kib()
        report.fds["restart"] = fds(daemon)
        up.set()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    kt = threading.Thread(target=killer)
    kt.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    kt.join()
    wait_idle(daemon)
    report.rss_kib["end"] = daemon.rss_kib()
    report.fds["end"] = fds(daemon)
    report.seconds = time.monotonic() - t0
    report.exit_code = daemon.stop(timeout=60)
    log = daemon.log.read_bytes()
    log = log[:kill_window[0]] + log[kill_window[1]:]
    report.log_errors = [line for line in log.decode(errors="replace").splitlines()
                         if "level=error" in line or "Traceback" in line][:20]
    report.leftovers = leftovers.new_leftovers(before, settle=10.0,
                                               view=leftovers.only_ours(daemon.instance))
    return report


def _describe(pid: int) -> str:
    """"pid comm state freezer-state" of a process, for the report."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
        freezer = next((line.split(":", 2)[2] for line in
                        Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                        if line.split(":")[1] == "freezer"), "")
    except (OSError, IndexError):
        return f"{pid} gone"
    try:  # the root cgroup (a container init's, if the daemon ran there) has no state file
        frozen = Path(f"/sys/fs/cgroup/freezer{freezer}/freezer.state").read_text().strip()
    except OSError:
        frozen = "-"
    return f"{pid} {comm} {state} {frozen}"


def frozen_explained(survivors: list[str]) -> bool:
    """Every survivor is a frozen job process, or a container init (in no job cgroup)
    whose namespace still holds one: the v1 freezer's limitation, not a lost process.
    The init is the native ``sandboxd-init`` (``python`` before the container side moved
    to C; a clean-clone CI run met an unexplained ``sandboxd-init`` survivor)."""
    frozen = [s for s in survivors if s.endswith("FROZEN")]
    return all(s.endswith(("FROZEN", "gone"))
               or (frozen and (" sandboxd-init " in s or " python " in s))
               for s in survivors)


def _orphans(pids: set[int]) -> set[int]:
    """Which of these processes (the killed daemon's tree) still live. A zombie does not:
    it waits for a reaper, which is init on a host and the test run itself under a child
    subreaper (scripts/test-mine.sh), which reaps only its own children."""
    return {p for p in pids if _alive(p)}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def as_json(report: Report) -> dict[str, Any]:
    """The report as plain data (``asdict`` would rebuild each Counter from pairs)."""
    out = {f.name: getattr(report, f.name) for f in fields(report)}
    out["counts"] = {f.name: (dict(v) if isinstance(v := getattr(report.counts, f.name),
                                                     Counter) else v)
                     for f in fields(report.counts)}
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="also write the report here")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root (namespaces, cgroups)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sandboxd-soak-") as d:
        report = soak(Path(d), a.jobs, a.clients, a.seed, concurrency=a.concurrency)
    print(report.summary())
    for line in report.counts.wrong[:20] + report.counts.lost + report.counts.duplicates:
        print("WRONG", line)
    for line in report.log_errors:
        print("LOG", line)
    if a.json:
        Path(a.json).write_text(json.dumps(as_json(report), indent=2, default=str))
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
