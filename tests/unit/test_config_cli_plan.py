"""Pure tests of the daemon's configuration, the mount plan and run-once's refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sandboxd import config
from sandboxd.config import ConfigError
from sandboxd.isolation import mounts


def test_defaults_work_without_a_file():
    cfg = config.load(None, env={})
    assert cfg.socket == config.DEFAULT_SOCKET and cfg.concurrency >= 1
    assert cfg.tcp == "" and cfg.socket_mode == 0o660


def test_file_then_environment_then_options(tmp_path: Path):
    f = tmp_path / "sandboxd.toml"
    f.write_text('pool_size = 3\nqueue_length = 10\npool_profiles = ["c"]\n')
    cfg = config.load(str(f), env={"SANDBOXD_QUEUE_LENGTH": "20",
                                   "SANDBOXD_POOL_PROFILES": "c, python3"}, socket="/x.sock")
    assert (cfg.pool_size, cfg.queue_length, cfg.socket) == (3, 20, "/x.sock")
    assert cfg.pool_profiles == ("c", "python3")


def test_unknown_key_names_file_and_line(tmp_path: Path):
    f = tmp_path / "sandboxd.toml"
    f.write_text("pool_size = 3\n\nconcurency = 4\n")
    with pytest.raises(ConfigError, match=rf"{f}:3: unknown key 'concurency'"):
        config.load(str(f), env={})


@pytest.mark.parametrize(("text", "match"), [
    ('pool_size = "many"', r":1: pool_size must be an integer"),
    ("grace_period = -1", "must not be negative"),
    ('tcp = "127.0.0.1:7070"', "needs a token"),
    ('instance = "../x"', "instance must be"),
    ("pool_size = ", "Invalid value"),
])
def test_bad_values(tmp_path: Path, text: str, match: str):
    f = tmp_path / "sandboxd.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError, match=match):
        config.load(str(f), env={})


def test_unknown_environment_variable():
    with pytest.raises(ConfigError, match="SANDBOXD_POOLSIZE"):
        config.load(None, env={"SANDBOXD_POOLSIZE": "3"})


def test_default_plan_is_data():
    plan = mounts.default_plan(uid=1000, gid=1000, hostname="h", box_size=1 << 20,
                               tmp_size=2 << 20)
    kinds = [type(s).__name__ for s in plan.steps]
    assert kinds[-2:] == ["Dev", "Proc"]  # /proc last: it needs /dev/null for its masks
    box = next(s for s in plan.steps if isinstance(s, mounts.Tmpfs) and s.path == "/box")
    assert (box.size, box.uid, box.mode) == (1 << 20, 1000, 0o755)
    files = {s.path: s.content for s in plan.steps if isinstance(s, mounts.File)}
    assert b"sandbox:x:1000:1000" in files["/etc/passwd"]
    binds = {s.target for s in plan.steps if isinstance(s, mounts.Bind)}
    assert "/usr" in binds and "/etc/shadow" not in binds and "/root" not in binds
    assert all(not s.writable for s in plan.steps if isinstance(s, mounts.Bind))
    assert "/proc/kcore" in mounts.PROC_MASKED and "/proc/sys" in mounts.PROC_READONLY


def run_once(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandboxd", "run-once", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "match"), [
    (["--memory", "1T", "--", "true"], "memory=1024G is outside the allowed range"),
    (["--cpu-time", "soon", "--", "true"], "--cpu-time must be a number of seconds, not 'soon'"),
    (["--pids", "lots", "--", "true"], "--pids must be an integer"),
    (["--file", "noequals", "--", "true"], "--file wants NAME=PATH"),
    (["--file", "../x=/etc/hostname", "--", "true"], "must be relative and stay inside"),
    (["--stdin", "/no/such/file", "--", "true"], "cannot read --stdin"),
    (["--seccomp", "lax", "--", "true"], "unknown seccomp policy 'lax'"),
    ([], "needs a command"),
    (["--bogus"], "unrecognized arguments"),
])
def test_run_once_refuses_bad_input_with_exit_2(args: list[str], match: str):
    p = run_once(*args)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert match in p.stderr
    assert "Traceback" not in p.stderr
