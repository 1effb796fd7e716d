"""The other sandboxes, set up as close to sandboxd's isolation as each allows, and put away.

Strategy: every peer is a command line that runs one job per process, so the
suite times them all with the same ``spawn_wait``. What a peer needs on the
host (an OCI bundle, a binary the jobs run) is made under names that carry
``sandboxd`` and removed by ``close``: runc's cgroups (a relative
``cgroupsPath``, so runc nests them beneath this process's own cgroup in each
hierarchy, never at the hierarchy's root), runc's state of any container a
crash left, and the bind mounts firejail leaves in the host's mount table.
docs/benchmarks.md lists each peer's isolation. This module knows nothing of the daemon.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from _common import MEMORY_LIMIT, PIDS_LIMIT

CGROUP_ROOT = "/sys/fs/cgroup"
HELLO_C = b'#include <stdio.h>\nint main(void) { puts("hello, world"); return 0; }\n'
# Host uid/gid that runc's container root maps to: outside sandboxd's ranges
# (420000-439999, sandboxd.isolation.identity), so leftover checks never mistake it.
RUNC_HOST_ID = 460000

ISOLATION = {
    "bare": "none: posix_spawn + waitpid of the command (the floor)",
    "sandboxd-warm": "a pool hit: user, pid, mount, net, ipc, uts, cgroup namespaces; tmpfs "
                     "root with ro /usr, /bin, /lib*; own uid; no capabilities; no_new_privs; "
                     "seccomp allow-list; Landlock; a per-job cgroup (memory 256 MiB, pids 64); "
                     "rlimits",
    "sandboxd-cold": "the same as sandboxd-warm, made on the spot (daemon with pool_size = 0)",
    "sandboxd-warm-w2": "the same as sandboxd-warm, from a daemon of two supervisor processes "
                        "(workers = 2), each with its own pool",
    "bwrap": "--unshare-all (user, pid, net, ipc, uts, cgroup namespaces); ro /usr; new "
             "/proc, /dev; tmpfs /tmp; --die-with-parent. No memory limit (bubblewrap has "
             "none), no seccomp",
    "runc": "OCI bundle: user (root -> host uid 460000), pid, net, ipc, uts, mount, cgroup "
            "namespaces; read-only rootfs of empty mount points with ro,nosuid,nodev rbind "
            "/usr; new /proc (masked and ro paths), tmpfs /dev, /tmp; no capabilities; "
            "no_new_privs; cgroup v1 memory 256 MiB, pids 64 at a relative cgroupsPath; "
            "no seccomp",
    "isolate": "isolate 1.x --cg on a ready box (--init once per worker, --run per job, as "
               "judges run tests): its mount, pid, net, ipc, uts namespaces; own uid; "
               "cgroup v1 memory 256 MiB (--cg-mem), --processes=64, --time=5, "
               "--wall-time=10; rlimits. No seccomp, no user namespace",
    "nsjail": "nsjail -Mo --chroot / (read-only): user, pid, net, ipc, uts, mount, cgroup "
              "namespaces; cgroup v1 memory 256 MiB, pids 64; --rlimit_cpu 5, "
              "--time_limit 10; capabilities dropped. No seccomp policy given",
    "crun": "the runc bundle, run by crun (only where Debian's crun accepts the cgroup layout)",
    "firejail": "Debian's firejail as root (server.profile: seccomp, caps dropped, nonewprivs, "
                "private /dev, /tmp, home, blacklists) + --net=none, --read-only=/, "
                "--rlimit-as=256 MiB (its only memory limit). No pid namespace of its own "
                "for the job's children, no cgroup limits",
}


def tool_version(argv: list[str]) -> str:
    """First line of ``argv``'s version output, or why there is none."""
    if not shutil.which(argv[0]):
        return "not installed"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"failed: {e}"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine() -> dict[str, object]:
    """What the figures were measured on: CPU, cores, kernel, cgroup layout, load, tools."""
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers"):
        cgroup = "v2 (unified)"
    elif os.path.isdir(f"{CGROUP_ROOT}/unified"):
        ctl = Path(f"{CGROUP_ROOT}/unified/cgroup.controllers")
        listed = ctl.read_text().split() if ctl.exists() else []
        cgroup = f"v1 hybrid (v2 at {CGROUP_ROOT}/unified, its controllers: {listed or 'none'})"
    else:
        cgroup = "v1"
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    debian = Path("/etc/debian_version")
    return {
        "cpu_model": model, "cores": os.cpu_count(), "kernel": platform.release(),
        "cgroup": cgroup, "memory_bytes": mem, "python": platform.python_version(),
        "debian": debian.read_text().strip() if debian.exists() else "?",
        "loadavg_start": os.getloadavg(),
        "tools": {"bwrap": tool_version(["bwrap", "--version"]),
                  "runc": tool_version(["runc", "--version"]),
                  "crun": tool_version(["crun", "--version"]),
                  "firejail": tool_version(["firejail", "--version"])},
    }


