"""Helpers of the attack suite: a daemon shared by a module, and what "unharmed" means.

A profile with a warm runtime (docs/profiles.md: the interpreter started before the
job) is attacked both ways: ``start="warm"`` hands the job to the waiting interpreter
(its limits kept to those the interpreter started with, ``warm_limits``),
``start="plain"`` starts it as ever, and either is checked in the daemon's log line
for the job. ``LANGUAGE_STARTS`` lists every language with each start it has;
``AttackDaemon.start`` sets the start of a module's jobs (conftest's
``warm_and_plain`` fixture).

The daemon runs with a secret in its environment (``HOST_SECRET``): the
containers' processes descend from it, so a job that reached another
process's environment would print it. ``assert_unharmed`` checks that neither
the secret nor the canary's token appears in any output, and that the canary
file (the suite-wide ``canary`` fixture) is as it was, link count included.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sandboxd_protocol as proto
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon

MiB = 1 << 20

# Limits for bombs and floods: small enough that a test takes a second or two,
# large enough that every shipped runtime starts.
BOMB = proto.JobLimits(cpu_time=1.0, wall_time=2.0, memory=64 * MiB, pids=32, output=1 * MiB)
# The JVM and V8 need more room to start at all.
RUNTIME_BOMB = proto.JobLimits(cpu_time=2.0, wall_time=2.5, memory=256 * MiB, pids=64,
                               output=1 * MiB)


@dataclass
class AttackDaemon:
    """A running daemon shared by one test module, and a blocking way to run jobs on it."""

    daemon: Daemon
    secret: str
    rss_start_kib: int = 0
    seq: int = 0
    # The current test's canary (conftest's guard sets it): every job's output is
    # searched for its token, whichever attack the job makes.
    canary: Canary | None = None
    # The start of jobs whose profile has a warm runtime: "warm", "plain", or None (the
    # server's choice); a job's own ``start`` overrides it.
    start: str | None = None

    @property
    def pid(self) -> int:
        return self.daemon.pid

    @property
    def instance(self) -> str:
        return self.daemon.instance

    def job(self, profile: str, files: dict[str, bytes], *, start: str | None = None,
            **kw: Any) -> proto.JobResult:
        """Submit one job on a fresh connection and return its result (never an error).

        ``start`` ("warm", "plain"), for a profile with a warm runtime: how the job must
        start (checked in the daemon's log); default ``self.start``."""
        shipped = _profiles().get(profile)
        start = (start or self.start) if shipped is not None and shipped.warm_runtime else None
        if start == "warm":
            kw["limits"] = warm_limits(profile, kw.get("limits"))
            kw["warm_runtime"] = True
            self.wait_idle()  # a pool miss would start it plainly
        elif start == "plain":
            kw["warm_runtime"] = False
        self.seq += 1
        c = self.daemon.connect()
        try:
            c.submit(f"attack-{self.seq}", profile, files=files, **kw)
            res, _ = c.result(f"attack-{self.seq}")
        finally:
            c.close()
        assert isinstance(res, proto.JobResult), res
        out = outputs(res)
        assert self.secret.encode() not in out, "the daemon's environment leaked into an output"
        if self.canary is not None:
            assert self.canary.token.encode() not in out, "the canary's token leaked"
        if start is not None:
            assert self.warm_steps(f"attack-{self.seq}") == (start == "warm"), (start, res)
        return res

    def warm_steps(self, job_id: str, timeout: float = 5.0) -> int:
        """How many steps of the job a warm runtime ran, from the daemon's ``job`` line."""
        pattern = re.compile(rf"event=job job=\S+/{re.escape(job_id)} .* warm=(\d+)")
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.findall(self.daemon.log.read_text())
            if found or time.monotonic() > deadline:
                assert found, f"no job line for {job_id} in the daemon's log"
                return int(found[-1])
            time.sleep(0.02)

    def run(self, profile: str, files: dict[str, bytes], **kw: Any) -> proto.StepResult:
        """The one run step of a job (a compile error is returned as the compile step)."""
        res = self.job(profile, files, **kw)
        if not res.steps:
            assert res.compile is not None, res
            return res.compile
        assert len(res.steps) == 1, res
        return res.steps[0]

    def probe(self, exe: Path, *args: str, **kw: Any) -> proto.StepResult:
        """Run a compiled probe from tests/probes (uploaded into /box) under bash's profile."""
        return self.run("bash", {exe.name: exe.read_bytes()}, argv=[f"./{exe.name}", *args],
                        **kw)

    def rss_kib(self) -> int:
        return self.daemon.rss_kib()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no job runs or waits, every pool is full, and every container of the
        daemon is a warm one (used ones are destroyed after their result is sent)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.daemon.stats()
            busy = st.jobs_running + st.jobs_queued
            cold = [p for p in st.pools if p.warm < p.target]
            below = leftovers.descendants(self.pid)
            mine = {pid for pid, _uid, _name in leftovers.container_processes() if pid in below}
            stray = mine - leftovers.warm_containers(self.pid)
            if not busy and not cold and not stray:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon not idle after {timeout}s: {busy} jobs, cold "
                                     f"pools {cold}, non-warm container processes {stray}")
            time.sleep(0.05)


