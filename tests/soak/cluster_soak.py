"""Cluster soak: mixed jobs from many submitters through Redis to two nodes; one node
SIGKILLed and restarted, Redis restarted once, meanwhile.

What it checks, and reports as counts:

- every job the cluster **accepted** (queued in Redis) got exactly one answer at its
  submitter (``Client("redis://...")``), with the verdict (and output) its kind must
  get, even when the node running it was killed (another node reruns it after the
  claim time) or Redis restarted (its append-only file keeps the queue);
- exactly one stored answer per accepted job, nothing left queued or pending;
- a submission that meets the Redis restart waits for Redis (sent again), and one
  refused after that wait would be a clear error, not a hang;
- afterwards: both nodes exit 0, nothing of theirs is left (processes, cgroups,
  mounts), and their logs hold no error but the Redis outage's warnings.

    sudo .venv/bin/python tests/soak/cluster_soak.py --jobs 3000 --clients 16

``soak`` is also called by tests/soak/test_cluster_soak.py for a bounded run.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sandboxd_client import Client, SandboxdError
from sandboxd_protocol import cluster
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon
from sandboxd_testing.redis_server import RedisServer

MiB = 1 << 20


@dataclass(frozen=True)
class Kind:
    weight: float
    profile: str
    files: dict[str, str]
    limits: dict[str, Any] = field(default_factory=dict)
    verdict: str = "ok"
    stdout: str | None = None
    action: str = ""  # "cancel", "stream"


KINDS: dict[str, Kind] = {
    "ok": Kind(30, "bash", {"main.sh": "echo ok"}, stdout="ok\n"),
    "python": Kind(8, "python3", {"main.py": "print(sum(range(1000)))"}, stdout="499500\n"),
    "runtime_error": Kind(10, "bash", {"main.sh": "echo failing >&2; exit 3"},
                          verdict="runtime_error"),
    "cpu_limit": Kind(6, "bash", {"main.sh": "while :; do :; done"},
                      {"cpu_time": 0.2, "wall_time": 5.0}, "time_limit"),
    "memory_limit": Kind(6, "python3", {"main.py": "x = b'x' * (256 << 20)"},
                         {"memory": 48 * MiB}, "memory_limit"),
    "output_limit": Kind(6, "bash", {"main.sh": "head -c 2000000 /dev/zero"},
                         {"output": 64 * 1024}, "output_limit"),
    "slow": Kind(10, "bash", {"main.sh": "sleep 0.5; echo slow"}, stdout="slow\n"),
    "streaming": Kind(10, "bash", {"main.sh": "for i in 1 2 3; do echo line $i; "
                                              "sleep 0.02; done"},
                      stdout="line 1\nline 2\nline 3\n", action="stream"),
    "cancelled": Kind(6, "bash", {"main.sh": "echo started; sleep 10"}, verdict="cancelled",
                      action="cancel"),
}


@dataclass
class Report:
    jobs: int
    submitted: int = 0
    accepted: int = 0
    answered: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # not queued (Redis down...)
    verdicts: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # accepted, no answer in time
    stored_answers: int = -1
    queued_left: int = -1
    pending_left: int = -1
    claimed: int = 0
    exit_codes: list[int] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    leftovers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.submitted} submitted, {self.accepted} accepted, {self.answered} "
                f"answered, refused {dict(self.refused)}, verdicts {dict(self.verdicts)}; "
                f"stored answers {self.stored_answers}, left queued {self.queued_left}, "
                f"pending {self.pending_left}; claimed after the kill {self.claimed}; "
                f"wrong {len(self.wrong)}, lost {len(self.lost)}; exits {self.exit_codes}; "
                f"{self.seconds:.1f} s")


def node(tmp: Path, redis: RedisServer, name: str) -> Daemon:
    return Daemon(tmp, instance=f"soakc-{os.getpid()}-{name}", redis=redis.url, node_id=name,
                  pool_profiles=["bash", "python3"], pool_size=2, concurrency=2,
                  redis_claim_idle=2.0, redis_result_ttl=600.0)


def redis_cli(redis: RedisServer, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(redis.port), *args], capture_output=True,
                          text=True, check=True).stdout.strip()


def run_one(c: Client, kind: Kind, report: Report, lock: threading.Lock, tag: str) -> None:
    try:
        job = c.submit(kind.profile, kind.files, limits=kind.limits or None,
                       stream=kind.action in ("stream", "cancel"))
    except SandboxdError as e:  # not queued: Redis away (a clear error, not a hang)
        with lock:
            report.refused[getattr(e, "code", type(e).__name__)] += 1
        return
    with lock:
        report.accepted += 1
    try:
        if kind.action == "cancel":
            try:
                first = job.next_output(timeout=5)
            except TimeoutError:  # written while Redis was away: not streamed (documented)
                first = None
            else:
                if first is None or first.text != "started\n":
                    with lock:
                        report.wrong.append(f"{tag}: first output {first!r}")
            job.cancel()
        streamed = [o.text for o in job] if kind.action == "stream" else None
        r = job.result(timeout=180)
    except Exception as e:
        with lock:
            report.lost.append(f"{tag}: {type(e).__name__}: {e}")
        return
    with lock:
        report.answered += 1
        report.verdicts[str(getattr(r.verdict, "value", r.verdict))] += 1
        if r.verdict != kind.verdict:
            report.wrong.append(f"{tag}: verdict {r.verdict} ({r.steps[0].reason}), "
                                f"wanted {kind.verdict}")
        elif kind.stdout is not None and r.text != kind.stdout:
            report.wrong.append(f"{tag}: stdout {r.text!r}")
        elif streamed is not None and not in_order(streamed, r.text):
            # Output written while Redis is away is not streamed (docs/cluster.md): chunks
            # may be missing, but what came must be the result's, in its order, once.
            report.wrong.append(f"{tag}: streamed {streamed!r}, result {r.text!r}")


def in_order(chunks: list[str], text: str) -> bool:
    """Whether ``chunks`` are pieces of ``text`` in its order (gaps allowed), run after
    run: a job rerun after its node died streams again from its start, after what the
    earlier run had streamed (docs/cluster.md)."""
    at = 0
    for chunk in chunks:
        found = text.find(chunk, at)
        if found < 0:
            found = text.find(chunk)  # a rerun's output, from the start again
            if found < 0:
                return False
        at = found + len(chunk)
    return True


def soak(tmp: Path, jobs: int, clients: int, seed: int = 1) -> Report:
    report = Report(jobs)
    before = leftovers.snapshot()
    redis = RedisServer(tmp).start()
    nodes = [node(tmp, redis, "soak-n1"), node(tmp, redis, "soak-n2")]
    t0 = time.monotonic()
    lock = threading.Lock()
    names = list(KINDS)
    weights = [KINDS[n].weight for n in names]
    try:
        for n in nodes:
            n.start(60)

        def submitter(k: int) -> None:
            rng = random.Random(seed * 1000 + k)
            with Client(redis.url, timeout=60) as c:
                while True:
                    with lock:
                        if report.submitted >= jobs:
                            return
                        report.submitted += 1
                        i = report.submitted
                    name = rng.choices(names, weights)[0]
                    run_one(c, KINDS[name], report, lock, f"{name}#{i}")

        def chaos() -> None:
            """At a third of the jobs, SIGKILL node 1 and restart it; at two thirds,
            restart Redis (gracefully: its append-only file is flushed)."""
            for at, act in ((jobs // 3, "kill"), (2 * jobs // 3, "redis")):
                while True:
                    with lock:
                        if report.accepted >= at or report.submitted >= jobs:
                            break
                    time.sleep(0.01)
                if act == "kill":
                    nodes[0].stop(signal.SIGKILL)
                    time.sleep(1.0)
                    nodes[0].start(60)
                else:
                    redis.stop()
                    time.sleep(0.5)
                    redis.start()

        threads = [threading.Thread(target=submitter, args=(k,)) for k in range(clients)]
        ct = threading.Thread(target=chaos)
        ct.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ct.join()
        deadline = time.monotonic() + 30  # the last acknowledgements
        while time.monotonic() < deadline:
            report.queued_left = int(redis_cli(redis, "XLEN", cluster.JOBS))
            report.pending_left = int(redis_cli(redis, "XPENDING", cluster.JOBS,
                                                cluster.GROUP).split()[0])
            if not report.queued_left and not report.pending_left:
                break
            time.sleep(0.2)
        report.stored_answers = len(redis_cli(redis, "KEYS", "sandboxd:result:*").split())
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                report.exit_codes.append(n.stop(timeout=60))
        redis.stop()
    report.seconds = time.monotonic() - t0
    for n in nodes:
        text = n.log.read_text(errors="replace")
        report.claimed += text.count("event=job_claimed")
        report.log_errors += [line for line in text.splitlines()
                              if "level=error" in line or "Traceback" in line][:10]
    report.leftovers = leftovers.new_leftovers(
        before, settle=10.0, view=leftovers.only_ours(f"soakc-{os.getpid()}"))
    return report


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sandboxd-cluster-soak-") as tmp:
        report = soak(Path(tmp), a.jobs, a.clients, a.seed)
    print(report.summary())
    for line in report.wrong[:20] + report.lost[:20] + report.log_errors[:20]:
        print(" ", line)
    ok = (not report.wrong and not report.lost and report.answered == report.accepted
          and report.stored_answers == report.accepted and not report.leftovers
          and report.exit_codes == [0, 0])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
