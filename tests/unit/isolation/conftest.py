"""Fixtures for the seccomp and Landlock tests: compiled probes and a confined-child runner.

Everything dangerous happens in a child process that the runner starts and
reaps; the test process itself never installs a filter or a ruleset.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import prctl
import pytest

PROBES_SRC = Path(__file__).resolve().parents[2] / "probes"
# Only ours: other probes in tests/probes are built by the suite-wide ``probes`` fixture.
LSM_PROBES = ("try_syscall", "clone_probe", "foreign_arch")
NOBODY = 65534


@dataclass(frozen=True)
class Probes:
    """Paths of the compiled C probes, in a directory any uid can read and execute."""

    dir: Path

    def __getattr__(self, name: str) -> str:
        path = self.dir / name
        if not path.exists():
            raise AttributeError(name)
        return str(path)


@pytest.fixture(scope="session")
def lsm_probes() -> Iterator[Probes]:
    """Compile the seccomp probes once per session with gcc, somewhere nobody can exec them.

    Named apart from the suite-wide ``probes`` fixture (a dict, in a 0700 directory) so as
    not to shadow it for other tests in this directory."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the probes")
    out = Path(tempfile.mkdtemp(prefix="sandboxd-probes-"))
    out.chmod(0o755)  # pytest's own tmp dirs are 0700, closed to the unprivileged uid
    try:
        for name in LSM_PROBES:
            src = PROBES_SRC / f"{name}.c"
            subprocess.run(
                [gcc, "-O1", "-Wall", "-Werror", "-pthread", "-o", str(out / src.stem), str(src)],
                check=True,
            )
        yield Probes(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A scratch directory the unprivileged uid can write (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="sandboxd-test-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def drop_to(uid: int) -> None:
    """Become ``uid`` (and the same gid) for good, with no supplementary groups."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


Runner = Callable[..., subprocess.CompletedProcess[str]]


def _run_confined(
    argv: Sequence[str],
    *,
    bpf: bytes | None = None,
    landlock: Mapping[str, object] | None = None,
    uid: int | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a child: new session, no core dumps, no_new_privs, optional uid drop,
    optional Landlock ruleset, then the optional seccomp filter last, then exec."""
    # Imported here so that a broken module fails the tests that use it, not collection.
    from sandboxd.isolation import landlock as landlock_mod
    from sandboxd.isolation import seccomp as seccomp_mod

    if uid is not None and os.geteuid() != 0:
        pytest.skip("needs root to drop to another uid")

    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS would dump core in cwd
        prctl.set_no_new_privs(1)
        if uid is not None:
            drop_to(uid)
        if landlock is not None:
            landlock_mod.restrict(**landlock)  # type: ignore[arg-type]
        if bpf is not None:
            seccomp_mod.install(bpf)

    return subprocess.run(
        list(argv),
        preexec_fn=setup,
        start_new_session=True,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def run_confined() -> Runner:
    """The function that runs a command confined (see ``_run_confined``)."""
    return _run_confined
