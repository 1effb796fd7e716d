"""The kernel's favordynmods mode, set the way the daemon sets it (``cgroups.favor_dynmods``).

The mode cannot be turned off before a reboot, so these tests cannot compare a move's
latency before and after it (bench/run's cold figures do, on a fresh boot); they prove
the mechanism: the mount is made in a mount namespace of the call's own and leaves
nothing behind, and a failure says why.
"""

from __future__ import annotations

import os
import time

import pytest

from sandboxd import cgroups
from sandboxd.cgroups import _dynmods

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]


def _mounted_anywhere() -> list[str]:
    """Every mount of the hierarchy in any process's mount namespace we can see."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                found += [line for line in f if _dynmods.HIERARCHY in line]
        except OSError:
            continue
    return found


def _hierarchy_listed() -> bool:
    with open("/proc/self/cgroup") as f:
        return any(_dynmods.HIERARCHY in line for line in f)


def test_favor_sets_the_mode_and_leaves_no_mount_or_hierarchy(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    how = cgroups.favor_dynmods(str(tmp_path), via=("v1",))
    assert how in ("v1", "already")
    assert cgroups.dynmods_favoured()
    assert _mounted_anywhere() == []
    assert not os.listdir(tmp_path), "something was left in the mount point"
    # The empty hierarchy is destroyed once its only mount's namespace is gone (the kernel
    # does that a moment later, asynchronously).
    deadline = time.monotonic() + 10
    while _hierarchy_listed() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _hierarchy_listed()
    # Again: the same mount, again nothing left (two daemons starting together do this).
    assert cgroups.favor_dynmods(str(tmp_path), via=("v1",)) in ("v1", "already")
    assert _mounted_anywhere() == []


def test_a_failed_mount_is_a_cgroup_error_that_says_why(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    monkeypatch.setattr(_dynmods, "_already", lambda: False)
    with pytest.raises(cgroups.CgroupError, match="v1: No such file or directory"):
        cgroups.favor_dynmods(str(tmp_path / "missing"), via=("v1",))
    assert _mounted_anywhere() == []


@pytest.mark.skipif(os.environ.get("V2VM") != "1",
                    reason="changes the host's cgroup2 mount options for good: the v2 VM only")
def test_the_cgroup2_remount_adds_the_option_and_keeps_the_others(tmp_path):
    # The way a kernel without cgroup v1 takes. The VM mounts cgroup2 as systemd does
    # (nsdelegate, memory_recursiveprot): a remount that dropped them would change how
    # every cgroup of the host behaves.
    before = set(_dynmods._cgroup2()[1])
    assert "nsdelegate" in before
    assert cgroups.favor_dynmods(str(tmp_path), via=("v2",)) in ("v2", "already")
    after = set(_dynmods._cgroup2()[1])
    assert after == before | {"favordynmods"}
    assert cgroups.favor_dynmods(str(tmp_path)) == "already"


def test_a_mount_that_shows_the_option_is_taken_as_set(monkeypatch, tmp_path):
    # A kernel booted with cgroup_favordynmods=true shows it on its hierarchies.
    monkeypatch.setattr(_dynmods, "_already", lambda: True)
    assert cgroups.favor_dynmods(str(tmp_path / "never-used")) == "already"
