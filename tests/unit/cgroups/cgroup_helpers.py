"""Helpers for the cgroup tests: real kernel, root, no mocks.

Every test gets a backend with a tag of its own (``sandboxd-t<pid>-<hex>``)
beneath this process's own cgroups, and the fixture proves afterwards that
nothing is left: no ``sandboxd-<tag>`` directory in any hierarchy, and no
process that a test started (each carries ``SANDBOXD_CGROUP_TEST=<token>``
in its environment). Workloads are plain child processes placed in their job
cgroup *before* they run anything, so that accounting covers all of them.

Timing: under the emulated cgroup v2 VM (``V2VM=1``) everything runs 10-100x
slower, so deadlines are multiplied by ``SLOW``; accounting comes from the
kernel's counters and is asserted just as tightly there.
"""

from __future__ import annotations

import os
import resource
import secrets
import subprocess
import time

from sandboxd.cgroups import JobCgroup

PYTHON = "/usr/bin/python3"  # by absolute path: a pyenv shim costs seconds in the VM
SLOW = 20 if os.environ.get("V2VM") else 1
MARK_ENV = "SANDBOXD_CGROUP_TEST"
TOKEN = secrets.token_hex(8)
MiB = 1 << 20


def py(code: str) -> list[str]:
    """argv for a bare interpreter (-S: no site hooks, a smaller, steadier baseline)."""
    return [PYTHON, "-S", "-c", code]


def own_cgroup_dirs() -> list[str]:
    """Our own cgroup in every mounted hierarchy, found without the code under test."""
    points: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2":
                points[""] = fields[4]
            elif fields[sep + 1] == "cgroup":
                for opt in fields[sep + 3].split(","):
                    points[opt] = fields[4]
    dirs = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            key = controllers.split(",")[0]
            if key in points:
                d = points[key] + path.rstrip("/")
                if os.path.basename(d) == "sandboxd.supervisor":  # v2: moved by a backend
                    d = os.path.dirname(d)
                dirs.append(d)
    return dirs


def leftovers(root_name: str) -> list[str]:
    """Directories named ``root_name`` left under our own cgroups."""
    return [f"{d}/{root_name}" for d in own_cgroup_dirs() if os.path.exists(f"{d}/{root_name}")]


def stray_processes() -> list[int]:
    """Live processes started by these tests (zombies have no environment to match)."""
    needle = f"{MARK_ENV}={TOKEN}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def wait_until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


class Workload:
    """A child process that joins ``job`` before it runs anything of its own.

    ``sh -c 'read _go && exec "$@"'`` blocks on stdin until it is in the
    cgroup, then execs the workload in the same process, so the cgroup
    accounts for all of it and wait4's rusage describes exactly it.
    """

    def __init__(self, job: JobCgroup, argv: list[str]) -> None:
        env = dict(os.environ, **{MARK_ENV: TOKEN})
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", 'read _go && exec "$@"', "sh", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.pid = self.proc.pid
        try:
            # Join only once the shell sleeps in read(0, ...): its start-up (exec,
            # ld.so: tens of ms under emulation) ran outside the cgroup, and
            # before_join_ns says how much, exactly, for comparisons with rusage.
            wait_until(self._blocked_on_stdin, 30 * SLOW, "the shell to wait for 'go'")
            with open(f"/proc/{self.pid}/schedstat") as f:
                self.before_join_ns = int(f.read().split()[0])
            job.add_pid(self.pid)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

    def _blocked_on_stdin(self) -> bool:
        with open(f"/proc/{self.pid}/syscall") as f:
            return f.read().startswith("0 0x0 ")  # read(0, ...)

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().decode().strip()

    def wait(self, timeout: float) -> tuple[int, resource.struct_rusage]:
        """(returncode as subprocess reports it, rusage of the process) after it exits."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                return self.proc.returncode, usage
            if time.monotonic() > deadline:
                raise AssertionError(f"workload {self.pid} still running after {timeout:.0f} s")
            time.sleep(0.005)

    def reap(self) -> None:
        """Reap after a kill (never signals: the cgroup did the killing)."""
        if self.proc.returncode is None:
            self.wait(10 * SLOW)
        if self.proc.stdout:
            self.proc.stdout.close()
