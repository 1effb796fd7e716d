"""Fixtures for the cgroup tests; see cgroup_helpers for the workloads and checks."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator

import pytest
from cgroup_helpers import leftovers, stray_processes

from sandboxd.cgroups import CgroupBackend, JobCgroup, open_backend


@pytest.fixture
def backend() -> Iterator[CgroupBackend]:
    """A backend with a tag of its own; afterwards nothing of it may remain."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    b = open_backend(f"t{os.getpid()}-{secrets.token_hex(3)}")
    try:
        yield b
    finally:
        b.close()
        assert leftovers(b.root_name) == []
        strays = stray_processes()
        for pid in strays:  # never leave them running, even when the test failed
            os.kill(pid, signal.SIGKILL)
        assert strays == [], "processes started by the test survived"


_counter = iter(range(1_000_000))


@pytest.fixture
def job(backend: CgroupBackend) -> JobCgroup:
    return backend.create(f"sandboxd-job{next(_counter)}")
