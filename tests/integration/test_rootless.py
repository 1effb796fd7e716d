"""Rootless: what ``sandboxd check-environment`` says as an ordinary user, and that
``sandboxd serve`` refuses clearly where a rootless daemon cannot work (no delegated
cgroup v2 subtree); tests/integration/test_rootless_daemon.py runs one where it can.

Run as uid 65534 (nobody) through ``setpriv``. On this project's hosts (cgroup v1
hybrid) the cgroup finding must say why no cgroup can be delegated; in the cgroup v2
VM (``scripts/test-v2vm.sh``, marked ``cgroup_v2``) the test also makes a child
cgroup ``sandboxd-rootless-<pid>`` below its own, hands it to nobody as systemd's
``Delegate=yes`` would (the directory, ``cgroup.procs``, ``cgroup.subtree_control``
and ``cgroup.threads`` chowned), runs the check inside it, and removes it after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _findings(prefix: str = "", rc: int = 1) -> dict[str, dict[str, str]]:
    """check-environment's findings as nobody (``prefix``: shell run first, as root;
    ``rc``: 1 while a finding fails, 0 when a rootless daemon can serve)."""
    cmd = " ".join([*AS_NOBODY, sys.executable, "-m", "sandboxd", "check-environment",
                    "--json"])
    proc = subprocess.run(["sh", "-c", f"{prefix}exec {cmd}"], capture_output=True, text=True,
                          timeout=300, cwd="/")
    assert proc.returncode == rc, proc
    return {f["name"]: f for f in json.loads(proc.stdout)}


def _cgroup_v2() -> str | None:
    with open("/proc/self/cgroup") as f:
        lines = [line.strip().split(":", 2) for line in f if line.strip()]
    if len(lines) == 1 and lines[0][0] == "0":
        return "/sys/fs/cgroup" + lines[0][2].rstrip("/")
    return None


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (to become an ordinary user)")


def test_check_environment_names_every_rootless_layer() -> None:
    found = _findings()
    assert found["privileges"]["status"] == "warn" and "not root" in found["privileges"]["detail"]
    for name in ("rootless: namespaces", "rootless: uids", "rootless: cgroups",
                 "rootless: priorities", "rootless: egress", "rootless: serve", "seccomp",
                 "landlock"):
        assert name in found, (name, sorted(found))
    assert found["rootless: serve"]["status"] == "fail"  # nobody is delegated no cgroup
    assert "cannot run as this user" in found["rootless: serve"]["detail"]
    # Unprivileged user namespaces: as the kernel says (Debian's knob, when it has one).
    knob = Path("/proc/sys/kernel/unprivileged_userns_clone")
    allowed = not knob.exists() or knob.read_text().strip() == "1"
    assert (found["rootless: namespaces"]["status"] == "ok") == allowed, found
    uids = found["rootless: uids"]
    assert uids["status"] == "warn" and "maps one uid, its own" in uids["detail"], uids
    cg = found["rootless: cgroups"]
    if _cgroup_v2() is None:
        assert cg["status"] == "fail" and "cgroup v1" in cg["detail"], cg
        assert "Delegate=yes" in cg["fix"], cg
    else:
        assert cg["status"] == "fail" and "not delegated to uid 65534" in cg["detail"], cg


def test_check_environment_in_a_delegated_cgroup() -> None:
    here = _cgroup_v2()
    if here is None:
        pytest.skip("cgroup v1 here: nothing can be delegated (the test above checks the "
                    "finding says so); runs in the cgroup v2 VM")
    if os.environ.get("V2VM") == "1" and here == "/sys/fs/cgroup":
        # The throw-away VM's root cgroup (exempt from "no internal processes"): hand the
        # controllers down, as systemd does above a delegated unit, so that the finding
        # can be "ok". Never on a real host's root.
        (Path(here) / "cgroup.subtree_control").write_text("+cpu +memory +pids")
    child = Path(here) / f"sandboxd-rootless-{os.getpid()}"
    child.mkdir()
    try:
        for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(child / name, NOBODY, NOBODY)
        enabled = set((Path(here) / "cgroup.subtree_control").read_text().split())
        full = {"memory", "pids", "cpu"} <= enabled
        knob = Path("/proc/sys/kernel/unprivileged_userns_clone")
        userns = not knob.exists() or knob.read_text().strip() == "1"
        found = _findings(f"echo $$ > {child}/cgroup.procs && ", rc=0 if full and userns else 1)
        cg = found["rootless: cgroups"]
        if full:
            assert cg["status"] == "ok" and str(child) in cg["detail"], cg
            assert found["rootless: serve"]["status"] == ("ok" if userns else "fail"), found
        else:
            assert cg["status"] == "fail" and "lacks" in cg["detail"], cg
    finally:
        child.rmdir()


def test_serve_as_an_ordinary_user_without_a_delegated_cgroup_fails_clearly(
        tmp_path: Path) -> None:
    # Here nobody runs in pytest's own cgroup, which is not nobody's: on v1 no cgroup can
    # be delegated at all, on v2 it cannot make its cgroups there. Either way a clear
    # error that sends to check-environment, no traceback, and nothing left behind.
    home = Path(tempfile.mkdtemp(prefix="sandboxd-rootless-", dir="/tmp"))
    try:
        home.chmod(0o777)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        run = [*AS_NOBODY, "env", f"XDG_RUNTIME_DIR={home}", sys.executable, "-m",
               "sandboxd", "serve", "--socket", str(home / "s.sock")]
        proc = subprocess.run(run, capture_output=True, text=True, timeout=300, cwd="/",
                              env=env)
        assert proc.returncode == 2 and "cannot create the state directory" in proc.stderr
        env["SANDBOXD_STATE_DIR"] = str(home / "state")
        proc = subprocess.run(run, capture_output=True, text=True, timeout=300, cwd="/",
                              env=env)
        assert sorted(p.name for p in home.iterdir()) == ["sandboxd-slots", "state"] or \
            sorted(p.name for p in home.iterdir()) == ["state"], list(home.iterdir())
    finally:
        shutil.rmtree(home)
    assert proc.returncode == 1, proc
    assert "cannot set up cgroups" in proc.stderr and "check-environment" in proc.stderr
    assert "Traceback" not in proc.stderr
