"""Fixtures of the image tests: a store in a directory containers could reach, and a scratch
directory for the image files the tests write."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.images import Store


@pytest.fixture
def store_dir() -> Iterator[Path]:
    """Not pytest's tmp_path: its parents are 0700, and a store must be reachable by the
    containers' unprivileged host uids (Store.create refuses otherwise)."""
    d = tempfile.mkdtemp(prefix="sandboxd-images-test-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d) / "store"
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def store(store_dir: Path) -> Store:
    return Store(str(store_dir))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path
