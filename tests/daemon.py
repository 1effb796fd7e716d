"""Start a real daemon for a test, and talk to it with the bare protocol (no client library).

The daemon runs as a subprocess (``python -m sandboxd serve``) with its own
socket, state dir and cgroup instance name, so tests never share one; the
``Daemon`` context stops it with SIGTERM and checks it exited 0.
"""

from __future__ import annotations

import os
import re
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
    def __init__(self, tmp: Path, args: tuple[str, ...] = (), **config: Any) -> None:
        self.args = args  # more `sandboxd serve` options, e.g. ("--http", "127.0.0.1:0")
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
            elif isinstance(v, bool):
                lines.append(f"{k} = {str(v).lower()}")
            elif isinstance(v, (list, tuple)):
                lines.append(f"{k} = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in v)}]")
            else:
                lines.append(f"{k} = {v}")
        return "\n".join(lines) + "\n"

    def start(self, wait: float = 30.0) -> Daemon:
        cfg = self.dir / "sandboxd.toml"
        cfg.write_text(self.config_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandboxd", "serve", "--config", str(cfg), *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log.read_text()}")
            if "event=ready" in self.log.read_text()[offset:]:
                return self
            time.sleep(0.02)
        raise RuntimeError(f"daemon not ready in {wait}s: {self.log.read_text()}")

    @property
    def http_address(self) -> str:
        """HOST:PORT of the HTTP front door, as the last ``ready`` line says."""
        ready = [line for line in self.log.read_text().splitlines() if "event=ready" in line]
        found = re.search(r" http=(\S+)", ready[-1]) if ready else None
        assert found and found.group(1) != "off", "the daemon has no HTTP front door"
        return found.group(1)

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

    def connect(self, hello: bool = True) -> Client:
        return Client(self.socket, hello=hello)

    def fds(self) -> int:
        """Open descriptors of the daemon process (for leak checks)."""
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def cgroup_fds(self) -> int:
        """Those of the daemon's descriptors that are open cgroup files (counters it keeps
        open per job cgroup, live or kept for recycling)."""
        assert self.proc is not None
        d = f"/proc/{self.proc.pid}/fd"
        n = 0
        for name in os.listdir(d):
            try:
                n += os.readlink(f"{d}/{name}").startswith("/sys/fs/cgroup/")
            except OSError:
                pass
        return n

    def stats(self) -> proto.ServerStats:
        c = self.connect()
        try:
            c.send(proto.StatsRequest())
            ev = c.next()
            assert isinstance(ev, proto.ServerStats), ev
            return ev
        finally:
            c.close()

    def wait_warm(self, timeout: float = 30.0) -> proto.ServerStats:
        """Until every pool is back at its target."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if all(p.warm >= p.target for p in st.pools) or time.monotonic() > deadline:
                return st
            time.sleep(0.05)


class Client:
    """A blocking client speaking the bare protocol, for tests of the daemon itself."""

    def __init__(self, path: str, hello: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(path)
        self.conn = proto.Connection(proto.CLIENT)
        self.welcome: proto.Welcome | None = None
        self.done: dict[str, proto.JobResult | proto.ErrorReport] = {}
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
            if isinstance(ev, proto.ConnectionClosed):
                raise ConnectionError("the daemon closed the connection")
            if ev is not proto.NEED_DATA:
                return ev
            self.conn.receive_data(self.sock.recv(1 << 16))

    def submit(self, job_id: str, profile: str = "bash", **kw: Any) -> None:
        self.send(proto.JobSubmission(id=job_id, profile=profile, **kw))

    def result(self, job_id: str) -> tuple[proto.JobResult | proto.ErrorReport, list[Any]]:
        """Events until this job's result (or error); returns it and the events seen.

        Results of other jobs that arrive meanwhile are kept for their own call."""
        seen: list[Any] = []
        while job_id not in self.done:
            ev = self.next()
            seen.append(ev)
            if isinstance(ev, (proto.JobResult, proto.ErrorReport)) and ev.id is not None:
                self.done[ev.id] = ev
        return self.done.pop(job_id), seen

    def run(self, job_id: str = "j", profile: str = "bash", **kw: Any) -> proto.JobResult:
        self.submit(job_id, profile, **kw)
        res, _ = self.result(job_id)
        assert isinstance(res, proto.JobResult), res
        return res

    def close(self) -> None:
        self.sock.close()
