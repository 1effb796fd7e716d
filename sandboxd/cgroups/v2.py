"""cgroup v2: one unified tree; jobs are siblings under ``<own>/sandboxd-<tag>``.

Strategy (delegation done right): work inside the cgroup this process was
started in (``own``, from /proc/self/cgroup). v2 forbids a non-root cgroup to
both hold processes and hand controllers to its children, so when ``own`` is
not the root this process moves itself (and its direct children, the only
processes it started) into the leaf ``<own>/sandboxd.supervisor``, then enables
``+cpu +memory +pids`` (and ``+cpuset`` if delegated) in ``own`` and in our
root. Once moved, every process this program starts later is born in that
leaf, not in ``own``: whoever starts the zygote needs to know that. The leaf's
name has a '.', which no tag may contain, so it can never be a backend's root;
several backends in one process share it, and the last to close moves the
processes back to ``own`` when nothing else lives there.

Which files carry what, on v2:
- limit: ``memory.max`` with ``memory.swap.max`` 0, ``pids.max``, ``cpu.max``,
  ``cpuset.cpus``;
- measure: ``cpu.stat`` (µs; user + system == usage, made so by the kernel),
  ``memory.peak`` (5.19+; resettable per open file since 6.12, where older
  kernels make ``reset`` recreate the cgroup instead; without it
  ``memory.current`` is sampled), ``oom_kill`` in ``memory.events`` (which is
  hierarchical, so a sub-cgroup made by the job still counts), ``pids.peak``;
- kill: ``cgroup.freeze`` (wait for ``frozen 1`` in ``cgroup.events``),
  ``cgroup.kill``, thaw, wait for ``populated 0``; waits use poll(2) on
  ``cgroup.events``, which the kernel notifies on every change.

This module must not know about jobs, sockets or trio.
"""

from __future__ import annotations

import os
import select
import time
import warnings
from dataclasses import dataclass

from . import _fs
from ._base import CgroupBackend, CgroupError, CgroupLimits, CgroupStats, JobCgroup

CONTROLLERS = ("cpu", "memory", "pids", "cpuset")
LEAF = f"{_fs.MARK}.supervisor"
#: Charge an empty cgroup may keep across reset() without memory.reclaim: the
#: most a recycled cgroup's next memory peak can be overstated by.
LEFTOVER_OK = 256 << 10


@dataclass(frozen=True, slots=True)
class _Features:
    """What this kernel and our delegation offer, probed once when the backend opens."""

    controllers: frozenset[str]  # enabled for our job cgroups
    swap: bool  # memory.swap.max
    peak: bool  # memory.peak (5.19+)
    peak_reset: bool  # a write to memory.peak resets it for that fd (6.12+)
    pids_peak: bool
    kill: bool  # cgroup.kill (5.14+)
    freeze: bool  # cgroup.freeze (5.2+)


