"""Start a real daemon for a test, and talk to it with the bare protocol (no client library).

The daemon runs as a subprocess (``python -m sandboxd serve``) with its own
socket, state dir and cgroup instance name, so tests never share one; the
``Daemon`` context stops it with SIGTERM and checks it exited 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sandboxd_protocol as proto


class Daemon:
    def __init__(self, tmp: Path, **config: Any) -> None:
        self.dir = tmp / f"sandboxd-d-{uuid.uuid4().hex[:6]}"
        self.dir.mkdir()
        self.socket = str(self.dir / "sandboxd.sock")
        self.config = {"socket": self.socket, "state_dir": str(self.dir / "state"),
                       "instance": f"t{os.getpid()}-{uuid.uuid4().hex[:6]}", "pool_size": 1,
                       **config}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "daemon.log"

    def config_text(self) -> str:
        lines = []
        for k, v in self.config.items():
            if isinstance(v, str):
                lines.append(f'{k} = "{v}"')
            elif isinstance(v, (list, tuple)):
                lines.append(f"{k} = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in v)}]")
            else:
                lines.append(f"{k} = {v}")
        return "\n".join(lines) + "\n"

    def start(self, wait: float = 30.0) -> Daemon:
        cfg = self.dir / "sandboxd.toml"
        cfg.write_text(self.config_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandboxd", "serve", "--config", str(cfg)],
            stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log.read_text()}")
            if "event=ready" in self.log.read_text():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"daemon not ready in {wait}s: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            code = self.stop()
            assert code == 0, f"daemon exited {code}: {self.log.read_text()[-3000:]}"

    def connect(self) -> Client:
        return Client(self.socket)


class Client:
    """A blocking client speaking the bare protocol, for tests of the daemon itself."""

    def __init__(self, path: str, hello: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.conn = proto.Connection(proto.CLIENT)
        self.welcome: proto.Welcome | None = None
        if hello:
            self.send(proto.Hello(client="tests"))
            ev = self.next()
            assert isinstance(ev, proto.Welcome), ev
            self.welcome = ev

    def send(self, ev: proto.Event) -> None:
        self.sock.sendall(self.conn.send(ev))

    def next(self) -> Any:
        while True:
            ev = self.conn.next_event()
            if ev is not proto.NEED_DATA:
                return ev
            self.conn.receive_data(self.sock.recv(1 << 16))

    def submit(self, job_id: str, profile: str = "bash", **kw: Any) -> None:
        self.send(proto.JobSubmission(id=job_id, profile=profile, **kw))

    def result(self, job_id: str) -> tuple[proto.JobResult | proto.ErrorReport, list[Any]]:
        """Events until this job's result (or error); returns it and the events seen."""
        seen = []
        while True:
            ev = self.next()
            seen.append(ev)
            if isinstance(ev, (proto.JobResult, proto.ErrorReport)) and \
                    getattr(ev, "id", None) == job_id:
                return ev, seen

    def run(self, job_id: str = "j", profile: str = "bash", **kw: Any) -> proto.JobResult:
        self.submit(job_id, profile, **kw)
        res, _ = self.result(job_id)
        assert isinstance(res, proto.JobResult), res
        return res

    def close(self) -> None:
        self.sock.close()
