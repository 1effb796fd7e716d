"""Least exposure of the host: a job sees /usr, /bin, /sbin, /lib* and a few /etc files of
the host, and nothing else unless its profile binds it (docs/isolation.md, "What every job
sees of the host").

The attack: a file planted under a fresh directory of the host's /opt (where vendors keep
agents and credentials) must be out of reach of a default job, and within reach of a job
whose profile declares it needs that directory. The directory is uniquely named
``sandboxd-test-*`` and removed whatever happens.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.isolation import mounts
from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def opt_secret() -> Iterator[tuple[Path, str]]:
    """/opt/sandboxd-test-<random>/secret.txt holding a random token (removed afterwards)."""
    if not os.path.isdir("/opt"):
        pytest.skip("this host has no /opt")
    directory = Path(f"/opt/sandboxd-test-{uuid.uuid4().hex[:12]}")
    directory.mkdir(mode=0o755)
    try:
        token = os.urandom(16).hex()
        path = directory / "secret.txt"
        path.write_text(token)
        path.chmod(0o644)  # readable by anyone: only the mounts stand in the way
        yield path, token
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_default_job_cannot_see_opt(run_once, opt_secret):  # type: ignore[no-untyped-def]
    path, token = opt_secret
    code = ("import os\n"
            f"p = {str(path)!r}\n"
            "print(os.path.exists(p), os.path.exists(os.path.dirname(p)), "
            "os.path.exists('/opt'))\n"
            "try:\n"
            "    print(open(p).read())\n"
            "except OSError as e:\n"
            "    print(type(e).__name__)\n")
    r = run_once(["python3", "-c", code])
    assert r["verdict"] == "ok", r
    assert r["stdout"].split() == ["False", "False", "False", "FileNotFoundError"]
    assert token not in r["stdout"] + r["stderr"]


def test_the_root_holds_only_what_the_docs_list(run_once):  # type: ignore[no-untyped-def]
    """The top of a default job's root: the system dirs, the generated /etc, the scratch
    mounts, /dev and /proc. Anything new here is a new exposure of the host."""
    r = run_once(["python3", "-c", "import os; print(' '.join(sorted(os.listdir('/'))))"])
    assert r["verdict"] == "ok", r
    system = {d.lstrip("/") for d in mounts.ROOT_DIRS if os.path.lexists(d)}
    assert set(r["stdout"].split()) == system | {"box", "tmp", "etc", "dev", "proc"}


def test_a_profile_that_binds_opt_sees_it(tmp_path, opt_secret):  # type: ignore[no-untyped-def]
    path, token = opt_secret
    pdir = tmp_path / "profiles"
    pdir.mkdir()
    bash = (ROOT / "profiles" / "bash.toml").read_text()
    (pdir / "bash.toml").write_text(bash)
    (pdir / "vendor.toml").write_text(
        bash.replace('name = "bash"', 'name = "vendor"')
        + f'\nbinds = [["{path.parent}", "{path.parent}"]]\n')
    with Daemon(tmp_path, profiles_dir=str(pdir), pool_profiles=["bash"]) as d:
        c = d.connect()
        script = f"cat {path} 2>&1; echo; ls /opt".encode()
        plain = c.run("plain", "bash", files={"main.sh": script}).steps[0]
        assert token.encode() not in plain.stdout + plain.stderr
        assert b"No such file or directory" in plain.stdout + plain.stderr
        bound = c.run("bound", "vendor", files={"main.sh": script}).steps[0]
        assert bound.verdict == "ok", bound
        # The declared directory, and nothing else of /opt.
        assert bound.stdout.decode().split() == [token, path.parent.name]
