"""Fixtures for the seccomp and Landlock tests: compiled probes, and ``run_in_container``,
which runs a command in a real container made the way production makes it
(``incontainer.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from incontainer import Runner, in_container

PROBES_SRC = Path(__file__).resolve().parents[2] / "probes"
# Only ours: other probes in tests/probes are built by the suite-wide ``probes`` fixture.
LSM_PROBES = ("try_syscall", "clone_probe", "foreign_arch")
PROBES_AT = "/probes"  # where the probes appear in a container (a read-only bind)


@pytest.fixture
def run_in_container() -> Runner:
    """The function that runs a command in a production-made container (``in_container``)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (real namespaces and cgroups)")
    return in_container


@dataclass(frozen=True)
class Probes:
    """Paths of the compiled C probes as a container sees them (``binds`` puts them there)."""

    dir: Path

    def __getattr__(self, name: str) -> str:
        if not (self.dir / name).exists():
            raise AttributeError(name)
        return f"{PROBES_AT}/{name}"

    @property
    def binds(self) -> tuple[tuple[str, str]]:
        return ((str(self.dir), PROBES_AT),)


@pytest.fixture(scope="session")
def lsm_probes() -> Iterator[Probes]:
    """Compile the seccomp probes once per session with gcc, somewhere any uid can exec them.

    Named apart from the suite-wide ``probes`` fixture (a dict, in a 0700 directory) so as
    not to shadow it for other tests in this directory."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the probes")
    # Not under /tmp: a container's new root is built on a tmpfs mounted over /tmp in its
    # mount namespace, which hides the host's /tmp from the binds made after it.
    out = Path(tempfile.mkdtemp(prefix="sandboxd-probes-", dir="/var/tmp"))
    out.chmod(0o755)  # pytest's own tmp dirs are 0700, closed to the container's uids
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
