"""sandboxd/isolation/_libc.py's wrappers that have more than one way to their answer."""

from __future__ import annotations

import os

import pytest

from sandboxd.isolation import _libc


@pytest.mark.parametrize("way", ["ioctl", "fdinfo"])
def test_pidfd_pid_names_the_process_and_minus_one_once_reaped(
        way: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PIDFD_GET_INFO where the kernel has it (6.13), the fdinfo file before: the same."""
    if way == "fdinfo":
        monkeypatch.setattr(_libc, "_PIDFD_GET_INFO", None)
    own = os.pidfd_open(os.getpid())
    try:
        assert _libc.pidfd_pid(own) == os.getpid()
    finally:
        os.close(own)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    child = os.pidfd_open(pid)
    try:
        assert _libc.pidfd_pid(child) == pid
        os.waitpid(pid, 0)
        assert _libc.pidfd_pid(child) == -1
    finally:
        os.close(child)
