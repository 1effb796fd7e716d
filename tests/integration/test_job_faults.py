"""Whose fault: a failure of the job process between receiving its job and ``execve`` is
the sandbox's (``sandbox_error``, with the step and errno as its reason); the program not
being there or not being runnable is the job's (``runtime_error``, exit 127, said on
stderr). isolate's rule, stated in sandboxd/result.py; the mechanism is in
sandboxd/native/jobproc.c.

The faults here are real, not simulated: a daemon whose hard limit on open files is
below what the job asks for (setrlimit fails with EPERM, as it would under a service
manager that caps the daemon), and a profile whose working directory does not exist in
the container (chdir fails with ENOENT), through run-once and through a daemon.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
RunOnce = Callable[..., dict[str, Any]]  # the suite's run_once fixture (tests/conftest.py)


def _run_once_capped(nofile_hard: int, open_files: int) -> tuple[int, dict]:
    """``sandboxd run-once`` with its hard RLIMIT_NOFILE lowered before it starts (so the
    fork server, the init and the job process inherit it), asking for more."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile_hard, nofile_hard))

    proc = subprocess.run(
        [sys.executable, "-m", "sandboxd", "run-once", "--json", "--open-files",
         str(open_files), "--", "/bin/true"],
        capture_output=True, timeout=120, preexec_fn=cap)
    return proc.returncode, json.loads(proc.stdout)


def test_a_failing_setrlimit_is_a_sandbox_error_with_step_and_errno() -> None:
    code, r = _run_once_capped(1024, 4096)
    assert r["verdict"] == "sandbox_error", r
    assert r["reason"] == ("job process: setrlimit RLIMIT_NOFILE=4096: Operation not "
                           "permitted (EPERM)"), r
    assert r["exit_code"] is None and code == 125
    # The control: the same cap, a limit under it, runs.
    code, r = _run_once_capped(1024, 512)
    assert r["verdict"] == "ok" and code == 0, r


def test_a_missing_program_is_the_jobs_runtime_error(run_once: RunOnce) -> None:
    r = run_once(["/box/sandboxd-no-such-program"])
    assert r["verdict"] == "runtime_error" and r["exit_code"] == 127, r
    assert r["stderr"] == "sandboxd: program not found: /box/sandboxd-no-such-program\n"
    r = run_once(["sandboxd-no-such-program"])
    assert r["verdict"] == "runtime_error" and r["exit_code"] == 127, r
    assert r["stderr"].startswith("sandboxd: program not found: sandboxd-no-such-program "
                                  "(looked in PATH=")


def test_a_program_that_cannot_be_executed_is_the_jobs_runtime_error(run_once: RunOnce) -> None:
    r = run_once(["/box"])  # a directory: EACCES
    assert r["verdict"] == "runtime_error" and r["exit_code"] == 127, r
    assert r["stderr"] == "sandboxd: program not executable: /box (Permission denied)\n"
    r = run_once(["./notes"], files={"notes": b"no #! line, not an ELF\n"})  # ENOEXEC
    assert r["verdict"] == "runtime_error" and r["exit_code"] == 127, r
    assert "not a program the kernel can run" in r["stderr"], r


def test_a_job_that_exits_126_itself_is_not_a_sandbox_error(run_once: RunOnce) -> None:
    """JOB_FAULT_EXIT is only the init's cue to look for a report; without one, the exit
    status is the job's."""
    r = run_once(["sh", "-c", "exit 126"])
    assert r["verdict"] == "runtime_error" and r["exit_code"] == 126, r
    assert r["reason"] == "exit code 126"


def test_through_the_daemon_a_missing_workdir_is_a_sandbox_error(tmp_path: Path) -> None:
    pdir = tmp_path / "profiles"
    pdir.mkdir()
    bash = (ROOT / "profiles" / "bash.toml").read_text()
    (pdir / "bash.toml").write_text(bash)
    (pdir / "lost.toml").write_text(bash.replace('name = "bash"', 'name = "lost"')
                                    + 'workdir = "/box/sandboxd-no-such-dir"\n')
    (pdir / "absent.toml").write_text(
        bash.replace('name = "bash"', 'name = "absent"')
        .replace('run = ["/bin/bash", "{entry}"]', 'run = ["/box/sandboxd-absent"]'))
    with Daemon(tmp_path, profiles_dir=str(pdir), pool_profiles=["lost", "bash"]) as d:
        c = d.connect()
        step = c.run("lost", profile="lost", files={"main.sh": b"echo never"}).steps[0]
        assert step.verdict == "sandbox_error", step
        assert step.reason == ("job process: chdir /box/sandboxd-no-such-dir: No such file "
                               "or directory (ENOENT)"), step
        step = c.run("absent", profile="absent", files={"main.sh": b""}).steps[0]
        assert step.verdict == "runtime_error" and step.exit_code == 127, step
        assert step.stderr == b"sandboxd: program not found: /box/sandboxd-absent\n"
        # The daemon destroyed the faulted container and serves on.
        step = c.run("after", files={"main.sh": b"echo fine"}).steps[0]
        assert step.verdict == "ok" and step.stdout == b"fine\n", step
        c.close()
