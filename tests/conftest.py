"""Suite-wide fixtures: root-only skipping, the leftovers check after every test, compiled
probes and a run-once helper for tests that run real containers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandboxd_testing import leftovers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (real namespaces, cgroups and mounts)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def cgroup_leaf() -> Any:
    """On cgroup v2, move this test process into a leaf of its own subtree first.

    v2's "no internal processes" rule: a child (run-once, a daemon) cannot enable
    controllers in a cgroup that still holds a process it did not start, such as
    pytest itself in a delegated scope. Opening a backend moves us into the shared
    leaf ``sandboxd.supervisor``, where every child is then born. On v1 it only
    creates (and at the end removes) an empty root.
    """
    if os.geteuid() != 0:
        yield None
        return
    from sandboxd import cgroups

    backend = cgroups.open_backend(f"pytest-{os.getpid()}")
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def leftovers_view() -> leftovers.View | None:
    """What the leftovers check must not count: nothing, unless a module overrides this.

    A module sharing one daemon across its tests overrides it with
    ``leftovers.daemon_view(...)``, which hides that daemon's warm containers
    and recycled cgroups (they outlive every test by design; the module checks
    them once its daemon stops). The override may be a generator whose teardown
    waits for the daemon to be idle: it runs before the check.
    """
    return None


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Fail any root test that leaves a process, cgroup or mount of sandboxd behind."""
    if "root" not in request.keywords or os.geteuid() != 0:
        yield
        return
    view = request.getfixturevalue("leftovers_view")
    before = leftovers.snapshot()
    if view is not None:
        before = view(before)
    yield
    left = leftovers.new_leftovers(before, view=view)
    if left:
        pytest.fail(f"test left things behind: {left}", pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    if leftovers.MINE:  # orphans of this run stay in its tree, where the check looks
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


PROBES = Path(__file__).resolve().parent / "probes"


@pytest.fixture(scope="session")
def probes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every C probe in tests/probes, compiled once per session with gcc."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the probes (scripts/install.sh installs it)")
    out = tmp_path_factory.mktemp("sandboxd-probes")
    built: dict[str, Path] = {}
    for src in sorted(PROBES.glob("*.c")):
        exe = out / src.stem
        subprocess.run(["gcc", "-O1", "-pthread", "-o", str(exe), str(src)], check=True)
        built[src.stem] = exe
    return built


RunOnce = Callable[..., dict[str, Any]]


def run_once_cli(argv: list[str], *, files: dict[str, Path | bytes] | None = None,
                 stdin: bytes | None = None, tmp: Path | None = None,
                 expect_exit: int | None = None, **limits: Any) -> dict[str, Any]:
    """Run ``sandboxd run-once --json`` in a subprocess and return the parsed result."""
    cmd = [sys.executable, "-m", "sandboxd", "run-once", "--json"]
    for key, value in limits.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    for name, content in (files or {}).items():
        if isinstance(content, bytes):
            assert tmp is not None
            path = tmp / f"file-{name.replace('/', '_')}"
            path.write_bytes(content)
            content = path
        cmd += ["--file", f"{name}={content}"]
    if stdin is not None:
        assert tmp is not None
        p = tmp / "stdin"
        p.write_bytes(stdin)
        cmd += ["--stdin", str(p)]
    cmd += ["--", *argv]
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    assert proc.stdout.count(b"\n") == 1, (proc.stdout[-2000:], proc.stderr[-4000:])
    result = json.loads(proc.stdout)
    if expect_exit is not None:
        assert proc.returncode == expect_exit, (proc.returncode, result)
    result["_exit"] = proc.returncode
    result["_stderr"] = proc.stderr.decode(errors="replace")
    return result


@pytest.fixture
def run_once(tmp_path: Path) -> RunOnce:
    def _run(argv: list[str], **kw: Any) -> dict[str, Any]:
        return run_once_cli(argv, tmp=tmp_path, **kw)

    return _run


@pytest.fixture
def canary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A host file with a random token that must never be seen inside a container."""
    token = os.urandom(16).hex()
    d = tmp_path_factory.mktemp("sandboxd-canary")
    path = d / "canary.txt"
    path.write_text(token)
    return path, token
