"""A rootless daemon end to end (docs/rootless.md): ``sandboxd serve`` as uid 65534
(nobody, through ``setpriv``) in a cgroup v2 subtree delegated to it as systemd's
``Delegate=yes`` would, jobs through the client library: hello world in python3 and c,
a memory limit (``memory_limit``), a CPU limit (``time_limit``), then SIGTERM and
nothing left (no process in the subtree, no cgroup below it).

Runs in the cgroup v2 VM (``scripts/test-v2vm.sh``, marked ``cgroup_v2``); on cgroup v1
or hybrid hosts there is nothing to delegate and it is skipped (test_rootless.py checks
that check-environment says so). The delegated cgroup ``sandboxd-rootless-d<pid>`` is
made beside pytest's own leaf (tests/conftest.py's ``cgroup_leaf``: the parent has the
controllers enabled) and removed after.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import sandboxd_client as sc
from sandboxd_testing.daemon import Daemon

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2, pytest.mark.slow]

NOBODY = 65534
IN_VM = os.environ.get("V2VM") == "1"
# Attack, as the job of a one-uid container (it and its init are the daemon's host uid):
# see what it can of the host's processes, SIGKILL its init, read the init's memory.
ATTACK = """import json, os, signal
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
def tried(f):
    try:
        f()
    except OSError as e:
        return e.strerror
    return "done"
kill = tried(lambda: os.kill(1, signal.SIGKILL))
mem = tried(lambda: open("/proc/1/mem", "rb").read(1))
print(json.dumps({"pids": pids, "kill": kill, "mem": mem, "groups": os.getgroups()}))
"""
HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello from c"); return 0; }\n'


def _own_cgroup() -> Path | None:
    with open("/proc/self/cgroup") as f:
        lines = [line.strip().split(":", 2) for line in f if line.strip()]
    if len(lines) == 1 and lines[0][0] == "0":
        return Path("/sys/fs/cgroup" + lines[0][2].rstrip("/"))
    return None


@pytest.fixture(scope="module")
def delegated() -> Iterator[Path]:
    """A cgroup handed to nobody, below one whose controllers are enabled for it."""
    if os.geteuid() != 0:
        pytest.skip("needs root (to become an ordinary user and delegate a cgroup)")
    here = _own_cgroup()
    if here is None:
        pytest.skip("cgroup v1 here: nothing can be delegated; runs in the cgroup v2 VM")
    parent = here.parent if here.name == "sandboxd.supervisor" else here
    enabled = set((parent / "cgroup.subtree_control").read_text().split())
    if not {"cpu", "memory", "pids"} <= enabled:
        pytest.skip(f"{parent} does not hand cpu, memory and pids down ({sorted(enabled)})")
    child = parent / f"sandboxd-rootless-d{os.getpid()}"
    child.mkdir()
    try:
        for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(child / name, NOBODY, NOBODY)
        yield child
    finally:
        for sub in sorted(child.rglob("*"), reverse=True):
            if sub.is_dir():
                sub.rmdir()
        child.rmdir()


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """The daemon user's directory (socket, state, slot lock), reachable by nobody."""
    d = Path(tempfile.mkdtemp(prefix="sandboxd-rootless-", dir="/tmp"))
    d.chmod(0o755)
    runtime = d / "run"
    runtime.mkdir(mode=0o700)
    os.chown(runtime, NOBODY, NOBODY)
    try:
        yield runtime
    finally:
        shutil.rmtree(d)


def _procs(cgroup: Path) -> list[str]:
    """Every pid below ``cgroup``. The daemon removes a used container's cgroup in the
    background, so a directory may vanish while the walk is in it (pathlib's rglob then
    raised FileNotFoundError once in a clean-clone CI run, and a read ENODEV in another):
    a vanished one held none."""
    found: list[str] = []
    for top, dirs, _files in os.walk(cgroup):  # os.walk skips what vanishes under it
        try:
            found += (Path(top) / "cgroup.procs").read_text().split()
        except OSError as e:  # ENODEV: removed between the open and the read (seen in CI)
            if e.errno not in (errno.ENOENT, errno.ENODEV):
                raise
            dirs.clear()
    return found


def test_rootless_daemon_runs_jobs_with_limits_and_leaves_nothing(delegated: Path,
                                                                  home: Path) -> None:
    d = Daemon(home, pool_profiles=["python3"], pool_size=1, state_dir=str(home / "state"))
    os.chown(d.dir, NOBODY, NOBODY)
    d.prefix = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                "env", f"XDG_RUNTIME_DIR={home}", f"HOME={home}")
    d.start(wait=900 if IN_VM else 60, cgroup=str(delegated))
    try:
        log = d.log.read_text()
        assert "event=rootless" in log and "uid=65534" in log, log
        assert (home / "sandboxd-slots" / "uids.lock").stat().st_uid == NOBODY
        with sc.Client(d.socket, timeout=600 if IN_VM else 60) as client:
            r = client.run("python3", {"main.py": "import os\nprint('hello', os.getuid())"})
            assert r.verdict == "ok" and r.stdout == b"hello 0\n", r
            r = client.run("c", {"main.c": HELLO_C})
            assert r.verdict == "ok" and r.stdout == b"hello from c\n", r
            r = client.run("python3", {"main.py": "b = bytearray(400 << 20)\nprint(len(b))"},
                           limits={"memory": "64M"})
            assert r.verdict == "memory_limit", r
            r = client.run("python3", {"main.py": "while True:\n    pass\n"},
                           limits={"cpu_time": 1})
            assert r.verdict == "time_limit", r
            r = client.run("python3", {"main.py": ATTACK})
            assert r.verdict == "ok", r  # the init outlived SIGKILL from its namespace
            seen = json.loads(r.stdout)
            assert len(seen["pids"]) <= 4 and d.pid not in seen["pids"], seen  # its own only
            assert seen["mem"] != "done", seen
        # Everything the daemon made is below the delegated cgroup, and nowhere else.
        assert str(d.pid) in _procs(delegated)  # sh, then setpriv, then env exec the daemon
    finally:
        code = d.stop(timeout=600 if IN_VM else 60)
    assert code == 0, d.log.read_text()[-3000:]
    assert _procs(delegated) == [], "processes left in the delegated cgroup"
    left = [p for p in delegated.rglob("*") if p.is_dir()]
    assert left == [], f"cgroups left: {left}"