class V2Job(JobCgroup):
    """One job's directory in the unified hierarchy; see the module docstring."""

    def __init__(self, backend: V2Backend, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self._backend = backend
        self._f = backend._features
        self._removed = False
        self._fds: dict[str, int] = {}
        self._open()

    def __repr__(self) -> str:
        return f"<V2Job {self.path}>"

    def _open(self) -> None:
        """Fresh counters and fds: called on creation and when reset recreates the cgroup."""
        self._written: dict[str, str] = {}  # a fresh cgroup is unlimited; see set_limits
        self._cpu_base = (0, 0, 0)
        self._oom_base = 0
        self._pids_peak_base: int | None = None  # pids.peak has no reset anywhere
        self._sampled_peak = 0
        files = {"cpu.stat": os.O_RDONLY, "cgroup.events": os.O_RDONLY}
        if self._f.peak:
            files["memory.peak"] = os.O_RDWR if self._f.peak_reset else os.O_RDONLY
        elif "memory" in self._f.controllers:
            files["memory.current"] = os.O_RDONLY
        for file, mode in files.items():
            try:
                self._fds[file] = os.open(f"{self.path}/{file}", mode | os.O_CLOEXEC)
            except OSError as e:
                self._close()
                raise _fs.fail("open", f"{self.path}/{file}", e) from e

    def _close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _read(self, file: str) -> str:
        fd = self._fds.get(file)
        if fd is None:
            return _fs.read(f"{self.path}/{file}")
        return _fs.pread(fd, f"{self.path}/{file}")

    def _put(self, file: str, value: str) -> None:
        if self._written.get(file, "max") != value:
            _fs.write(f"{self.path}/{file}", value)
            self._written[file] = value

    def _need(self, controller: str, what: str) -> None:
        if controller not in self._f.controllers:
            why = [p for p in self._backend.problems() if controller in p or "holds" in p]
            raise CgroupError(
                f"{what} needs the {controller} controller, which our job cgroups do not "
                f"have: {'; '.join(why) or 'see problems()'}"
            )

    def set_limits(self, limits: CgroupLimits) -> None:
        """Write every limit (``None`` lifts it); unchanged values cost nothing."""
        if limits.memory is not None:
            self._need("memory", "a memory limit")
        if "memory" in self._f.controllers:
            value = "max" if limits.memory is None else str(int(limits.memory))
            if self._f.swap:  # before memory.max, so swap never widens a new limit
                self._put("memory.swap.max", "max" if limits.memory is None else "0")
            self._put("memory.max", value)
        if limits.pids is not None:
            self._need("pids", "a pids limit")
        if "pids" in self._f.controllers:
            self._put("pids.max", str(limits.pids or "max"))
        if limits.cpuset is not None:
            self._need("cpuset", "cpu pinning")
        if "cpuset" in self._f.controllers:  # "" is the initial value: the parent's cpus
            self._written.setdefault("cpuset.cpus", "")
            self._put("cpuset.cpus", limits.cpuset or "")
        if limits.cpu_quota is not None:
            self._need("cpu", "a cpu quota")
        if "cpu" in self._f.controllers:
            quota = "max"
            if limits.cpu_quota is not None:
                quota = str(max(1000, round(limits.cpu_quota * 100_000)))
            self._written.setdefault("cpu.max", "max 100000")
            self._put("cpu.max", f"{quota} 100000")

    def add_pid(self, pid: int) -> None:
        """Write ``pid`` to cgroup.procs."""
        _fs.write(f"{self.path}/cgroup.procs", pid)

    def pids(self) -> list[int]:
        """Pids in cgroup.procs."""
        return _fs.read_pids(f"{self.path}/cgroup.procs")

    def _sample(self) -> None:
        if "memory.current" in self._fds:
            self._sampled_peak = max(self._sampled_peak, int(self._read("memory.current")))

    def _cpu(self) -> tuple[int, int, int]:
        st = _fs.keyed(self._read("cpu.stat"))
        return st["usage_usec"], st["user_usec"], st["system_usec"]

    def cpu_usage_ns(self) -> int:
        """One pread of cpu.stat (also samples memory where the kernel keeps no peak)."""
        if not self._fds:
            raise CgroupError(f"{self.name}: removed")
        self._sample()
        st = self._read("cpu.stat")
        usage = int(st[st.index(" ") + 1 : st.index("\n")])  # first line: usage_usec
        return (usage - self._cpu_base[0]) * 1000

    def stats(self, ended: bool = False) -> CgroupStats:
        """Every counter, as deltas from the last reset where the kernel cannot reset.
        (``ended`` changes nothing here: the reset's reads are one descriptor each, and
        its CPU base is read at the reset, after any charge a dying task still adds.)"""
        self._sample()
        usage, user, _ = (a - b for a, b in zip(self._cpu(), self._cpu_base, strict=True))
        user = min(user, usage)
        system = usage - user  # each is truncated to µs on its own: keep user + system == usage
        peak = oom = 0
        if "memory" in self._f.controllers:
            peak = int(self._read("memory.peak")) if self._f.peak else self._sampled_peak
            oom = _fs.keyed(self._read("memory.events")).get("oom_kill", 0) - self._oom_base
        pids_peak = None
        if self._f.pids_peak:
            pids_peak = int(self._read("pids.peak"))
            if self._pids_peak_base is not None and pids_peak <= self._pids_peak_base:
                pids_peak = None  # recycled, and this job's peak is hidden by an earlier one
        return CgroupStats(usage * 1000, user * 1000, system * 1000, peak, oom, pids_peak)

    def _events(self) -> dict[str, int]:
        return _fs.keyed(self._read("cgroup.events"))

    def _wait_events(self, key: str, want: int, deadline: float) -> bool:
        """Wait until ``key`` in cgroup.events reads ``want``: poll(2), not a sleep loop."""
        fd = self._fds["cgroup.events"]
        poller = select.poll()
        poller.register(fd, select.POLLPRI | select.POLLERR)
        while self._events().get(key) != want:  # reading re-arms the notification
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(max(1, min(int(left * 1000), 50)))  # 50 ms cap: a lost wake-up is cheap
        return True

    def kill_all(self, timeout: float = 5.0) -> None:
        """Freeze, cgroup.kill (or SIGKILL by pid on < 5.14), thaw, wait for populated 0."""
        deadline = time.monotonic() + timeout
        self._sample()
        freeze = f"{self.path}/cgroup.freeze" if self._f.freeze else ""
        while self._events().get("populated"):
            now = time.monotonic()
            if now >= deadline:
                raise CgroupError(f"{self.name}: processes {self.pids()} survived kill_all")
            try:
                if freeze:  # a stuck (D-state) task may never freeze: kill anyway
                    _fs.write(freeze, "1")
                    self._wait_events("frozen", 1, min(deadline, now + timeout / 4))
                if self._f.kill:
                    _fs.write(f"{self.path}/cgroup.kill", "1")
                else:
                    _fs.sigkill(self.pids())
                    _fs.sigkill(_fs.read_pids(f"{self.path}/cgroup.threads"))
            finally:  # never leave it frozen, whatever happened
                if freeze:
                    _fs.write(freeze, "0")
            self._wait_events("populated", 0, min(deadline, now + timeout / 2))

    def reset(self, current: int | None = None, keep: CgroupLimits | None = None) -> None:
        """Prove emptiness, lift limits, restart every counter (``current``: memory.current
        if the caller has just read it).

        Counters the kernel cannot reset (cpu.stat, oom_kill) are read as deltas.
        A peak that cannot be reset in place (memory.peak before 6.12) makes
        reset recreate the directory: exact, at the cost of one memcg of churn.
        """
        if self._events().get("populated"):
            raise CgroupError(f"{self.name}: cannot reset, still holds pids {self.pids()}")
        if self._f.peak and not self._f.peak_reset:
            self._close()
            deadline = time.monotonic() + 5
            _fs.rmdir(self.path, deadline)
            _fs.mkdir(self.path)
            self._open()
            return
        self.set_limits(keep or CgroupLimits())
        if self._f.freeze:
            _fs.write(f"{self.path}/cgroup.freeze", "0")
        if "memory" in self._f.controllers:
            if current is None:
                current = int(self._read("memory.current"))
            if current > LEFTOVER_OK:  # page cache the last job left charged here
                try:
                    _fs.write(f"{self.path}/memory.reclaim", current)
                except CgroupError:
                    pass  # EAGAIN: could not reclaim it all; the peak is still reset below
            if self._f.peak:
                try:
                    os.pwrite(self._fds["memory.peak"], b"reset", 0)
                except OSError as e:
                    raise _fs.fail("reset", f"{self.path}/memory.peak", e) from e
            self._sampled_peak = 0
            self._oom_base = _fs.keyed(self._read("memory.events")).get("oom_kill", 0)
        self._cpu_base = self._cpu()
        if self._f.pids_peak:
            self._pids_peak_base = int(self._read("pids.peak"))

    def reset_quick(self, keep: CgroupLimits | None = None) -> bool:
        """``reset`` on the event loop unless it could block: a peak the kernel cannot
        reset in place (the directory is remade: rmdir may wait) or page cache to
        reclaim (``memory.reclaim``). Those go to a thread, as every reset did: the
        hand-off costs the supervisor ~0.1 ms of CPU, more than the dozen writes and
        reads of a reset that needs neither."""
        if self._f.peak and not self._f.peak_reset:
            return False
        current = None
        if "memory" in self._f.controllers:
            current = int(self._read("memory.current"))
            if current > LEFTOVER_OK:
                return False
        self.reset(current, keep)
        return True

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and rmdir. Idempotent."""
        if self._removed:
            return
        if os.path.isdir(self.path):
            if not self._fds:  # a previous remove failed half-way
                self._open()
            if self._events().get("populated"):
                self.kill_all(timeout)
        self._close()
        _fs.rmdir(self.path, time.monotonic() + timeout)
        self._removed = True
        self._backend._jobs.pop(self.name, None)


class V2Backend(CgroupBackend):
    """Our root ``sandboxd-<tag>`` beneath our own cgroup in the unified hierarchy."""

    version = 2

    def __init__(self, tag: str) -> None:
        self.root_name = _fs.root_name_for(tag)
        self._jobs: dict[str, V2Job] = {}
        self._closed = False
        self._problems: list[str] = []
        mount = min(
            (m for m in _fs.mounts() if m.fstype == "cgroup2"),
            key=lambda m: m.point != "/sys/fs/cgroup",
            default=None,
        )
        if mount is None:
            raise CgroupError("no cgroup2 filesystem is mounted")
        here = _fs.on_disk(mount, _fs.own_cgroups().get("", "/"))
        #: the cgroup we were started in (or, if an earlier backend moved us, its parent)
        self.own = os.path.dirname(here) if os.path.basename(here) == LEAF else here
        self.root = f"{self.own}/{self.root_name}"
        self.leaf = f"{self.own}/{LEAF}"
        # Only the real root has no cgroup.type, and only it may hold processes
        # and enable controllers at once (a namespace's root may not).
        self._is_root = not os.path.exists(f"{self.own}/cgroup.type")
        made = False
        try:
            self._delegate(here)
            made = _fs.mkdir(self.root, exist_ok=True)
            self._features = self._probe()
        except BaseException:
            if made:
                _fs.rmdir(self.root, time.monotonic() + 1)
            raise

    def _delegate(self, here: str) -> None:
        """Move out of ``own`` if v2 requires it, and enable our controllers in ``own``."""
        available = _fs.read(f"{self.own}/cgroup.controllers").split()
        for c in CONTROLLERS:
            if c not in available:
                self._problems.append(
                    f"controller {c!r} is not delegated to {self.own}: enable it on the parent "
                    f"(`echo +{c} > {os.path.dirname(self.own)}/cgroup.subtree_control`), or "
                    f"run sandboxd as a systemd unit with Delegate=yes"
                )
        if not self._is_root and here == self.own:
            _fs.mkdir(self.leaf, exist_ok=True)
            me = os.getpid()
            for pid in [me, *_children(me, _fs.read_pids(f"{self.own}/cgroup.procs"))]:
                try:
                    _fs.write(f"{self.leaf}/cgroup.procs", pid)
                except CgroupError:
                    if pid == me or os.path.exists(f"/proc/{pid}"):
                        raise
        if not self._is_root and (others := _fs.read_pids(f"{self.own}/cgroup.procs")):
            self._problems.append(
                f"{self.own} holds processes sandboxd did not start ({others[:5]}), so v2 "
                f"will not let it hand controllers to children: start sandboxd in a cgroup "
                f"of its own (systemd: Delegate=yes, or `systemd-run --scope -p Delegate=yes`), "
                f"or from a parent living in {self.leaf} (e.g. a test runner that opened a "
                f"backend first): processes born there delegate from {self.own}"
            )
            return
        enabled = _fs.read(f"{self.own}/cgroup.subtree_control").split()
        for c in CONTROLLERS:
            if c in available and c not in enabled:
                try:
                    _fs.write(f"{self.own}/cgroup.subtree_control", f"+{c}")
                except CgroupError as e:
                    self._problems.append(f"cannot enable {c} in {self.own}: {e}")

    def _probe(self) -> _Features:
        r = self.root
        for c in _fs.read(f"{r}/cgroup.controllers").split():
            if c in CONTROLLERS and c not in _fs.read(f"{r}/cgroup.subtree_control").split():
                _fs.write(f"{r}/cgroup.subtree_control", f"+{c}")
        ctl = frozenset(_fs.read(f"{r}/cgroup.subtree_control").split()) & set(CONTROLLERS)
        swap = os.path.exists(f"{r}/memory.swap.max")
        peak = os.path.exists(f"{r}/memory.peak")
        peak_reset = False
        if peak:
            try:  # 6.12+: a write resets the peak, for this fd only (harmless here)
                fd = os.open(f"{r}/memory.peak", os.O_RDWR | os.O_CLOEXEC)
                try:
                    os.write(fd, b"reset")
                    peak_reset = True
                finally:
                    os.close(fd)
            except OSError:
                pass
        f = _Features(
            controllers=ctl,
            swap=swap,
            peak=peak,
            peak_reset=peak_reset,
            pids_peak=os.path.exists(f"{r}/pids.peak"),
            kill=os.path.exists(f"{r}/cgroup.kill"),
            freeze=os.path.exists(f"{r}/cgroup.freeze"),
        )
        p = self._problems.append
        if "memory" in ctl and not swap:
            p(
                "memory.swap.max is missing (swap accounting off): a job may use swap beyond "
                "its memory limit; boot with swapaccount=1, or run without swap"
            )
        if "memory" in ctl and not peak:
            p(
                "memory.peak is missing (kernel < 5.19): the peak is sampled from memory.current "
                "by cpu_usage_ns(), stats() and kill_all(), so a short spike can be missed"
            )
        elif "memory" in ctl and not peak_reset:
            p(
                "memory.peak cannot be reset (kernel < 6.12): reset() recreates the job cgroup "
                "instead, so recycling still churns memory cgroups"
            )
        if "pids" in ctl and not f.pids_peak:
            p("pids.peak is missing (kernel < 6.1): pids_peak reads None")
        if not f.kill:
            p("cgroup.kill is missing (kernel < 5.14): kill_all signals pids one by one")
        if not f.freeze:
            p(
                "cgroup.freeze is missing (kernel < 5.2): kill_all cannot freeze a fork bomb "
                "first; rely on pids.max"
            )
        return f

    def create(self, name: str) -> V2Job:
        """mkdir ``name`` under our root; on failure nothing is left behind."""
        if self._closed:
            raise CgroupError("backend is closed")
        _fs.check_job_name(name)
        if name in self._jobs:
            raise CgroupError(f"job cgroup {name} already exists")
        path = f"{self.root}/{name}"
        _fs.mkdir(path)
        try:
            job = V2Job(self, name, path)
        except BaseException:
            _fs.rmdir(path, time.monotonic() + 1)
            raise
        self._jobs[name] = job
        return job

    def remove_stale(self) -> list[str]:
        """Kill and remove every ``*sandboxd*`` directory under our root that no live job owns."""
        removed = []
        for name in _fs.subdirs(self.root):
            if _fs.MARK in name and name not in self._jobs:
                job = V2Job(self, name, f"{self.root}/{name}")
                job.remove()
                removed.append(job.path)
        return removed

    def close(self) -> None:
        """Remove every job, anything stale and the root; then leave the supervisor leaf.

        The leaf is left (processes moved back to ``own``, our controllers
        disabled there) only when nothing but the leaf remains under ``own``:
        another backend, or anyone else's cgroup, keeps things as they are.
        Idempotent.
        """
        if self._closed:
            return
        for job in list(self._jobs.values()):
            job.remove()
        self.remove_stale()
        _fs.rmdir(self.root, time.monotonic() + 5)
        self._closed = True
        if self._is_root or _fs.subdirs(self.own) != [LEAF]:
            return
        try:
            enabled = _fs.read(f"{self.own}/cgroup.subtree_control").split()
            if enabled:
                _fs.write(f"{self.own}/cgroup.subtree_control", " ".join(f"-{c}" for c in enabled))
            for pid in _fs.read_pids(f"{self.leaf}/cgroup.procs"):
                try:
                    _fs.write(f"{self.own}/cgroup.procs", pid)
                except CgroupError:
                    if os.path.exists(f"/proc/{pid}"):
                        raise
            _fs.rmdir(self.leaf, time.monotonic() + 1)
        except CgroupError as e:
            warnings.warn(f"sandboxd: could not leave {self.leaf}: {e}", stacklevel=2)

    def problems(self) -> list[str]:
        """Missing or undelegated controllers and features, each with its fix."""
        return list(self._problems)


def _children(parent: int, pids: list[int]) -> list[int]:
    """Those of ``pids`` whose parent is ``parent``: the processes we started ourselves."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
            out.append(pid)
    return out
