"""Cost of the protocol per job: encode + decode + validate of a submission and its result.

A "round trip" is what one job costs the two ends together, on one core:
the client encodes a ``JobSubmission`` (a 2 KB source file, 1 KB of stdin),
the server decodes and validates it, encodes a ``JobAcceptance`` and a
``JobResult`` (one step, a few hundred bytes of output), and the client decodes
and validates both. No sockets: this is the protocol's own cost, which the
daemon's latency budget must afford. Target: under 50 µs.

Time is the process's CPU time (``time.process_time``), so that other work on
a shared machine does not count against us; the best of several samples is
the figure to quote (as ``timeit`` does), the median shows the spread.

Run: ``.venv/bin/python bench/bench_protocol.py [--jobs N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

from sandboxd_protocol import (
    CLIENT,
    NEED_DATA,
    SERVER,
    Connection,
    Hello,
    JobAcceptance,
    JobLimits,
    JobResult,
    JobSubmission,
    SizeLimits,
    StepResult,
    Welcome,
)

SOURCE = (b"import sys\n" + b"# padding line for a realistic source file\n" * 60)[:2048]
STDIN = bytes(range(32, 127)) * 10 + b"\n" * 74  # 1024 bytes


def _pair(jobs: int) -> tuple[Connection, Connection]:
    limits = SizeLimits(max_jobs_in_flight=max(jobs, 1))
    client = Connection(CLIENT, limits=limits)
    server = Connection(SERVER, limits=limits)
    server.receive_data(client.send(Hello(client="bench")))
    assert server.next_event() == Hello(client="bench")
    client.receive_data(server.send(Welcome(server="bench", limits=limits)))
    assert isinstance(client.next_event(), Welcome)
    return client, server


def run(jobs: int) -> float:
    """Seconds for ``jobs`` full round trips."""
    client, server = _pair(jobs)
    ids = [f"job-{i}" for i in range(jobs)]
    limits = JobLimits(cpu_time=2.0, wall_time=5.0, memory=256 * 1024 * 1024, pids=64)
    step = StepResult(
        verdict="ok",
        exit_code=0,
        cpu_time=0.012345,
        user_time=0.010001,
        sys_time=0.002344,
        wall_time=0.020001,
        memory_peak=9_437_184,
        stdout=b"hello, world\n" * 20,
        stderr=b"",
    )
    gc_was = gc.isenabled()
    gc.disable()
    t0 = time.process_time()
    for job_id in ids:
        sub = JobSubmission(
            id=job_id,
            profile="python3",
            files={"main.py": SOURCE},
            stdin=STDIN,
            argv=("python3", "main.py"),
            limits=limits,
        )
        server.receive_data(client.send(sub))
        got = server.next_event()
        client.receive_data(server.send(JobAcceptance(id=job_id)))
        client.receive_data(server.send(JobResult(id=job_id, steps=(step,))))
        client.next_event()
        res = client.next_event()
        if client.next_event() is not NEED_DATA or got != sub or res.steps[0] != step:
            raise AssertionError("round trip lost something")
    elapsed = time.process_time() - t0
    if gc_was:
        gc.enable()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5_000, help="round trips per sample")
    parser.add_argument("--repeat", type=int, default=11, help="samples")
    args = parser.parse_args(argv)
    run(min(args.jobs, 1000))  # warm up
    samples = [run(args.jobs) / args.jobs * 1e6 for _ in range(args.repeat)]
    best, median = min(samples), statistics.median(samples)
    print(
        f"protocol round trip (submit 2 KB file + 1 KB stdin, accepted, result): "
        f"{best:.1f} µs per job, CPU time on one core (best of {args.repeat} x {args.jobs}; "
        f"median {median:.1f}, max {max(samples):.1f}; target < 50 µs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
