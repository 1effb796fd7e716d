"""The parts of a rootless daemon that are written (docs/rootless.md), each run for real
as an ordinary user (uid 65534 through ``setpriv``): the uid slot lock outside ``/run``,
and the one-uid map written into a real user namespace by an unprivileged parent, with
what the kernel then refuses inside (the costs docs/rootless.md names).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd import slots

pytestmark = pytest.mark.root

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (to become an ordinary user)")


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory nobody can reach (pytest's own is under a 0700 directory of root's)."""
    d = Path(tempfile.mkdtemp(prefix="sandboxd-rootless-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def _as_nobody(code: str, env: dict[str, str]) -> dict:
    """Run ``code`` (Python that prints one JSON line last) as nobody; its result."""
    proc = subprocess.run([*AS_NOBODY, sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=120, cwd="/",
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env})
    assert proc.returncode == 0, proc
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _nobody_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir(mode=0o700)
    os.chown(d, NOBODY, NOBODY)
    tmp_path.chmod(0o755)
    return d


LOCKS = """
import json
from sandboxd import slots
a, b = slots.SlotLocks(), slots.SlotLocks()
out = {"path": a.path, "a": a.try_lock(7), "b": b.try_lock(7), "b8": b.try_lock(8)}
a.close()
out["after"] = b.try_lock(7)
print(json.dumps(out))
"""


def test_slot_lock_lives_in_the_users_runtime_dir(tmp_path: Path) -> None:
    runtime = _nobody_dir(tmp_path, "run-user")
    out = _as_nobody(LOCKS, {"XDG_RUNTIME_DIR": str(runtime)})
    assert out["path"] == f"{runtime}/sandboxd-slots/uids.lock"
    # Two open file descriptions of one user's file exclude each other, as root's do.
    assert out == {**out, "a": True, "b": False, "b8": True, "after": True}
    lock = runtime / "sandboxd-slots" / "uids.lock"
    assert lock.stat().st_uid == NOBODY and lock.stat().st_mode & 0o777 == 0o600
    assert (runtime / "sandboxd-slots").stat().st_mode & 0o777 == 0o700


def test_slot_lock_without_a_runtime_dir_goes_under_home(tmp_path: Path) -> None:
    home = _nobody_dir(tmp_path, "home")
    out = _as_nobody(LOCKS, {"HOME": str(home)})
    assert out["path"] == f"{home}/.local/state/sandboxd-slots/uids.lock"
    assert out["a"] and not out["b"]


def test_slot_lock_path_for_root_is_unchanged() -> None:
    assert slots.lock_path(0, {"XDG_RUNTIME_DIR": "/run/user/0"}) == slots.LOCK_FILE
    with pytest.raises(slots.SandboxError, match="neither XDG_RUNTIME_DIR nor HOME"):
        slots.lock_path(1000, {"XDG_RUNTIME_DIR": "relative", "HOME": ""})


def test_a_lock_file_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    # Attack: a writable directory where someone else (root here) put the lock file
    # first, readable and writable by all: sharing it would share slots with a stranger.
    runtime = tmp_path / "shared"
    (runtime / "sandboxd-slots").mkdir(parents=True)
    for d in (runtime, runtime / "sandboxd-slots"):
        d.chmod(0o777)
    planted = runtime / "sandboxd-slots" / "uids.lock"
    planted.write_text("")
    planted.chmod(0o666)
    tmp_path.chmod(0o755)
    code = ("import json\nfrom sandboxd import slots\ntry:\n    slots.SlotLocks()\n"
            "    print(json.dumps({'error': None}))\nexcept slots.SandboxError as e:\n"
            "    print(json.dumps({'error': str(e)}))\n")
    out = _as_nobody(code, {"XDG_RUNTIME_DIR": str(runtime)})
    assert out["error"] and "belongs to uid 0" in out["error"], out


# The child: a new user namespace (``unshare --user`` execs it there), waiting for its
# maps on stdin; then what it is and what the kernel refuses it.
CHILD = r"""
import errno, json, os, sys
print("ready", flush=True)
sys.stdin.readline()
out = {"uid_map": open("/proc/self/uid_map").read().split(),
       "gid_map": open("/proc/self/gid_map").read().split(),
       "setgroups": open("/proc/self/setgroups").read().strip(),
       "uid": os.getuid(), "gid": os.getgid()}
def errname(f):
    try:
        f()
    except OSError as e:
        return errno.errorcode[e.errno]
    return None
out["drop_groups"] = errname(lambda: os.setgroups([]))
out["to_1000"] = errname(lambda: os.setresuid(1000, 1000, 1000))
print(json.dumps(out), flush=True)
"""

PARENT = r"""
import json, os, subprocess, sys
from sandboxd.isolation import identity
child = subprocess.Popen(["unshare", "--user", "--", sys.executable, "-c", CHILD],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
result = {}
try:
    # The two-uid map of a root daemon's slot 3, which no ordinary user may write.
    fd = os.open(f"/proc/{child.pid}/uid_map", os.O_WRONLY)
    try:
        os.write(fd, identity.IdMap(3).uid_map().encode())
    finally:
        os.close(fd)
    result["root_map"] = "accepted"
except OSError as e:
    result["root_map"] = str(e)
ids = identity.RootlessMap(slot=3, own_uid=65534, own_gid=65534)
identity.apply_rootless_map(child.pid, ids)
child.stdin.write("go\n")
child.stdin.flush()
result["child"] = json.loads(child.stdout.readline())
result["rc"] = child.wait(timeout=60)
print(json.dumps(result))
"""


def test_one_uid_map_written_by_an_unprivileged_parent() -> None:
    knob = Path("/proc/sys/kernel/unprivileged_userns_clone")
    if knob.exists() and knob.read_text().strip() != "1":
        pytest.skip("this kernel refuses unprivileged user namespaces")
    # Attack first: the parent tries the root daemon's two-uid map (host uids 420003 and
    # 430003, which are not its own); the kernel must refuse it. Then the one-uid map.
    out = _as_nobody(f"CHILD = {CHILD!r}\n" + PARENT, {})
    assert out["root_map"] != "accepted" and "Operation not permitted" in out["root_map"], out
    child = out["child"]
    assert out["rc"] == 0
    assert child["uid_map"] == ["0", "65534", "1"] and child["gid_map"] == ["0", "65534", "1"]
    assert child["setgroups"] == "deny" and (child["uid"], child["gid"]) == (0, 0)
    # The costs docs/rootless.md names: the job cannot drop groups (setgroups denied,
    # so the native job process must skip it) and there is no uid 1000 to become.
    assert child["drop_groups"] == "EPERM", child
    assert child["to_1000"] == "EINVAL", child
