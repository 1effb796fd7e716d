"""What a test may have left behind: processes, cgroups and mounts of sandboxd.

Used by the autouse fixture in tests/conftest.py, by daemon tests that
check after a SIGKILL, by the soak (tests/soak/soak.py) and the benchmarks.
Every container process runs under a host uid of our reserved ranges
(sandboxd.isolation.identity), so a leftover process is found
by uid, wherever it was reparented; cgroups and mounts carry "sandboxd" in
their names. SysV IPC objects of the host are compared only when asked
(``snapshot(ipc=True)``): other software on a shared machine makes them too.

A test module that shares one daemon across its tests sees that daemon's warm
containers come and go between tests; ``daemon_view`` makes a view that hides
exactly those (and the daemon's recycled cgroups), so the per-test check still
catches anything else, and the module checks the rest once the daemon stops.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator

from sandboxd.isolation import identity

CGROUP_ROOT = "/sys/fs/cgroup"


def each_process(file: str) -> Iterator[tuple[int, str]]:
    """(pid, text of /proc/PID/``file``) of every process, less those gone meanwhile."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/{file}") as f:
                    text = f.read()
            except OSError:
                continue
            yield int(entry), text


def container_processes() -> list[tuple[int, int, str]]:
    """(pid, uid, name) of every process running under a container uid."""
    lo = identity.INIT_BASE
    hi = identity.JOB_BASE + identity.MAX_SLOTS
    out = []
    for pid, status in each_process("status"):
        name = uid = None
        for line in status.splitlines():
            if line.startswith("Name:"):
                name = line.split(None, 1)[1] if len(line.split()) > 1 else ""
            elif line.startswith("Uid:"):
                uid = int(line.split()[1])
                break
        if uid is not None and lo <= uid < hi:
            out.append((pid, uid, name or "?"))
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


def network_objects() -> list[str]:
    """Host-side network objects of sandboxd: a job's user-mode stack (a slirp4netns
    started as ``sandboxd-slirp4netns``, sandboxd/egress.py), and named network
    namespaces and interfaces with "sandboxd" in their names (tests make those)."""
    found = [f"slirp4netns:{pid}" for pid, cmd in each_process("cmdline")
             if cmd.startswith("sandboxd-slirp4netns\0")]
    for kind, directory in (("netns", "/run/netns"), ("link", "/sys/class/net")):
        with contextlib.suppress(OSError):
            found += [f"{kind}:{n}" for n in sorted(os.listdir(directory)) if "sandboxd" in n]
    return found


