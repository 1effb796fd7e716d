"""What every benchmark here shares: the baselines, measured the same way everywhere.

bubblewrap runs with the isolation of research/baseline.md: ``--unshare-all``
(user, pid, net, ipc, uts and cgroup namespaces), read-only /usr, new /proc
and /dev, a tmpfs /tmp; no cgroup limits and no seccomp. The floor is a bare
``posix_spawn`` + ``waitpid`` of the same command.
"""

from __future__ import annotations

import os
import shutil
import time

COMMANDS = {"true": ["/bin/true"], "py": ["/usr/bin/python3", "-c", "pass"]}
BWRAP = [shutil.which("bwrap") or "/usr/bin/bwrap", "--unshare-all", "--die-with-parent",
         "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib",
         "/lib", "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev",
         "--tmpfs", "/tmp", "--"]


def spawn_wait(argv: list[str]) -> float:
    """Seconds to spawn ``argv`` (output to /dev/null) and reap it; raises if it failed."""
    t = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
    _, status = os.waitpid(pid, 0)
    if status:
        raise RuntimeError(f"{argv}: status {status}")
    return time.perf_counter() - t


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]
