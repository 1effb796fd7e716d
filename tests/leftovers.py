"""What a test may have left behind: processes, cgroups and mounts of sandboxd.

Used by the autouse fixture in tests/conftest.py and by daemon tests that
check after a SIGKILL. Every container process runs under a host uid of our
reserved ranges (sandboxd.isolation.identity), so a leftover process is found
by uid, wherever it was reparented; cgroups and mounts carry "sandboxd" in
their names.
"""

from __future__ import annotations

import os
import time

from sandboxd.isolation import identity

CGROUP_ROOT = "/sys/fs/cgroup"


def container_processes() -> list[tuple[int, int, str]]:
    """(pid, uid, name) of every process running under a container uid."""
    lo = identity.INIT_BASE
    hi = identity.JOB_BASE + identity.MAX_SLOTS
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = f.read()
        except OSError:
            continue
        name = uid = None
        for line in status.splitlines():
            if line.startswith("Name:"):
                name = line.split(None, 1)[1] if len(line.split()) > 1 else ""
            elif line.startswith("Uid:"):
                uid = int(line.split()[1])
                break
        if uid is not None and lo <= uid < hi:
            out.append((int(entry), uid, name or "?"))
    return out


def sandboxd_cgroups() -> set[str]:
    found: set[str] = set()
    if not os.path.isdir(CGROUP_ROOT):
        return found
    for top, dirs, _files in os.walk(CGROUP_ROOT):
        depth = top[len(CGROUP_ROOT):].count("/")
        for d in dirs:
            if "sandboxd" in d:
                found.add(os.path.join(top, d))
        if depth >= 6:
            dirs[:] = []
    return found


def sandboxd_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if "sandboxd" in line]


def snapshot() -> dict[str, object]:
    return {"procs": container_processes(), "cgroups": sandboxd_cgroups(),
            "mounts": sandboxd_mounts()}


def new_leftovers(before: dict[str, object], settle: float = 2.0) -> dict[str, object]:
    """What exists now and did not before; waits up to ``settle`` s for things to go away."""
    deadline = time.monotonic() + settle
    while True:
        now = snapshot()
        left = {
            "procs": [p for p in now["procs"] if p not in before["procs"]],  # type: ignore[operator]
            "cgroups": sorted(now["cgroups"] - before["cgroups"]),  # type: ignore[operator]
            "mounts": [m for m in now["mounts"] if m not in before["mounts"]],  # type: ignore[operator]
        }
        if not any(left.values()) or time.monotonic() > deadline:
            return {k: v for k, v in left.items() if v}
        time.sleep(0.05)