def ipc_objects() -> set[str]:
    """SysV shared memory segments, semaphore sets and message queues of the host's IPC
    namespace, as ``"shm:<id>"`` etc. (a container's live in its own namespace)."""
    found: set[str] = set()
    for kind in ("shm", "sem", "msg"):
        try:
            with open(f"/proc/sysvipc/{kind}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        found.update(f"{kind}:{row.split()[1]}" for row in rows if row.split())
    return found


Snapshot = dict[str, object]
View = Callable[[Snapshot], Snapshot]


#: ``SANDBOXD_LEFTOVERS=mine``: count only what this process tree made, so that test runs
#: sharing a development machine do not fail each other (scripts/test-mine.sh sets it up:
#: the run in a cgroup of its own, pytest a child subreaper). CI leaves it unset: there
#: the check is host-wide, the strictest.
MINE = os.environ.get("SANDBOXD_LEFTOVERS") == "mine"


def own_cgroups() -> list[str]:
    """This process's cgroup directory in each hierarchy (v1 and the unified one)."""
    out = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for ctrl in ctrls.split(",") if ctrls else ["unified"]:
                ctrl = ctrl.removeprefix("name=")
                base = os.path.join(CGROUP_ROOT, ctrl)
                if os.path.isdir(base):
                    out.append(os.path.normpath(base + path))
    return out


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True  # gone
    return stat[stat.rindex(")") + 2] == "Z"


def _mine(snap: Snapshot) -> Snapshot:
    mine = descendants(os.getpid())
    roots = [r + "/" for r in own_cgroups() if r.count("/") > 4]  # never a hierarchy's root
    # Orphans of this run come to pytest (a subreaper) and stay zombies there, reaped by
    # no one: a zombie has released everything, so it is not a leftover.
    snap["procs"] = [p for p in snap["procs"]  # type: ignore[union-attr]
                     if p[0] in mine and not _zombie(p[0])]
    snap["cgroups"] = {c for c in snap["cgroups"]  # type: ignore[union-attr]
                       if any(c.startswith(r) for r in roots)}
    # Network objects carry the pid of the process that made them (its name or its own).
    ours = {str(p) for p in mine | {os.getpid()}}
    snap["net"] = [n for n in snap["net"]  # type: ignore[union-attr]
                   if ours & set(re.findall(r"\d+", n))]
    return snap


def snapshot(ipc: bool = False) -> Snapshot:
    snap: Snapshot = {"procs": container_processes(), "cgroups": sandboxd_cgroups(),
                      "mounts": sandboxd_mounts(), "net": network_objects()}
    if MINE:
        snap = _mine(snap)
    if ipc:
        snap["ipc"] = ipc_objects()
    return snap


def new_leftovers(before: Snapshot, settle: float = 2.0, view: View | None = None) -> Snapshot:
    """What exists now and did not before; waits up to ``settle`` s for things to go away.

    ``view``, if given, is applied to every snapshot taken here (``before`` is
    used as given): it hides what the caller knows to be legitimately alive.
    IPC objects are compared only if ``before`` has them.
    """
    deadline = time.monotonic() + settle
    while True:
        now = snapshot(ipc="ipc" in before)
        if view is not None:
            now = view(now)
        left = {
            "procs": [p for p in now["procs"] if p not in before["procs"]],  # type: ignore[operator]
            "cgroups": sorted(now["cgroups"] - before["cgroups"]),  # type: ignore[operator]
            "mounts": [m for m in now["mounts"] if m not in before["mounts"]],  # type: ignore[operator]
            "net": [n for n in now["net"] if n not in before.get("net", [])],  # type: ignore[operator,attr-defined]
        }
        if "ipc" in before:
            left["ipc"] = sorted(now["ipc"] - before["ipc"])  # type: ignore[operator]
        if not any(left.values()) or time.monotonic() > deadline:
            return {k: v for k, v in left.items() if v}
        time.sleep(0.05)


def parents() -> dict[int, int]:
    """pid -> ppid of every process (read from /proc/PID/stat; the name may hold spaces)."""
    return {pid: int(stat[stat.rindex(")") + 2:].split()[1])
            for pid, stat in each_process("stat")}


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren...), not ``pid`` itself."""
    children: dict[int, list[int]] = {}
    for child, parent in parents().items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def descendants_named(pid: int, name: str) -> set[int]:
    """The processes below ``pid`` whose name (``/proc/PID/comm``) is ``name``, e.g. the
    fork servers, ``sandboxd-forks``."""
    found = set()
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/comm") as f:
                if f.read().strip() == name:
                    found.add(child)
        except OSError:
            pass  # gone meanwhile
    return found


def fork_servers(pid: int) -> set[int]:
    """The native fork servers below ``pid``. A container init is named ``sandboxd-forks``
    too for the few µs between its clone and its own ``prctl``; a fork server is the one
    whose parent is not."""
    found = descendants_named(pid, "sandboxd-forks")
    parents = {}
    for child in found:
        try:
            with open(f"/proc/{child}/stat") as f:
                parents[child] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass  # gone meanwhile
    return {p for p, parent in parents.items() if parent not in found}


def warm_containers(daemon_pid: int) -> set[int]:
    """Pids of the daemon's *unused* containers: an init (the container root's uid of its
    slot) whose only child is the job process (sandboxd-jobexec), waiting under the job
    uid of the same slot, or a warm runtime waiting for its job (``waiting_runtime``). A
    container that ran a job is destroyed, so any other shape is not warm."""
    listed = container_processes()
    procs = {pid: uid for pid, uid, _name in listed}
    names = {pid: name for pid, _uid, name in listed}
    below = descendants(daemon_pid)
    ppid = parents()
    children: dict[int, list[int]] = {}
    for pid in procs:
        children.setdefault(ppid.get(pid, 0), []).append(pid)
    warm: set[int] = set()
    for pid, uid in procs.items():
        if pid not in below or not identity.INIT_BASE <= uid < identity.JOB_BASE:
            continue
        kids = children.get(pid, [])
        slot = uid - identity.INIT_BASE
        if (len(kids) == 1 and procs[kids[0]] == identity.JOB_BASE + slot
                and (names[kids[0]].startswith("sandboxd-jobexe")
                     or waiting_runtime(kids[0]))):
            warm.update((pid, kids[0]))
    return warm


def waiting_runtime(pid: int) -> bool:
    """A warm runtime's interpreter still waiting for its job (sandboxd/runtimes/): started
    with a bootstrap, and still holding its socket to the init on descriptor 3, which the
    bootstrap closes before any of a job's code runs."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        fd3 = os.readlink(f"/proc/{pid}/fd/3")
    except OSError:
        return False
    return b"_sandboxd_warm" in cmdline and fd3.startswith("socket:")