@functools.cache
def _profiles() -> dict[str, Any]:
    from sandboxd.profiles import load_dir

    return load_dir(None)


def warm_limits(profile: str, limits: proto.JobLimits | None) -> proto.JobLimits | None:
    """``limits`` as a warm runtime takes them: what its interpreter started with (the
    rlimits' CPU time, file size, open files and stack; node's memory, which sets its heap
    ceiling) left at the profile's; the rest (wall time, pids, output...) as given."""
    if limits is None:
        return None
    keep = {"cpu_time": None, "file_size": None, "open_files": None, "stack": None}
    if _profiles()[profile].warm_runtime == "node":
        keep["memory"] = None
    return dataclasses.replace(limits, **keep)


def memory_limit(profile: str, limits: proto.JobLimits, start: str | None) -> int:
    """The memory limit a job of ``profile`` under ``limits`` had, with that start."""
    if start == "warm":
        limits = warm_limits(profile, limits) or limits
    return limits.memory if limits.memory is not None else _profiles()[profile].limits.memory


def _starts(name: str) -> list[str]:
    profile = _profiles().get(name)
    return ["warm", "plain"] if profile is not None and profile.warm_runtime else ["plain"]


def language_starts(languages: tuple[str, ...]) -> list[Any]:
    """``(language, start)`` parameters: every language, warm and plain where it can be."""
    return [pytest.param(lang, start, id=f"{lang}-{start}") for lang in languages
            for start in _starts(lang)]


def require_profile(name: str) -> None:
    """Skip unless the host has the profile's runtime (the install script installs gcc
    only; Node, a JDK and g++ are the host's own business)."""
    profile = _profiles().get(name)
    if profile is None or profile.unavailable:
        pytest.skip(f"profile {name} is unavailable here: "
                    f"{profile.unavailable if profile else 'not shipped'}")


def start_attack_daemon(tmp: Path, **config: Any) -> AttackDaemon:
    """A daemon with a secret in its environment, idle and warm; its RSS noted."""
    secret = "HOSTSECRET-" + os.urandom(12).hex()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOST_SECRET", secret)
        # Every profile with a warm runtime is kept warm: a warm attack must not miss.
        warm = [name for name, p in _profiles().items() if p.warm_runtime and not p.unavailable]
        d = Daemon(tmp, **{"pool_profiles": sorted({"bash", *warm}), "pool_size": 1,
                           "concurrency": 2, **config}).start()
    ad = AttackDaemon(d, secret)
    try:
        ad.wait_idle()
        ad.rss_start_kib = ad.rss_kib()
    except BaseException:
        d.stop()  # the fixture never yields it, so nothing else would stop it
        raise
    return ad


# ------------------------------------------------------------------ the host's state


def outputs(res: proto.JobResult | proto.StepResult) -> bytes:
    """Everything a job wrote, on both streams, compile step included."""
    steps = [res] if isinstance(res, proto.StepResult) else [
        *([res.compile] if res.compile else []), *res.steps]
    return b"".join(s.stdout + s.stderr for s in steps)


@dataclass(frozen=True)
class Canary:
    """A host file with a random token, and how it looked before the attack."""

    path: Path
    token: str
    stat: tuple[int, int, int, int, int]  # mode, nlink, uid, size, mtime_ns
    listing: tuple[str, ...]

    @classmethod
    def of(cls, path: Path, token: str) -> Canary:
        return cls(path, token, _stat(path), tuple(sorted(os.listdir(path.parent))))


def _stat(path: Path) -> tuple[int, int, int, int, int]:
    st = os.lstat(path)
    return st.st_mode, st.st_nlink, st.st_uid, st.st_size, st.st_mtime_ns


def assert_unharmed(canary: Canary, ad: AttackDaemon,
                    *results: proto.JobResult | proto.StepResult) -> None:
    """Neither the canary's token nor the daemon's secret in any output; the canary file,
    its links and its directory as they were; the daemon alive."""
    for res in results:
        out = outputs(res)
        assert canary.token.encode() not in out, "the canary's token leaked into a job's output"
        assert ad.secret.encode() not in out, "the daemon's environment leaked into an output"
    assert canary.path.read_text() == canary.token
    assert _stat(canary.path) == canary.stat, "the canary file changed (mode, links, size...)"
    assert tuple(sorted(os.listdir(canary.path.parent))) == canary.listing
    assert ad.daemon.proc is not None and ad.daemon.proc.poll() is None, "the daemon died"


def lines_of(step: proto.StepResult) -> list[str]:
    return step.stdout.decode(errors="replace").splitlines()
