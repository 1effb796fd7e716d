"""Exhaustion: a job tries to use up processes, memory, disk, inodes or the daemon's output.

Each bomb bounds itself (a count and a deadline, see exhaust.c and programs.py)
and runs under limits the test sets, so that a broken sandbox cannot take the
machine down. Each test checks the verdict, that the limit held (peak memory,
kept output), that the host is unharmed, and that the daemon still serves a
job right after; the suite-wide check proves nothing was left behind (a tmpfs
full of files goes with its container).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import programs
import pytest
from attacks import (
    BOMB,
    RUNTIME_BOMB,
    AttackDaemon,
    Canary,
    MiB,
    assert_unharmed,
    language_starts,
    lines_of,
    memory_limit,
    require_profile,
)

import sandboxd_protocol as proto

pytestmark = pytest.mark.root

# How far past the limit the cgroup's peak may read: the kernel charges in pages
# and per-CPU batches before it notices.
MEMORY_SLACK = 4 * MiB


def still_serves(ad: AttackDaemon) -> None:
    step = ad.run("bash", {"main.sh": b"echo still here"})
    assert step.verdict == "ok" and step.stdout == b"still here\n", step


def within_wall(step: proto.StepResult, limits: proto.JobLimits) -> None:
    assert limits.wall_time is not None
    assert step.wall_time <= limits.wall_time + 1.0, step


# ----------------------------------------------------------------- processes


def test_fork_bomb_meets_the_pids_and_time_limits(attack_daemon: AttackDaemon,
                                                  probes: dict[str, Path],
                                                  host_canary: Canary) -> None:
    step = attack_daemon.probe(probes["forkbomb"], "10", limits=BOMB)
    # Thirty-two processes forking in a loop also charge kernel memory (stacks, page
    # tables, failed forks): on a loaded host the memory limit may come first.
    assert step.verdict in ("time_limit", "memory_limit"), step
    within_wall(step, BOMB)
    still_serves(attack_daemon)
    assert_unharmed(host_canary, attack_daemon, step)


def test_thread_bomb_stops_at_the_pids_limit(attack_daemon: AttackDaemon,
                                             probes: dict[str, Path],
                                             host_canary: Canary) -> None:
    step = attack_daemon.probe(probes["exhaust"], "thread", "100000", "10", limits=BOMB)
    assert step.verdict == "time_limit" and step.reason == "wall", step
    made = int(lines_of(step)[0].split()[2])
    assert made < (BOMB.pids or 0), f"{made} threads under a pids limit of {BOMB.pids}"
    assert b"Resource temporarily unavailable" in step.stdout, step
    still_serves(attack_daemon)
    assert_unharmed(host_canary, attack_daemon, step)


@pytest.mark.parametrize(("language", "start"), language_starts(programs.LANGUAGES))
def test_fork_bomb_in_every_language(attack_daemon: AttackDaemon, host_canary: Canary,
                                     language: str, start: str) -> None:
    """Processes where the runtime can fork (Python, bash, C, Node's child processes),
    threads where it cannot (C++, Java): the pids limit and the wall clock end them."""
    require_profile(language)
    res = attack_daemon.job(language, programs.source(programs.FORK_BOMB, language,
                                                      seconds=10, count=100000),
                            limits=RUNTIME_BOMB, start=start)
    assert res.compile is None or res.compile.verdict == "ok", res.compile
    (step,) = res.steps
    assert step.verdict in ("time_limit", "runtime_error"), step
    within_wall(step, RUNTIME_BOMB)
    still_serves(attack_daemon)
    assert_unharmed(host_canary, attack_daemon, res)


# -------------------------------------------------------------------- memory

MEMORY_WAYS = {
    "heap": ("heap", "4096"),
    "mmap": ("mmap", "4096"),
    "stack": ("stack", "4096"),
    "memfd": ("memfd", "4096"),
    "dev-shm": ("file", "4096", "10", "/dev/shm/bomb"),
    "tmpfs-box": ("file", "4096", "10", "/box/bomb"),
    "tmpfs-tmp": ("file", "4096", "10", "/tmp/bomb"),
}


@pytest.mark.parametrize("way", sorted(MEMORY_WAYS))
def test_memory_bomb_is_an_oom_within_the_limit(attack_daemon: AttackDaemon,
                                                probes: dict[str, Path],
                                                host_canary: Canary, way: str) -> None:
    """Anonymous memory, the stack (its rlimit is as large as the memory limit here),
    a memfd, and the tmpfs mounts (/box, /tmp, a private /dev/shm) are all charged to
    the job's cgroup: the OOM killer ends the job at its limit, and the pages of
    its files go with its container."""
    mode, amount, *rest = MEMORY_WAYS[way]
    args = [mode, amount, *(rest or ["10"])]
    step = attack_daemon.probe(probes["exhaust"], *args, limits=BOMB)
    assert step.verdict == "memory_limit" and step.oom_killed, step
    assert BOMB.memory is not None and step.memory_peak <= BOMB.memory + MEMORY_SLACK, step
    still_serves(attack_daemon)
    assert_unharmed(host_canary, attack_daemon, step)


def test_stack_overflow_under_a_small_stack_limit_is_a_segfault(
        attack_daemon: AttackDaemon, probes: dict[str, Path]) -> None:
    limits = proto.JobLimits(cpu_time=1.0, wall_time=2.0, memory=64 * MiB, stack=8 * MiB)
    step = attack_daemon.probe(probes["exhaust"], "stack", "4096", "10", limits=limits)
    assert step.verdict == "runtime_error" and step.signal == 11, step


@pytest.mark.parametrize(("language", "start"), language_starts(programs.LANGUAGES))
def test_memory_bomb_in_every_language(attack_daemon: AttackDaemon, host_canary: Canary,
                                       language: str, start: str) -> None:
    """An OOM kill, or the runtime's own refusal (Java's heap is a quarter of the limit,
    so it throws OutOfMemoryError), never more than the limit."""
    require_profile(language)
    # bash fills its memory at ~3 ns a byte (printf's padding): ~0.9 s of CPU to 256 MiB
    # on a quiet machine, and over RUNTIME_BOMB's 2 s on a slow day (once in CI): its CPU
    # limit is raised so that the memory limit is what stops it. Bounded all the same.
    limits = dataclasses.replace(RUNTIME_BOMB, cpu_time=6.0, wall_time=8.0) \
        if language == "bash" else RUNTIME_BOMB
    res = attack_daemon.job(language, programs.source(programs.MEMORY_BOMB, language,
                                                      seconds=10, count=4096),
                            limits=limits, start=start)
    assert res.compile is None or res.compile.verdict == "ok", res.compile
    (step,) = res.steps
    assert step.verdict in ("memory_limit", "runtime_error"), step
    if step.verdict == "runtime_error":
        assert b"OutOfMemory" in step.stderr or b"out of memory" in step.stderr, step
    # A warm node keeps its profile's memory limit (its heap ceiling follows it).
    assert step.memory_peak <= memory_limit(language, limits, start) + MEMORY_SLACK, step
    still_serves(attack_daemon)
    assert_unharmed(host_canary, attack_daemon, res)


# ---------------------------------------------------------------- disk, inodes

ROOMY = proto.JobLimits(cpu_time=2.0, wall_time=4.0, memory=256 * MiB, pids=32, output=1 * MiB)


@pytest.mark.parametrize(("path", "size"), [("/box/fill", 8 * MiB), ("/tmp/fill", 64 * MiB)])
def test_disk_fill_stops_at_the_tmpfs_size(attack_daemon: AttackDaemon,
                                           probes: dict[str, Path], host_canary: Canary,
                                           path: str, size: int) -> None:
    """/box is as large as the job's box_size, /tmp as the profile's tmp size: both
    tmpfs in the container, so a full one is the job's problem (ENOSPC), not the host's."""
    # file_size above the tmpfs, or RLIMIT_FSIZE would stop the writer first
    limits = dataclasses.replace(ROOMY, file_size=128 * MiB)
    if path.startswith("/box"):
        limits = dataclasses.replace(limits, box_size=size)
    step = attack_daemon.probe(probes["exhaust"], "file", "4096", "10", path, limits=limits)
    assert step.verdict == "ok", step
    words = lines_of(step)[0].split()  # "PATH: refused after N MiB (...)", or a short write
    assert words[1:3] in (["refused", "after"], ["short", "write"]), step
    assert int(words[-2] if words[1] == "short" else words[3]) <= size // MiB, step
    still_serves(attack_daemon)
    assert_unharmed(host_canary, attack_daemon, step)


def test_file_size_limit_is_an_output_limit(attack_daemon: AttackDaemon,
                                            probes: dict[str, Path]) -> None:
    limits = dataclasses.replace(ROOMY, file_size=1 * MiB)
    step = attack_daemon.probe(probes["exhaust"], "file", "64", "10", "/box/big",
                               limits=limits)
    assert step.verdict == "output_limit" and step.reason == "file_size", step


@pytest.mark.parametrize(("where", "most"), [("/box", 65536), ("/tmp", 65536),
                                             ("/dev/shm", 4096)])
def test_inode_flood_stops_at_the_tmpfs_inode_count(attack_daemon: AttackDaemon,
                                                    probes: dict[str, Path],
                                                    host_canary: Canary, where: str,
                                                    most: int) -> None:
    step = attack_daemon.probe(probes["exhaust"], "inodes", "200000", "10", where,
                               limits=ROOMY)
    assert step.verdict == "ok", step
    words = lines_of(step)[0].split()
    assert words[1:3] == ["refused", "after"] and int(words[3]) < most, step
    still_serves(attack_daemon)
    assert_unharmed(host_canary, attack_daemon, step)


# -------------------------------------------------------------------- output


@pytest.mark.parametrize("shape", ["nl", "raw"])
def test_output_flood_on_both_streams_is_cut_at_the_cap(attack_daemon: AttackDaemon,
                                                        probes: dict[str, Path],
                                                        host_canary: Canary,
                                                        shape: str) -> None:
    """64 MiB on stdout and stderr at once, in lines or without a newline: the daemon
    keeps at most the cap of each stream, and kills the job at the first byte past it."""
    step = attack_daemon.probe(probes["exhaust"], "output", str(64 * MiB), "10", shape,
                               limits=BOMB)
    assert step.verdict == "output_limit", step
    assert BOMB.output is not None
    assert len(step.stdout) <= BOMB.output and len(step.stderr) <= BOMB.output, step
    assert step.stdout_truncated or step.stderr_truncated
    assert (b"\n" in step.stdout) == (shape == "nl")
    still_serves(attack_daemon)
    assert_unharmed(host_canary, attack_daemon, step)


def test_streamed_output_flood_is_cut_at_the_cap(attack_daemon: AttackDaemon,
                                                 probes: dict[str, Path]) -> None:
    """The same with ``stream``: the chunks sent add up to no more than the cap."""
    exe = probes["exhaust"]
    c = attack_daemon.daemon.connect()
    try:
        c.submit("flood", "bash", files={exe.name: exe.read_bytes()}, stream=True, limits=BOMB,
                 argv=[f"./{exe.name}", "output", str(64 * MiB), "10", "raw"])
        res, seen = c.result("flood")
    finally:
        c.close()
    assert isinstance(res, proto.JobResult) and res.steps[0].verdict == "output_limit", res
    sent = {"stdout": 0, "stderr": 0}
    for ev in seen:
        if isinstance(ev, proto.OutputChunk):
            sent[ev.stream] += len(ev.data)
    assert BOMB.output is not None and max(sent.values()) <= BOMB.output, sent


@pytest.mark.parametrize(("language", "start"), language_starts(programs.LANGUAGES))
def test_output_flood_in_every_language(attack_daemon: AttackDaemon, host_canary: Canary,
                                        language: str, start: str) -> None:
    require_profile(language)
    res = attack_daemon.job(language, programs.source(programs.OUTPUT_FLOOD, language,
                                                      seconds=10, count=64 * MiB),
                            limits=RUNTIME_BOMB, start=start)
    assert res.compile is None or res.compile.verdict == "ok", res.compile
    (step,) = res.steps
    assert step.verdict == "output_limit", step
    assert RUNTIME_BOMB.output is not None
    assert max(len(step.stdout), len(step.stderr)) <= RUNTIME_BOMB.output
    assert_unharmed(host_canary, attack_daemon, res)


def test_daemon_memory_stayed_bounded(attack_daemon: AttackDaemon) -> None:
    """After every bomb and flood of this module (they run first, in file order), the
    daemon holds no more than a few MiB more than when it started."""
    attack_daemon.wait_idle()
    grown = attack_daemon.rss_kib() - attack_daemon.rss_start_kib
    assert grown < 32 * 1024, f"the daemon's RSS grew by {grown} KiB"
