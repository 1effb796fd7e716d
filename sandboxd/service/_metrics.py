"""What operators chart: jobs by profile and verdict, CPU seconds, queue-wait and run-time
histograms. Plain counters, no exposition format: a front door renders them (the HTTP
front door's ``/metrics`` in Prometheus's text format).

Strategy: one ``JobMetrics`` per service, updated once per finished job by
``JobService._account``; every figure only grows (Prometheus counters and
cumulative histograms), so a scrape never needs a lock or a reset.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from sandboxd.jobs import JobOutcome

# Seconds. Queue waits are mostly sub-millisecond on an idle daemon and grow in whole
# jobs' run times when it is busy; run times span a hello world to a long batch.
QUEUE_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                      2.5, 5.0, 10.0, 30.0, 60.0)
RUN_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0, 600.0)


@dataclass(slots=True)
class Histogram:
    """A cumulative histogram: ``counts[i]`` observations <= ``buckets[i]``, then +Inf."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        for i in range(bisect.bisect_left(self.buckets, value), len(self.buckets)):
            self.counts[i] += 1
        self.sum += value
        self.count += 1


def final_verdict(outcome: JobOutcome) -> str:
    """The verdict that decides a job: a failed compile, else the first failed run,
    else ``ok`` (the rule of the client's ``JobResult.final``)."""
    if outcome.compile is not None and (outcome.compile.result.verdict != "ok"
                                        or not outcome.steps):
        return outcome.compile.result.verdict
    for step in outcome.steps:
        if step.result.verdict != "ok":
            return step.result.verdict
    return "ok" if outcome.steps else "sandbox_error"


@dataclass(slots=True)
class JobMetrics:
    """Counts of finished jobs; only ever grow."""

    jobs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (profile, verdict)
    cpu_seconds: Counter[str] = field(default_factory=Counter)  # profile -> CPU s of its steps
    queue_wait: Histogram = field(default_factory=lambda: Histogram(QUEUE_WAIT_BUCKETS))
    run_time: Histogram = field(default_factory=lambda: Histogram(RUN_TIME_BUCKETS))
    # The HTTP front door's, kept here so that a worker's siblings see them too
    # (front/_siblings.py): requests answered by (route, method, status), and in flight.
    http: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    http_in_flight: int = 0

    def record(self, profile: str, outcome: JobOutcome, queue_wait: float,
               run_time: float) -> None:
        self.jobs[profile, final_verdict(outcome)] += 1
        steps = [s.result for s in outcome.steps]
        if outcome.compile is not None:
            steps.append(outcome.compile.result)
        self.cpu_seconds[profile] += sum(r.cpu_time for r in steps)
        self.queue_wait.observe(max(0.0, queue_wait))
        self.run_time.observe(max(0.0, run_time))