def steal_and_busy() -> tuple[float, float]:
    """(steal, busy) jiffies so far, all CPUs: the hypervisor's and everyone's share."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[7], sum(v[:8]) - v[3] - v[4]  # steal; all but idle and iowait (guest is in user)


class Peers:
    """The peers' files, cgroups and leftovers; a context manager that removes them all."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="sandboxd-bench-peers-"))
        self.tmp.chmod(0o755)  # runc's container root is an unprivileged host uid
        # Jobs see /usr in every sandbox, so the hello binary lives there, named for us.
        self.hello_dir = Path(f"/usr/local/lib/sandboxd-bench-{os.getpid()}")
        self.cgroup_parent = f"sandboxd-bench-runc-{os.getpid()}"
        self._ids = itertools.count()
        self._bundles: dict[tuple[object, ...], Path] = {}
        self._lock = threading.Lock()  # closed-loop client threads make their bundles
        self._mounts_before = set(_mount_points())

    def __enter__(self) -> Peers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the hello-world binary

    def hello(self) -> list[str]:
        """Build the hello-world C binary (dynamically linked, as a judge's would be)."""
        exe = self.hello_dir / "hello"
        if not exe.exists():
            self.hello_dir.mkdir(mode=0o755)
            src = self.tmp / "hello.c"
            src.write_bytes(HELLO_C)
            subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
        return [str(exe)]

    # -- runc (and crun): a bundle per command and closed-loop worker, a fresh id per job

    def bundle(self, argv: list[str], worker: int = 0) -> Path:
        """The bundle of ``argv`` for ``worker``: its own cgroup, since concurrent runc
        containers in one cgroup would share its limits (and race to remove it)."""
        with self._lock:
            return self._bundles.get((worker, *argv)) or self._make_bundle(argv, worker)

    def _make_bundle(self, argv: list[str], worker: int) -> Path:
        rootfs = self.tmp / "rootfs"  # empty mount points, shared read-only by every bundle
        if not rootfs.exists():
            for d in ("usr", "proc", "dev", "tmp"):
                (rootfs / d).mkdir(parents=True)
            for link in ("bin", "lib", "lib64", "sbin"):
                (rootfs / link).symlink_to(f"usr/{link}")
        b = self.tmp / f"bundle-{len(self._bundles)}"
        b.mkdir()
        (b / "config.json").write_text(json.dumps(
            oci_config(argv, str(rootfs), f"{self.cgroup_parent}/{b.name}")))
        self._bundles[(worker, *argv)] = b
        return b

    def runc_argv(self, tool: str, argv: list[str], worker: int = 0) -> list[str]:
        """``runc run`` of ``argv`` under a container id never used before in this run."""
        return [shutil.which(tool) or tool, "run", "--bundle", str(self.bundle(argv, worker)),
                f"sandboxd-bench-{os.getpid()}-{next(self._ids)}"]

    # -- firejail

    @staticmethod
    def firejail_argv(argv: list[str]) -> list[str]:
        return [shutil.which("firejail") or "firejail", "--quiet", "--net=none", "--read-only=/",
                f"--rlimit-as={MEMORY_LIMIT}", *argv]

    # -- clean-up

    def close(self) -> list[str]:
        """Remove everything the peers left; returns what was found left over (and removed)."""
        left: list[str] = []
        for tool in ("runc", "crun"):
            left += _delete_containers(tool, f"sandboxd-bench-{os.getpid()}-")
        left += _remove_cgroups(self.cgroup_parent)
        for m in sorted(set(_mount_points()) - self._mounts_before, reverse=True):
            if "/run/firejail" in m:  # firejail's, left in the host's mount table
                subprocess.run(["umount", m], check=False)
        shutil.rmtree(self.hello_dir, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return left


def oci_config(argv: list[str], rootfs: str, cgroups_path: str) -> dict[str, object]:
    """An OCI runtime spec as close to sandboxd's container as runc gets without a pool."""
    none: list[str] = []
    return {
        "ociVersion": "1.0.2",
        "root": {"path": rootfs, "readonly": True},
        "hostname": "sandboxd-bench",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": argv, "cwd": "/",
            "env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"], "noNewPrivileges": True,
            "capabilities": {k: none for k in ("bounding", "effective", "permitted",
                                               "inheritable", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 256, "soft": 256}],
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "size=65536k"]},
            {"destination": "/usr", "type": "bind", "source": "/usr",
             "options": ["rbind", "ro", "nosuid", "nodev"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                 "user", "cgroup")],
            "uidMappings": [{"containerID": 0, "hostID": RUNC_HOST_ID, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": RUNC_HOST_ID, "size": 1}],
            "resources": {"devices": [{"allow": False, "access": "rwm"}],
                          "memory": {"limit": MEMORY_LIMIT}, "pids": {"limit": PIDS_LIMIT}},
            # Relative: beneath this process's own cgroup in each hierarchy (an
            # absolute path would land at the hierarchy's root, outside our delegation).
            "cgroupsPath": cgroups_path,
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/sched_debug", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def _delete_containers(tool: str, prefix: str) -> list[str]:
    """Force-delete any container of ours a crash left in ``tool``'s state."""
    if not shutil.which(tool):
        return []
    out = subprocess.run([tool, "list", "-q"], capture_output=True, text=True, check=False)
    ids = [i for i in out.stdout.split() if i.startswith(prefix)]
    for cid in ids:
        subprocess.run([tool, "delete", "--force", cid], capture_output=True, check=False)
    return [f"{tool} container {cid}" for cid in ids]


def _remove_cgroups(name: str) -> list[str]:
    """rmdir every cgroup directory named ``name`` (and its children), in every hierarchy.

    runc removes each job's own cgroup but leaves the parent it created; a job
    killed mid-run can leave its own too, reported here as a leftover.
    """
    left: list[str] = []
    deadline = time.monotonic() + 5
    for top, dirs, _files in os.walk(CGROUP_ROOT):
        if top[len(CGROUP_ROOT):].count("/") >= 5:
            dirs[:] = []
        if name in dirs:
            dirs.remove(name)
            parent = os.path.join(top, name)
            for sub in sorted(os.listdir(parent)):
                if os.path.isdir(os.path.join(parent, sub)):
                    left.append(os.path.join(parent, sub))
                    rmdir_cgroup(os.path.join(parent, sub), deadline)
            rmdir_cgroup(parent, deadline)
    return left


def rmdir_tree(path: str, deadline: float) -> None:
    """rmdir a cgroup directory and every cgroup beneath it, deepest first."""
    for sub in os.listdir(path) if os.path.isdir(path) else []:
        if os.path.isdir(f"{path}/{sub}"):
            rmdir_tree(f"{path}/{sub}", deadline)
    rmdir_cgroup(path, deadline)


def rmdir_cgroup(path: str, deadline: float) -> None:
    """rmdir, retried while the kernel still counts an exiting process in it."""
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# ------------------------------------------------------------------ isolate and nsjail
#
# Neither is packaged in Debian: bench/run takes their binaries (--isolate PATH,
# --nsjail PATH), built by whoever runs it, and leaves them out of the run, named
# in the report, when not given. Both are run as judges run them, with the limits
# sandboxd's jobs have (memory 256 MiB, 64 processes) enforced by their cgroups,
# which are made beneath this process's own cgroup in each v1 hierarchy and removed.


def own_cgroup_dir(controller: str) -> str | None:
    """This process's cgroup directory in the v1 hierarchy holding ``controller``."""
    from sandboxd.cgroups import _fs

    mount = next((m for m in _fs.mounts() if m.fstype == "cgroup"
                  and controller in m.options), None)
    own = next((p for k, p in _fs.own_cgroups().items() if controller in k.split(",")), None)
    return None if mount is None or own is None else _fs.on_disk(mount, own)


def _make_cgroup(path: str) -> list[str]:
    """mkdir ``path`` and any missing parents; returns those made, deepest last."""
    made: list[str] = []
    missing = []
    p = Path(path)
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        made.append(str(d))
        if (d / "cpuset.cpus").exists():  # a new v1 cpuset is empty: inherit its parent's
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / f).write_text((d.parent / f).read_text())
    return made


def _isolate_config_path(binary: str) -> str | None:
    """Where ``binary`` reads its configuration: the path isolate's build compiles in
    (``make CONFIG=...``; default /usr/local/etc/isolate), found among its strings."""
    import re

    data = Path(binary).read_bytes()
    found = [s.decode() for s in re.findall(rb"(/[A-Za-z0-9_./+-]+)\x00", data)]
    for s in found:
        if s.endswith(".cf") or s.rstrip("/").endswith("etc/isolate"):
            return s
    return None


class Isolate:
    """ioi/isolate 1.x (cgroup v1) with ready boxes: a box per closed-loop worker, made
    once (``--init``), then ``--run`` per job, which is how judges use it per test.

    Its configuration file is compiled into the binary; the one there (if any) is kept
    and put back by ``close``.
    """

    CONTROLLERS = ("memory", "cpuacct", "cpuset")

    def __init__(self, binary: str, tmp: Path) -> None:
        self.bin = binary
        config = _isolate_config_path(binary)
        if config is None:
            raise RuntimeError(f"{binary}: cannot tell where it reads its configuration")
        self.config = Path(config)
        self._saved = self.config.read_bytes() if self.config.exists() else None
        self._made: list[str] = []
        self._boxes: set[int] = set()
        self._lock = threading.Lock()
        mem = own_cgroup_dir("memory")
        if mem is None:
            raise RuntimeError("isolate 1.x needs the cgroup v1 memory hierarchy")
        root = CGROUP_ROOT
        # One parent path that lies beneath our own cgroup in every hierarchy it uses.
        own = max((os.path.relpath(own_cgroup_dir(c) or root, f"{root}/{c}")
                   for c in self.CONTROLLERS), key=len).strip(".").strip("/")
        self.cg_parent = f"{own}/sandboxd-bench-isolate-{os.getpid()}".lstrip("/")
        for c in self.CONTROLLERS:
            self._made += _make_cgroup(f"{root}/{c}/{self.cg_parent}")
        boxes = tmp / "isolate-boxes"
        boxes.mkdir()
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f"box_root = {boxes}\ncg_root = {root}\n"
                               f"cg_parent = {self.cg_parent}\nfirst_uid = 60000\n"
                               "first_gid = 60000\nnum_boxes = 100\n")

    def accounting_dir(self) -> str:
        """The cpuacct directory every box's cgroup lies beneath."""
        return f"{CGROUP_ROOT}/cpuacct/{self.cg_parent}"

    def argv(self, argv: list[str], worker: int = 0) -> list[str]:
        with self._lock:
            if worker not in self._boxes:
                subprocess.run([self.bin, "--cg", f"--box-id={worker}", "--init"],
                               check=True, capture_output=True)
                self._boxes.add(worker)
        return [self.bin, "--cg", f"--box-id={worker}", f"--cg-mem={MEMORY_LIMIT >> 10}",
                f"--processes={PIDS_LIMIT}", "--time=5", "--wall-time=10", "--run", "--",
                *argv]

    def close(self) -> list[str]:
        left = []
        for box in sorted(self._boxes):
            run = subprocess.run([self.bin, "--cg", f"--box-id={box}", "--cleanup"],
                                 capture_output=True, text=True, check=False)
            if run.returncode:
                left.append(f"isolate box {box}: {run.stderr.strip()}")
        self._boxes.clear()
        deadline = time.monotonic() + 5
        for c in self.CONTROLLERS:
            d = f"{CGROUP_ROOT}/{c}/{self.cg_parent}"
            if os.path.isdir(d):
                for sub in os.listdir(d):
                    if os.path.isdir(f"{d}/{sub}"):
                        left.append(f"{d}/{sub}")
                        rmdir_cgroup(f"{d}/{sub}", deadline)
        for d in reversed(self._made):
            rmdir_cgroup(d, deadline)
        self._made.clear()
        if self._saved is None:
            self.config.unlink(missing_ok=True)
        else:
            self.config.write_bytes(self._saved)
        return left


