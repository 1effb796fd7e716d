"""cgroup v1: one directory per hierarchy (memory, cpuacct, cpu, cpuset, pids, freezer).

Strategy: find each controller's mount in /proc/self/mountinfo and our own
cgroup in it from /proc/self/cgroup, make ``<own>/sandboxd-<tag>`` there, and
give every job one directory of the same name in each hierarchy (co-mounted
controllers such as ``cpu,cpuacct`` share one). v1 has no "no internal
processes" rule, so this process never moves.

Which files carry what, on v1:
- limit: ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes`` (RAM+swap,
  so swap cannot stretch the limit), ``pids.max``, ``cpu.cfs_quota_us``,
  ``cpuset.cpus`` (a new cpuset starts empty: the root sets
  ``cgroup.clone_children`` so jobs inherit the parent's cpus and mems);
- measure: ``cpuacct.usage`` (ns, exact: the hot path), ``cpuacct.usage_user``
  / ``usage_sys`` (tick-sampled ns; scaled here so that user + system ==
  usage, which is what v2's cpu.stat does in the kernel),
  ``memory.memsw.max_usage_in_bytes``, ``oom_kill`` in ``memory.oom_control``
  (the reliable OOM-kill counter: failcnt counts reclaim, not kills),
  ``pids.peak``;
- kill: ``freezer.state`` FROZEN, SIGKILL by pid, THAWED, poll until empty.

This module must not know about jobs, sockets or trio.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import _fs
from ._base import (
    CgroupBackend,
    CgroupError,
    CgroupLimits,
    CgroupStats,
    JobCgroup,
    MemoryInUse,
    RunFiles,
)

#: The hierarchies a job is placed in, in the order they are written.
CONTROLLERS = ("freezer", "memory", "pids", "cpuacct", "cpu", "cpuset")
_UNLIMITED = "-1"
#: Charge an empty cgroup may keep across reset() without reclaim: the most a
#: recycled cgroup's next memory peak can be overstated by.
LEFTOVER_OK = 256 << 10
#: The most an empty cgroup's usage can be the kernel's per-CPU charge caches rather
#: than memory: a batch of 64 pages (MEMCG_CHARGE_BATCH) pre-charged on each CPU
#: (counted up to 16 CPUs: above that, force_empty in a thread, as for page cache).
_CHARGE_CACHES = 64 * os.sysconf("SC_PAGE_SIZE") * min(os.cpu_count() or 1, 16)


@dataclass(frozen=True, slots=True)
class _Features:
    """What this kernel offers, probed once when the backend opens."""

    memsw: bool  # memory.memsw.* (swap accounting)
    usage_split: bool  # cpuacct.usage_user / usage_sys in ns
    oom_kill: bool  # "oom_kill N" in memory.oom_control
    pids_peak: bool
    root_cpus: str | None  # cpuset.cpus of our root: what "no pinning" restores
    cfs_period_us: int


def _oom_kills(text: str) -> int:
    """memory.oom_control's ``oom_kill`` (its one line, not the whole file parsed;
    "oom_kill " cannot match ``oom_kill_disable``)."""
    _, found, value = text.rpartition("oom_kill ")
    return int(value.split(None, 1)[0]) if found else 0


def _split(total: int, user: int, system: int) -> tuple[int, int]:
    """Scale tick-sampled user/system so that they add up to the exact total."""
    if user + system <= 0:
        return total, 0
    u = total * user // (user + system)
    return u, total - u


class V1Job(JobCgroup):
    """A job's directory in each v1 hierarchy; see the module docstring."""

    def __init__(self, backend: V1Backend, name: str, dirs: dict[str, str]) -> None:
        self.name = name
        self._backend = backend
        self._dirs = dirs  # controller -> directory (co-mounted ones repeat)
        self._unique = list(dict.fromkeys(dirs.values()))
        self._f = backend._features
        # The peak ``stats`` reads and ``reset`` zeroes: with swap accounting, memory + swap.
        self._peak = "memory.memsw.max_usage_in_bytes" if self._f.memsw \
            else "memory.max_usage_in_bytes"
        self._removed = False
        # What we last wrote to each limit file: a fresh cgroup is unlimited,
        # and only we write these files, so equal values need no syscall.
        self._written: dict[str, str] = {}
        if "memory" in dirs:
            self._written[self._path("memory", "memory.limit_in_bytes")] = _UNLIMITED
            if self._f.memsw:
                self._written[self._path("memory", "memory.memsw.limit_in_bytes")] = _UNLIMITED
        if "pids" in dirs:
            self._written[self._path("pids", "pids.max")] = "max"
        if "cpu" in dirs:
            self._written[self._path("cpu", "cpu.cfs_quota_us")] = _UNLIMITED
        if "cpuset" in dirs and self._f.root_cpus is not None:
            self._written[self._path("cpuset", "cpuset.cpus")] = self._f.root_cpus
        self._oom_base = 0
        self._pids_peak_base: int | None = None  # set once recycled: pids.peak has no reset
        # (OOM kills, pids.peak) as ``stats(ended=True)`` read them from the emptied cgroup,
        # for the next ``reset``; None once anything may have entered since.
        self._ended: tuple[int, int | None] | None = None
        # Counter files read at every job's start and end, kept open: one pread each
        # instead of open, read and close (kernfs regenerates a file at offset 0).
        self._fds: dict[str, int] = {}
        # Files written at every job (cgroup.procs of each hierarchy, the limits, the
        # counters reset for the next job), kept open for writing too: a write(2) on an
        # open kernfs file is ~0.6 µs, open + write + close ~7 µs (measured here), and a
        # job writes ~15 of them. Each write(2) is one complete value to the kernel.
        # The counters reset writes that stats reads share one O_RDWR descriptor. In all,
        # at most 17 descriptors per cgroup (7 counters read, 6 cgroup.procs, 3 limits,
        # memory.max_usage_in_bytes), 19 once cpuset.cpus or cpu.cfs_quota_us was set.
        self._wfds: dict[str, int] = {}
        self._rw: set[str] = set()
        if "cpuacct" in dirs:
            self._rw.add(self._path("cpuacct", "cpuacct.usage"))
        if "memory" in dirs:
            self._rw.add(self._path("memory", self._peak))
        self._maybe_frozen = False  # a freeze not yet followed by a successful thaw
        self._run_fds: tuple | None = None  # run_files' descriptors, once asked for
        self._run_files: RunFiles | None = None  # and what it gave last
        self._counters: list[tuple[str, str]] | None = None  # _counter_files, once made
        self._usage_fd = -1
        self._zero_cpu = True  # ``baseline`` zeroes the CPU counters (until that fails)
        if "cpuacct" in dirs:
            self._usage_fd = self._fd(self._path("cpuacct", "cpuacct.usage"))

    def __repr__(self) -> str:
        return f"<V1Job {self.name} in {len(self._unique)} hierarchies>"

    def _path(self, controller: str, file: str) -> str:
        return f"{self._dirs[controller]}/{file}"

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            try:
                try:
                    fd = os.open(path, (os.O_RDWR if path in self._rw else os.O_RDONLY)
                                 | os.O_CLOEXEC)
                except PermissionError:  # not ours to write: reads still work, writes fail
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                self._fds[path] = fd
            except OSError as e:
                raise _fs.fail("open", path, e) from e
        return fd

    def _write(self, path: str, value: str | int) -> None:
        """``_fs.write`` through a descriptor kept open (see __init__); same errors."""
        if self._removed:
            raise CgroupError(f"{self.name}: removed")
        fd = self._fd(path) if path in self._rw else self._wfd(path)
        try:
            os.write(fd, str(value).encode() or b"\n")
        except OSError as e:
            raise _fs.fail(f"write {value!r} to", path, e) from e

    def _wfd(self, path: str) -> int:
        """A file written at every job, open for writing only (see __init__)."""
        fd = self._wfds.get(path)
        if fd is None:
            try:
                fd = self._wfds[path] = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as e:
                raise _fs.fail("open", path, e) from e
        return fd

    def _read(self, controller: str, file: str) -> str:
        """A counter file, through a descriptor kept open (see __init__)."""
        if self._removed:
            raise CgroupError(f"{self.name}: removed")
        path = self._path(controller, file)
        return _fs.pread(self._fd(path), path)

    def _need(self, controller: str, what: str) -> None:
        if controller not in self._dirs:
            raise CgroupError(f"{what} needs the v1 {controller} controller, which is not mounted")

    def _put(self, path: str, value: str) -> None:
        if self._written.get(path) != value:
            self._write(path, value)
            self._written[path] = value

    def set_limits(self, limits: CgroupLimits) -> None:
        """Write every limit (``None`` lifts it); unchanged values cost nothing."""
        if "memory" in self._dirs:
            value = _UNLIMITED if limits.memory is None else str(int(limits.memory))
            limit = self._path("memory", "memory.limit_in_bytes")
            memsw = self._path("memory", "memory.memsw.limit_in_bytes")
            try:
                if not self._f.memsw:
                    self._put(limit, value)
                elif self._written.get(limit) != value or self._written.get(memsw) != value:
                    # The kernel insists limit <= memsw at every step: lift memsw
                    # first, then set the limit, then bring memsw down to it.
                    self._put(memsw, _UNLIMITED)
                    self._put(limit, value)
                    self._put(memsw, value)
            except CgroupError as e:
                cause = e.__cause__
                if isinstance(cause, OSError) and cause.errno == errno.EBUSY:
                    raise MemoryInUse(str(e)) from cause
                raise
        elif limits.memory is not None:
            self._need("memory", "a memory limit")
        if "pids" in self._dirs:
            self._put(self._path("pids", "pids.max"), str(limits.pids or "max"))
        elif limits.pids is not None:
            self._need("pids", "a pids limit")
        if "cpuset" in self._dirs and self._f.root_cpus is not None:
            self._put(self._path("cpuset", "cpuset.cpus"), limits.cpuset or self._f.root_cpus)
        elif limits.cpuset is not None:
            self._need("cpuset", "cpu pinning")
        if "cpu" in self._dirs:
            quota = _UNLIMITED
            if limits.cpu_quota is not None:
                quota = str(max(1000, round(limits.cpu_quota * self._f.cfs_period_us)))
            self._put(self._path("cpu", "cpu.cfs_quota_us"), quota)
        elif limits.cpu_quota is not None:
            self._need("cpu", "a cpu quota")

    def add_pid(self, pid: int) -> None:
        """Write ``pid`` to cgroup.procs in every hierarchy (freezer first)."""
        self._ended = None  # no longer proven empty
        for d in self._unique:
            self._write(f"{d}/cgroup.procs", pid)

    def procs_files(self) -> list[int]:
        if self._removed:
            raise CgroupError(f"{self.name}: removed")
        return [self._wfd(f"{d}/cgroup.procs") for d in self._unique]

    def pids(self) -> list[int]:
        """Pids in the freezer hierarchy (the first one we write to)."""
        return _fs.read_pids(f"{self._unique[0]}/cgroup.procs")

    def _all_pids(self) -> set[int]:
        found: set[int] = set()
        for d in self._unique:
            found.update(_fs.read_pids(f"{d}/cgroup.procs"))
        return found

    def cpu_usage_ns(self) -> int:
        """One pread of cpuacct.usage (exact ns, children and threads included)."""
        if self._usage_fd < 0:
            self._need("cpuacct", "cpu usage")
            raise CgroupError(f"{self.name}: removed")
        return int(_fs.pread(self._usage_fd, "cpuacct.usage"))

    def _counter_files(self) -> list[tuple[str, str]]:
        """The files ``stats`` reads, in its order (``run_files`` lends them so)."""
        if self._counters is not None:
            return self._counters
        files = self._counters = []
        if "cpuacct" in self._dirs:
            files.append(("cpuacct", "cpuacct.usage"))
            files += [("cpuacct", "cpuacct.usage_user"), ("cpuacct", "cpuacct.usage_sys")] \
                if self._f.usage_split else [("cpuacct", "cpuacct.stat")]
        if "memory" in self._dirs:
            files.append(("memory", self._peak))
            if self._f.oom_kill:
                files.append(("memory", "memory.oom_control"))
        if "pids" in self._dirs and self._f.pids_peak:
            files.append(("pids", "pids.peak"))
        return files

    def stats(self, ended: bool = False) -> CgroupStats:
        """Every counter; user/system are scaled to add up to the exact usage. ``ended``
        (the cgroup proven empty): what ``reset`` would read again (the OOM kills and
        pids.peak, which no process is left to raise, and the emptiness itself) is kept
        for it, 5 system calls fewer per job (``_ended``)."""
        return self._stats_of(self._read, ended)

    def stats_from(self, texts: list[bytes], ended: bool = False) -> CgroupStats:
        """``stats`` from the texts of its files read by the engine (``run_files``' counters,
        in that order), after a run it watched."""
        files = self._counter_files()
        if len(texts) != len(files):
            raise CgroupError(f"{self.name}: {len(texts)} counters read, {len(files)} lent")
        got = dict(zip(files, texts, strict=True))
        try:
            return self._stats_of(lambda c, f: got[c, f].decode(), ended)
        except (ValueError, KeyError) as e:
            raise CgroupError(f"{self.name}: a counter the engine read: {e!r}") from e

    def _stats_of(self, get: Callable[[str, str], str], ended: bool) -> CgroupStats:
        usage, user, system = self._cpu_of(get)
        peak = oom_total = 0
        if "memory" in self._dirs:
            peak = int(get("memory", self._peak))
            if self._f.oom_kill:
                oom_total = _oom_kills(get("memory", "memory.oom_control"))
        pids_peak = raw_pids_peak = None
        if "pids" in self._dirs and self._f.pids_peak:
            pids_peak = raw_pids_peak = int(get("pids", "pids.peak"))
            if self._pids_peak_base is not None and pids_peak <= self._pids_peak_base:
                pids_peak = None  # recycled, and this job's peak is hidden by an earlier one
        self._ended = (oom_total, raw_pids_peak) if ended else None
        return CgroupStats(usage, user, system, peak, oom_total - self._oom_base, pids_peak)

    def _cpu_of(self, get: Callable[[str, str], str]) -> tuple[int, int, int]:
        """usage, user, system from ``get``'s texts; user/system are scaled to add up to
        the exact usage."""
        if "cpuacct" not in self._dirs:
            return 0, 0, 0
        usage = int(get("cpuacct", "cpuacct.usage"))
        if self._f.usage_split:
            u = int(get("cpuacct", "cpuacct.usage_user"))
            s = int(get("cpuacct", "cpuacct.usage_sys"))
        else:  # USER_HZ ticks: only the ratio matters
            st = _fs.keyed(get("cpuacct", "cpuacct.stat"))
            u, s = st.get("user", 0), st.get("system", 0)
        return usage, *_split(usage, u, s)

    def run_files(self) -> RunFiles | None:
        """What the engine needs to watch a run of this cgroup and reset it after
        (sandboxd/engine.py, RUN): descriptors kept open here, lent with each run."""
        if self._removed or not {"cpuacct", "memory", "freezer"} <= self._dirs.keys():
            return None
        limit = self._path("memory", "memory.limit_in_bytes")
        fixed = self._run_fds
        if fixed is None:
            fdir = self._fds.get(self._dirs["freezer"])
            if fdir is None:
                try:
                    fdir = os.open(self._dirs["freezer"],
                                   os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                except OSError as e:
                    raise _fs.fail("open", self._dirs["freezer"], e) from e
                self._fds[self._dirs["freezer"]] = fdir
            fixed = self._run_fds = (
                self._wfd(self._path("freezer", "freezer.state")), fdir,
                self._fd(self._path("memory", "memory.usage_in_bytes")), self._wfd(limit),
                tuple(self._fd(self._path(c, f)) for c, f in self._counter_files()),
                (self._fd(self._path("memory", self._peak)),
                 self._fd(self._path("cpuacct", "cpuacct.usage"))))
        restore = self._written.get(limit, "").encode()
        if len(restore) >= 32:
            restore = b""
        last = self._run_files
        if last is None or last.restore != restore:
            last = self._run_files = RunFiles(*fixed, restore, LEFTOVER_OK, _CHARGE_CACHES)
        return last

    def engine_reset(self, limit_lost: bool) -> None:
        """The engine reset this cgroup after a run whose counters ``stats_from(ended=True)``
        took (``reset``'s work, done there: the peaks and CPU zeroed, the job's limits kept,
        the charge caches drained if need be): what ``reset`` keeps here follows."""
        ended, self._ended = self._ended, None
        if ended is None:
            raise CgroupError(f"{self.name}: reset by the engine without its counters")
        if "memory" in self._dirs and self._f.oom_kill:
            self._oom_base = ended[0]
        if "pids" in self._dirs and self._f.pids_peak:
            self._pids_peak_base = ended[1]
        if limit_lost:  # written again by the next set_limits
            self._written.pop(self._path("memory", "memory.limit_in_bytes"), None)

    def baseline(self) -> CgroupStats:
        """Zero: the CPU counters are zeroed now (one write, where reading them took three),
        and the peaks are not subtracted (the cgroup's reset zeroed them, or it is new).
        No OOM kill can be counted since the reset read its base (``_oom_base``), since the
        limits are lifted until this job's (a job process killed before its job is not
        handed one). Zeroing is as exact as reading: whatever ran here so far is charged
        up to now either way (a task is charged when it sleeps, and one still running has
        the rest of its slice charged after, to the job, as after a read).
        Where the counter cannot be written (not ours), it is read instead."""
        if self._usage_fd >= 0 and self._zero_cpu:
            try:
                self._write(self._path("cpuacct", "cpuacct.usage"), "0")  # user/sys too
                return CgroupStats(0, 0, 0, 0, 0, None)
            except CgroupError:
                self._zero_cpu = False
        return CgroupStats(*self._cpu_of(self._read), 0, 0, None)

    def _oom_kills(self) -> int:
        return _oom_kills(self._read("memory", "memory.oom_control"))

    def _freeze(self, state: str, deadline: float) -> bool:
        path = self._path("freezer", "freezer.state")
        self._maybe_frozen = True
        _fs.write(path, state)
        return _fs.wait_for(lambda: _fs.read(path).strip() == state, deadline)

    def kill_all(self, timeout: float = 5.0) -> None:
        """Freeze, SIGKILL every pid (cgroup.procs, then tasks), thaw, poll until empty.

        Without a freezer hierarchy the same loop runs unfrozen; it still
        terminates because pids.max bounds how many processes can appear.
        """
        deadline = time.monotonic() + timeout
        freezer = "freezer" in self._dirs
        while pids := self._all_pids():
            now = time.monotonic()
            if now >= deadline:
                raise CgroupError(f"{self.name}: {len(pids)} processes survived kill_all")
            try:
                if freezer:  # a stuck (D-state) task may never freeze: kill anyway
                    self._freeze("FROZEN", min(deadline, now + timeout / 4))
                _fs.sigkill(pids)
                for d in self._unique:  # threads whose leader is elsewhere, and late forks
                    _fs.sigkill(_fs.read_pids(f"{d}/tasks"))
            finally:  # never leave it frozen, whatever happened
                if freezer:
                    _fs.write(self._path("freezer", "freezer.state"), "THAWED")
                    self._maybe_frozen = False
            _fs.wait_for(lambda: not self._all_pids(), min(deadline, now + timeout / 2))

    def reset(self, usage: int | None = None, keep: CgroupLimits | None = None) -> None:
        """Prove emptiness, lift limits, zero the peaks and CPU counters in place.

        oom_kill and pids.peak cannot be reset: oom_kill is read as a delta, and
        pids.peak is reported only when this job pushed it higher. ``usage``: the
        memory charge the caller has just read (``reset_quick``), not read again.

        Emptiness is proven in the first hierarchy, the one every move into this
        cgroup writes first (``add_pid``, and a container's init in the same order
        through ``procs_files``): a process enters the others only after it, only
        we (or that init, once, before its job) write any cgroup.procs here, and a
        process leaves only by exiting, which takes it out of every hierarchy at
        once (one css_set). So the others cannot hold a process the first does not, and
        reading all six (~45 µs per job) proved nothing more.
        """
        ended, self._ended = self._ended, None
        # Proven empty by ``stats(ended=True)``, and nothing moved in since (``add_pid``
        # forgets it; the only other writer, a container's init, closes the lent
        # cgroup.procs files before it is ready, and this cgroup's is dead or used).
        if ended is None and (pids := self.pids()):
            raise CgroupError(f"{self.name}: cannot reset, still holds pids {sorted(pids)}")
        self.set_limits(keep or CgroupLimits())
        if "freezer" in self._dirs and self._maybe_frozen:
            _fs.write(self._path("freezer", "freezer.state"), "THAWED")
            self._maybe_frozen = False
        if "memory" in self._dirs:
            # Page cache the last job left charged here would start the next peak
            # above 0: reclaim it (~0.5 ms, an lru drain on every CPU), unless small.
            if usage is None:
                usage = int(self._read("memory", "memory.usage_in_bytes"))
            if usage > LEFTOVER_OK:
                try:
                    _fs.write(self._path("memory", "memory.force_empty"), "0")
                except CgroupError:
                    pass  # the peak is still reset below, to what is left
            # Only the peak ``stats`` reads (with swap accounting, memory + swap), not
            # the failcnt files either: nothing here reads them; they count reclaim.
            self._write(self._path("memory", self._peak), "0")
            if self._f.oom_kill:
                self._oom_base = self._oom_kills() if ended is None else ended[0]
        if "cpuacct" in self._dirs:
            self._write(self._path("cpuacct", "cpuacct.usage"), "0")  # also zeroes user/sys
        if "pids" in self._dirs and self._f.pids_peak:
            self._pids_peak_base = int(self._read("pids", "pids.peak")) \
                if ended is None or ended[1] is None else ended[1]

    def reset_quick(self, keep: CgroupLimits | None = None) -> bool:
        """``reset`` unless page cache must be reclaimed (force_empty, ~0.5 ms or more).

        Most of what an empty cgroup still shows charged after a small job is no
        memory at all: the kernel charges a cgroup in batches of 64 pages and keeps
        the rest of each batch in a per-CPU cache (several cgroups per CPU since
        6.16), given back only when that CPU charges other cgroups or something
        drains the caches. A third of used ``/bin/true`` cgroups showed 260-600 KiB
        so (about 50 KiB of it kernel objects), and each cost a force_empty in a
        thread (~0.45 ms of CPU, an LRU drain on every CPU). A memory limit below
        the usage drains those caches first (and then reclaims, here only a few
        pages); ~0.07 ms on the event loop, after which 94 % need nothing more.
        """
        usage = None
        if "memory" in self._dirs:
            usage = int(self._read("memory", "memory.usage_in_bytes"))
            if usage > LEFTOVER_OK:
                if usage > LEFTOVER_OK + _CHARGE_CACHES or self.pids():
                    return False  # page cache (or a process): reset in a thread
                usage = self._drain_charge_caches()
                if usage > LEFTOVER_OK:
                    return False
        self.reset(usage, keep)
        return True

    def _drain_charge_caches(self) -> int:
        """Give back the per-CPU charge caches (``reset_quick``); the usage after it."""
        limit = self._path("memory", "memory.limit_in_bytes")
        try:
            self._write(limit, str(LEFTOVER_OK))
            self._written[limit] = str(LEFTOVER_OK)  # reset's set_limits lifts it
        except CgroupError:
            pass  # EBUSY: still above it after the drain (and a little reclaim)
        return int(self._read("memory", "memory.usage_in_bytes"))

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left, rmdir in every hierarchy. Idempotent."""
        if self._removed:
            return
        for fd in (*self._fds.values(), *self._wfds.values()):
            os.close(fd)
        self._fds.clear()
        self._wfds.clear()
        self._run_fds = self._run_files = None
        self._usage_fd = -1
        if self._all_pids():
            self.kill_all(timeout)
        deadline = time.monotonic() + timeout
        for d in self._unique:
            _fs.rmdir(d, deadline)
        self._removed = True
        self._backend._jobs.pop(self.name, None)


class V1Backend(CgroupBackend):
    """Our root ``sandboxd-<tag>`` beneath our own cgroup in each v1 hierarchy."""

    version = 1

    def __init__(self, tag: str) -> None:
        self.root_name = _fs.root_name_for(tag)
        self._jobs: dict[str, V1Job] = {}
        self._closed = False
        self._problems: list[str] = []
        own = self._find_own()
        self._roots = {c: f"{d}/{self.root_name}" for c, d in own.items()}
        if not own:
            raise CgroupError("no cgroup v1 hierarchy with memory, cpu, pids... is mounted")
        made: list[str] = []
        try:
            for d in dict.fromkeys(self._roots.values()):
                if _fs.mkdir(d, exist_ok=True):
                    made.append(d)
            self._features = self._probe(own)
        except BaseException:
            for d in reversed(made):
                _fs.rmdir(d, time.monotonic() + 1)
            raise

    def _find_own(self) -> dict[str, str]:
        """{controller: directory of our own cgroup} for each mounted controller we use."""
        mounts = [m for m in _fs.mounts() if m.fstype == "cgroup"]
        own = _fs.own_cgroups()
        found: dict[str, str] = {}
        for c in CONTROLLERS:
            mount = next((m for m in mounts if c in m.options), None)
            path = next((p for k, p in own.items() if c in k.split(",")), None)
            if mount is None or path is None:
                self._problems.append(
                    f"cgroup v1 controller {c!r} is not mounted: mount it, e.g. "
                    f"`mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup "
                    f"/sys/fs/cgroup/{c}`"
                )
                continue
            found[c] = _fs.on_disk(mount, path)
        return found

    def _probe(self, own: dict[str, str]) -> _Features:
        r = self._roots
        memsw = "memory" in r and os.path.exists(f"{r['memory']}/memory.memsw.limit_in_bytes")
        if "memory" in r and not memsw:
            self._problems.append(
                "memory.memsw.* is missing (swap accounting off): a job may use swap beyond "
                "its memory limit; boot with swapaccount=1, or run without swap"
            )
        oom_kill = "memory" in r and "oom_kill" in _fs.keyed(
            _fs.read(f"{r['memory']}/memory.oom_control")
        )
        if "memory" in r and not oom_kill:
            self._problems.append(
                "memory.oom_control has no oom_kill counter (kernel < 4.13): OOM kills "
                "read as 0; upgrade the kernel"
            )
        split = "cpuacct" in r and os.path.exists(f"{r['cpuacct']}/cpuacct.usage_user")
        pids_peak = "pids" in r and os.path.exists(f"{r['pids']}/pids.peak")
        if "pids" in r and not pids_peak:
            self._problems.append("pids.peak is missing (kernel < 6.1): pids_peak reads None")
        cpus = None
        if "cpuset" in r:
            # A new v1 cpuset is empty, and nothing can join an empty cpuset:
            # copy our own, and let every job inherit ours (clone_children).
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not _fs.read(f"{r['cpuset']}/{f}").strip():
                    _fs.write(f"{r['cpuset']}/{f}", _fs.read(f"{own['cpuset']}/{f}").strip())
            _fs.write(f"{r['cpuset']}/cgroup.clone_children", "1")
            cpus = _fs.read(f"{r['cpuset']}/cpuset.cpus").strip()
        period = 100_000
        if "cpu" in r:
            period = int(_fs.read(f"{r['cpu']}/cpu.cfs_period_us"))
        return _Features(memsw, split, oom_kill, pids_peak, cpus, period)

    def create(self, name: str) -> V1Job:
        """mkdir ``name`` in each hierarchy; on any failure, none is left behind."""
        if self._closed:
            raise CgroupError("backend is closed")
        _fs.check_job_name(name)
        if name in self._jobs:
            raise CgroupError(f"job cgroup {name} already exists")
        dirs = {c: f"{r}/{name}" for c, r in self._roots.items()}
        made: list[str] = []
        try:
            for d in dict.fromkeys(dirs.values()):
                _fs.mkdir(d)
                made.append(d)
            job = V1Job(self, name, dirs)
        except BaseException:
            for d in reversed(made):
                _fs.rmdir(d, time.monotonic() + 1)
            raise
        self._jobs[name] = job
        return job

    def remove_stale(self) -> list[str]:
        """Kill and remove every ``*sandboxd*`` directory under our root that no live job owns."""
        names: set[str] = set()
        for r in dict.fromkeys(self._roots.values()):
            names.update(n for n in _fs.subdirs(r) if _fs.MARK in n and n not in self._jobs)
        removed: list[str] = []
        for name in sorted(names):
            dirs = {c: f"{r}/{name}" for c, r in self._roots.items()}
            dirs = {c: d for c, d in dirs.items() if os.path.isdir(d)}
            job = V1Job(self, name, dirs)
            job.remove()
            removed.extend(job._unique)
        return removed

    def close(self) -> None:
        """Remove every job, anything stale, and the root in each hierarchy. Idempotent."""
        if self._closed:
            return
        for job in list(self._jobs.values()):
            job.remove()
        self.remove_stale()
        deadline = time.monotonic() + 5
        for d in dict.fromkeys(self._roots.values()):
            _fs.rmdir(d, deadline)
        self._closed = True

    def problems(self) -> list[str]:
        """Missing controllers and features, each with its fix."""
        return list(self._problems)