def supervised_elsewhere(own: int | None = None) -> set[int]:
    """Container processes that some *other* live supervisor still owns.

    A container process's nearest ancestor outside the container uids is the
    zygote or ``run-once`` process that made it; a leftover, its makers gone,
    hangs from PID 1 instead. Processes under ``own`` (a daemon of ours) are
    never counted here. On a shared machine other test runs make containers
    at any moment: a module that talks only to its own daemon may ignore them.
    """
    listed = {pid for pid, _uid, _name in container_processes()}
    ppid = parents()
    mine = descendants(own) | {own} if own is not None else set()
    found: set[int] = set()
    for pid in listed:
        up = ppid.get(pid, 0)
        while up in listed:
            up = ppid.get(up, 0)
        if up not in (0, 1) and up not in mine:
            found.add(pid)
    return found


def instance_of(pid: int) -> str | None:
    """The sandboxd instance whose job cgroup holds ``pid`` (``None`` if in none): a job's
    processes stay in their cgroup wherever they are reparented."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        for part in line.split(":", 2)[-1].split("/"):
            if part.startswith("sandboxd-") and not part.startswith("sandboxd-box-"):
                return part[len("sandboxd-"):]
    return None


def of_other_instances(instance: str) -> set[int]:
    """Container processes that belong to another daemon than ``instance``: job processes
    in its cgroups, and inits whose job process is there. (A leftover of ours is in our
    cgroups; another test run's orphan is in its own.)"""
    listed = {pid: uid for pid, uid, _name in container_processes()}
    ppid = parents()
    found = {pid for pid, uid in listed.items()
             if uid >= identity.JOB_BASE and instance_of(pid) not in (None, instance)}
    found |= {ppid[pid] for pid in found if listed.get(ppid.get(pid, 0), 0)}
    return found


def daemon_view(daemon_pid: int, instance: str | None = None) -> View:
    """A view for tests that talk only to one live daemon: it hides that daemon's warm
    containers, the containers other supervisors own now (``supervised_elsewhere``) or
    other daemons' cgroups hold (``of_other_instances``, given the daemon's
    ``instance``), and every cgroup: a job cannot make one, the daemon's own are
    recycled across tests by design, and whether they are gone is for the check
    made after the daemon stops.
    """

    def view(snap: Snapshot) -> Snapshot:
        hidden = warm_containers(daemon_pid) | supervised_elsewhere(daemon_pid)
        if instance is not None:
            hidden |= of_other_instances(instance)
        out = dict(snap)
        out["procs"] = [p for p in snap["procs"] if p[0] not in hidden]  # type: ignore[attr-defined]
        out["cgroups"] = set()
        return out

    return view


def only_ours(instance: str) -> View:
    """After our daemon stopped: its cgroups (under ``sandboxd-<instance>``), and container
    processes that no other live supervisor owns and no other daemon's cgroup holds.
    Other test runs on a shared machine make both meanwhile; whatever our jobs left
    would hang from PID 1 in our cgroups, or be under our root."""
    mark = f"sandboxd-{instance}"

    def view(snap: Snapshot) -> Snapshot:
        elsewhere = supervised_elsewhere() | of_other_instances(instance)
        out = dict(snap)
        out["procs"] = [p for p in snap["procs"]  # type: ignore[attr-defined]
                        if p[0] not in elsewhere]
        out["cgroups"] = {c for c in snap["cgroups"]  # type: ignore[attr-defined]
                          if mark in c.split("/")}
        return out

    return view


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still exist and are not zombies."""
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.add(pid)
        except OSError:
            pass
    return out
