"""A real ``redis-server`` for a test or a benchmark, on a loopback port in a directory of its own.

It runs in the foreground as our child (stopped by its pid), with no RDB
snapshots and the append-only file on, so a test can restart it and find
every write it acknowledged (a graceful stop flushes the file).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from sandboxd_testing.daemon import tied_to_caller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "sandboxd-redis"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict (RESP by hand: no client library needed)."""
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            s.sendall(f"INFO {section}\r\n".encode())
            data = b""
            while True:
                more = s.recv(65536)
                if not more:
                    raise ConnectionError("redis-server closed the connection")
                data += more
                head, _, body = data.partition(b"\r\n")
                if head.startswith(b"$") and len(body) >= int(head[1:]):
                    break
        text = body[:int(head[1:])].decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def cpu_seconds(self) -> float:
        """Redis's own CPU time (user + system, from its getrusage, in microseconds)."""
        info = self.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        assert exe, "redis-server is missing: run scripts/install.sh"
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(tied_to_caller(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                 "--save", "", "--appendonly", "yes", "--daemonize", "no"]),
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.dir / "redis.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """A graceful stop (SIGTERM: the append-only file is flushed), by pid."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
