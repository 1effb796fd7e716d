"""Helpers for the client tests: sandboxctl in a subprocess, and a fake daemon.

(Named ``client_helpers`` so that it cannot clash with helper modules of other
test directories.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sandboxd_protocol as proto

BIN = Path(sys.executable).parent
SANDBOXCTL = str(BIN / "sandboxctl")

SLEEPER = {"main.sh": "echo started; sleep 30; echo never"}
"""A job that says it runs, then waits to be cancelled."""


def sandboxctl(
    *args: str,
    socket: str | None = None,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run the installed ``sandboxctl`` console script; ``socket`` via ``$SANDBOXD_SOCKET``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    if socket is not None:
        environ["SANDBOXD_SOCKET"] = socket
    environ.update(env or {})
    return subprocess.run(
        [SANDBOXCTL, *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        cwd=cwd,
        timeout=timeout,
        env=environ,
    )


def shape(result: Any) -> Any:
    """What must be equal between two runs of a job: everything but the measurements (and
    how a program stopped at its output limit ended, which is a race by nature)."""
    steps = [
        (
            s.verdict,
            s.reason,
            s.exit_code if s.verdict != "output_limit" else "-",
            s.signal if s.verdict != "output_limit" else "-",
            s.stdout,
            s.stderr,
            s.stdout_truncated,
            s.stderr_truncated,
            s.oom_killed,
        )
        for s in result.steps
    ]
    compile_ = (
        None if result.compile is None else (result.compile.verdict, result.compile.exit_code)
    )
    return compile_, steps


class FakeDaemon:
    """A Unix socket server speaking the protocol's server side, one connection at a time,
    playing a misbehaving or foreign daemon: ``handler(conn, sock)`` does the talking."""

    def __init__(self, path: Path, handler: Callable[[proto.Connection, socket.socket], None]):
        self.path = str(path)
        self.handler = handler
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeDaemon:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.thread.join(5)

    def _serve(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        with sock:
            sock.settimeout(10)
            try:
                self.handler(proto.Connection(proto.SERVER), sock)
            except BaseException as e:  # shown by the test that checks .errors
                self.errors.append(e)


def next_event(conn: proto.Connection, sock: socket.socket) -> Any:
    """The next event from the client (blocking)."""
    while True:
        event = conn.next_event()
        if event is not proto.NEED_DATA:
            return event
        conn.receive_data(sock.recv(65536))


def run_async(library: str, fn: Callable[[], Any]) -> Any:
    """Run the async function ``fn`` under ``"asyncio"`` or ``"trio"``."""
    if library == "asyncio":
        import asyncio

        return asyncio.run(fn())
    import trio

    return trio.run(fn)