class Nsjail:
    """google/nsjail in its one-shot mode (``-Mo``), / as its read-only root, with cgroup
    v1 memory and pids limits beneath a parent of ours in each hierarchy."""

    def __init__(self, binary: str) -> None:
        self.bin = binary
        self._made: list[str] = []
        self.args: list[str] = []
        for c, flag in (("memory", "mem"), ("pids", "pids")):
            own = own_cgroup_dir(c)
            if own is None:
                raise RuntimeError(f"nsjail's {c} limit needs the cgroup v1 {c} hierarchy")
            mount = f"{CGROUP_ROOT}/{c}"
            parent = f"{own}/sandboxd-bench-nsjail-{os.getpid()}"
            self._made += _make_cgroup(parent)
            self.args += [f"--cgroup_{flag}_mount", mount,
                          f"--cgroup_{flag}_parent", os.path.relpath(parent, mount)]

    def argv(self, argv: list[str], _worker: int = 0) -> list[str]:
        return [self.bin, "-Mo", "-Q", "--chroot", "/", "--time_limit", "10",
                "--rlimit_cpu", "5", "--cgroup_mem_max", str(MEMORY_LIMIT),
                "--cgroup_pids_max", str(PIDS_LIMIT), *self.args, "--", *argv]

    def close(self) -> list[str]:
        left = []
        deadline = time.monotonic() + 5
        for d in reversed(self._made):
            for sub in os.listdir(d) if os.path.isdir(d) else []:
                if os.path.isdir(f"{d}/{sub}"):
                    left.append(f"{d}/{sub}")
                    rmdir_cgroup(f"{d}/{sub}", deadline)
            rmdir_cgroup(d, deadline)
        self._made.clear()
        return left
