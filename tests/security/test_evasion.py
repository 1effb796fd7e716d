"""Evasion: a job tries to escape its time limits or to outlive itself.

CPU time is the job cgroup's counter, so it counts every process and thread
(``spread``); a limit freezes the cgroup and SIGKILLs everything in it, so
ignoring signals, stopping oneself or raising RLIMIT_CPU changes nothing; and
once the job's own process has ended, whatever it left (orphans, a daemon,
stopped children, zombies) is killed before the result is sent. The
suite-wide check then proves no process of the job survived. Every process of
evade.c stops by itself after 10 s at most, in case the sandbox did not.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from attacks import BOMB, AttackDaemon, Canary, assert_unharmed, lines_of

import sandboxd_protocol as proto

pytestmark = pytest.mark.root

# How far past its CPU limit a job may run: the watchdog promises a few ms (tested to 50
# ms elsewhere); this machine is shared and noisy.
CPU_SLACK = 0.1


def evade(ad: AttackDaemon, probes: dict[str, Path], mode: str, n: int = 8,
          limits: proto.JobLimits = BOMB) -> proto.StepResult:
    return ad.probe(probes["evade"], mode, "10", str(n), limits=limits)


def test_cpu_spread_over_many_processes_counts_in_full(attack_daemon: AttackDaemon,
                                                       probes: dict[str, Path],
                                                       host_canary: Canary) -> None:
    """Nine burners on two CPUs reach the 1 s CPU limit in about half a second of wall
    time: the limit is on the sum, not per process."""
    step = evade(attack_daemon, probes, "spread", 8)
    assert step.verdict == "time_limit" and step.reason == "cpu", step
    assert BOMB.cpu_time is not None and BOMB.wall_time is not None
    assert BOMB.cpu_time <= step.cpu_time <= BOMB.cpu_time + CPU_SLACK, step
    assert step.wall_time < BOMB.wall_time, step
    assert_unharmed(host_canary, attack_daemon, step)


def test_orphaned_burners_die_with_the_job(attack_daemon: AttackDaemon,
                                           probes: dict[str, Path],
                                           host_canary: Canary) -> None:
    """Double-forked burners, left to the container's init: the job's process exits at
    once, and they are killed before the result (no CPU is spent unaccounted)."""
    step = evade(attack_daemon, probes, "orphans", 8)
    assert step.verdict == "ok" and lines_of(step) == ["orphans: 8 burners left to init"], step
    assert step.wall_time < 1.0 and step.cpu_time < 0.5, step
    assert_unharmed(host_canary, attack_daemon, step)


def test_raising_rlimit_cpu_with_a_sigxcpu_handler_does_not_help(
        attack_daemon: AttackDaemon, probes: dict[str, Path]) -> None:
    """The soft limit already equals the hard one, the hard one cannot be raised, and the
    cgroup's counter is what decides anyway."""
    step = evade(attack_daemon, probes, "sigxcpu")
    assert step.verdict == "time_limit" and step.reason == "cpu", step
    assert lines_of(step)[0].endswith("hard to infinity Operation not permitted"), step
    assert BOMB.cpu_time is not None and step.cpu_time <= BOMB.cpu_time + CPU_SLACK, step


@pytest.mark.parametrize("mode", ["sigterm", "stopped", "zombies-wait"])
def test_ignoring_signals_or_stopping_meets_the_wall_clock(attack_daemon: AttackDaemon,
                                                           probes: dict[str, Path],
                                                           mode: str) -> None:
    """Every catchable signal ignored; a job stopped (SIGSTOP) with a stopped child; a
    parent sitting on unreaped zombies: the freezer and SIGKILL end each at the wall
    limit."""
    limits = dataclasses.replace(BOMB, wall_time=1.0)
    step = evade(attack_daemon, probes, mode, limits=limits)
    assert step.verdict == "time_limit" and step.reason == "wall", step
    # The deadline runs from the supervisor's send, the reported wall time from the
    # init's hand-over: the latter may read a few ms short of the limit.
    assert 0.9 <= step.wall_time <= 2.0, step


@pytest.mark.parametrize("mode", ["daemon", "stopped-orphan", "zombies"])
def test_what_the_job_leaves_running_is_killed(attack_daemon: AttackDaemon,
                                               probes: dict[str, Path],
                                               host_canary: Canary, mode: str) -> None:
    """A classic daemon (fork, setsid, fork, stdio closed), a stopped orphan, zombies:
    the job's process exits 0 at once, the rest is gone before the result (the
    suite-wide check fails the test if any process of the job is left)."""
    step = evade(attack_daemon, probes, mode, 20)
    assert step.verdict == "ok", step
    assert step.wall_time < 1.0, step
    assert_unharmed(host_canary, attack_daemon, step)


def test_cancel_ends_a_job_that_ignores_every_signal(attack_daemon: AttackDaemon,
                                                     probes: dict[str, Path]) -> None:
    exe = probes["evade"]
    limits = proto.JobLimits(cpu_time=5.0, wall_time=10.0, pids=32)
    c = attack_daemon.daemon.connect()
    try:
        c.submit("deaf", "bash", files={exe.name: exe.read_bytes()}, stream=True,
                 argv=[f"./{exe.name}", "sigterm", "10"], limits=limits)
        while not isinstance(c.next(), proto.OutputChunk):  # it runs, deaf to signals
            pass
        t = time.monotonic()
        c.send(proto.Cancellation(id="deaf"))
        res, _ = c.result("deaf")
    finally:
        c.close()
    assert isinstance(res, proto.JobResult) and res.steps[0].verdict == "cancelled", res
    assert time.monotonic() - t < 2.0
