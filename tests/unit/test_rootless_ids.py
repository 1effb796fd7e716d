"""Rootless uid maps (identity.RootlessMap, read_subids): their text and the helpers'
command lines, without a kernel (tests/integration/test_rootless_parts.py writes the
one-uid map into a real user namespace)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxd.isolation import identity


def test_one_uid_map() -> None:
    ids = identity.RootlessMap(slot=5, own_uid=1001, own_gid=1002)
    assert ids.one_uid and ids.job_uid == 0 and ids.job_gid == 0 and ids.host_job == 1001
    assert ids.uid_map() == "0 1001 1\n" and ids.gid_map() == "0 1002 1\n"
    assert ids.setgroups() == "deny" and ids.helper_args(42) is None


def test_subordinate_map_gives_each_slot_a_job_uid() -> None:
    sub = identity.SubIds(uid_start=100000, gid_start=200000, count=65536)
    ids = identity.RootlessMap(slot=7, own_uid=1001, own_gid=1002, subids=sub)
    assert not ids.one_uid and ids.job_uid == identity.JOB_UID and ids.host_job == 100007
    assert ids.uid_map() == "0 1001 1\n1000 100007 1\n"
    assert ids.gid_map() == "0 1002 1\n1000 200007 1\n"
    assert ids.helper_args(42) == (["newuidmap", "42", "0", "1001", "1", "1000", "100007", "1"],
                                   ["newgidmap", "42", "0", "1002", "1", "1000", "200007", "1"])
    assert identity.RootlessMap(slot=8, own_uid=1, own_gid=1, subids=sub).host_job != ids.host_job


def test_slots_are_bounded_by_the_subordinate_range() -> None:
    sub = identity.SubIds(100000, 100000, 10)
    assert identity.RootlessMap(slot=0, own_uid=1, own_gid=1, subids=sub).slots() == 10
    with pytest.raises(ValueError, match="outside"):
        identity.RootlessMap(slot=10, own_uid=1, own_gid=1, subids=sub)
    with pytest.raises(ValueError, match="outside"):
        identity.RootlessMap(slot=-1, own_uid=1, own_gid=1)


def test_read_subids(tmp_path: Path) -> None:
    su, sg = tmp_path / "subuid", tmp_path / "subgid"
    su.write_text("alice:100000:65536\n# junk\nnobody:bad:1\nnobody:300000:100\n")
    sg.write_text("65534:400000:50\n")
    assert identity.read_subids(65534, subuid=str(su), subgid=str(sg)) == identity.SubIds(
        300000, 400000, 50)
    sg.write_text("alice:1:1\n")
    assert identity.read_subids(65534, subuid=str(su), subgid=str(sg)) is None
    assert identity.read_subids(65534, subuid=str(tmp_path / "none"), subgid=str(sg)) is None


def test_user_unit_delegates_and_its_environment_is_known_config() -> None:
    """contrib/sandboxd-user.service: Delegate=yes, and every SANDBOXD_* variable it sets
    is one the configuration accepts (an unknown one would stop the daemon at start)."""
    from sandboxd import config

    unit = Path(__file__).resolve().parents[2] / "contrib" / "sandboxd-user.service"
    lines = [line.strip() for line in unit.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert "Delegate=yes" in lines and "WantedBy=default.target" in lines
    env = {}
    for line in lines:
        if line.startswith("Environment="):
            for pair in line.split("=", 1)[1].split():
                k, v = pair.split("=", 1)
                env[k] = v.replace("%t", "/run/user/1000")
    assert set(env) == {"SANDBOXD_STATE_DIR", "SANDBOXD_SOCKET"}
    cfg = config.load(None, env=env)
    assert cfg.state_dir == "/run/user/1000/sandboxd"
    assert cfg.socket == "/run/user/1000/sandboxd/sandboxd.sock"
