"""Start a real daemon, and talk to it with the bare protocol (no client library).

The daemon runs as a subprocess (``python -m sandboxd serve``) with its own
socket, state dir, log and cgroup instance name in a directory of its own, so
that tests, benchmarks, the soak and the fuzzer never share one; ``Daemon``
stops it with SIGTERM (as a context manager, checking that it exited 0).

``Client`` is one blocking socket speaking the protocol through
``sandboxd_protocol.Connection``: no threads, no retries, so that what a test or
a benchmark sees is the daemon and the protocol, not a client library's
conveniences (tests/clients test those).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sandboxd_protocol as proto
from sandboxd_testing import leftovers

CGROUP_FS = "/sys/fs/cgroup/"


def tied_to_caller(argv: list[str]) -> list[str]:
    """``argv`` made to get SIGTERM when the thread that starts it dies (util-linux's
    ``setpriv --pdeathsig``), so that a test run killed outright (SIGKILL, a CI timeout)
    leaves no daemon serving on: it drains and removes its cgroups as on any SIGTERM.
    Only from the main thread, where pytest and the benchmarks start their daemons: the
    signal follows the thread that forked, and a worker thread ending would stop the
    child early. The kernel clears the setting when the child changes its user, so a
    ``setpriv`` that does (``Daemon.prefix``, a rootless daemon) is given
    ``--pdeathsig`` too: it sets it again once it is that user."""
    setpriv = _setpriv_to_tie()
    return argv if setpriv is None else [setpriv, "--pdeathsig", "TERM", "--", *argv]


def _setpriv_to_tie() -> str | None:
    """setpriv, where ``tied_to_caller`` ties a child (see there); else None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return shutil.which("setpriv")


def _tied_prefix(prefix: tuple[str, ...]) -> list[str]:
    """``prefix`` (``Daemon.prefix``) with ``--pdeathsig TERM`` given to its ``setpriv``
    where ``tied_to_caller`` ties the daemon (see there)."""
    if prefix and os.path.basename(prefix[0]) == "setpriv" and _setpriv_to_tie():
        return [prefix[0], "--pdeathsig", "TERM", *prefix[1:]]
    return list(prefix)


class Daemon:
    """``sandboxd serve`` in a fresh directory below ``tmp``; ``config`` adds to (or
    overrides) its configuration file: socket, state dir, instance (``t<pid>-<random>``,
    so cgroups carry ``sandboxd-t...``) and ``pool_size = 1`` by default."""

    def __init__(self, tmp: Path, args: tuple[str, ...] = (), **config: Any) -> None:
        self.args = args  # more `sandboxd serve` options, e.g. ("--http", "127.0.0.1:0")
        self.dir = tmp / f"sandboxd-d-{uuid.uuid4().hex[:6]}"
        self.dir.mkdir(parents=True)
        self.socket = str(self.dir / "sandboxd.sock")
        self.config = {"socket": self.socket, "state_dir": str(self.dir / "state"),
                       "instance": f"t{os.getpid()}-{uuid.uuid4().hex[:6]}", "pool_size": 1,
                       **config}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "daemon.log"
        # Run before `python -m sandboxd serve` (after entering ``cgroup``), e.g. setpriv
        # to serve as an ordinary user (tests/integration/test_rootless_daemon.py).
        self.prefix: tuple[str, ...] = ()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def instance(self) -> str:
        return str(self.config["instance"])

    @property
    def http_address(self) -> str:
        """HOST:PORT of the HTTP front door, as the last ``ready`` line says."""
        ready = [line for line in self.log.read_text().splitlines() if "event=ready" in line]
        found = re.search(r" http=(\S+)", ready[-1]) if ready else None
        assert found and found.group(1) != "off", "the daemon has no HTTP front door"
        return found.group(1)

    def config_text(self) -> str:
        """The configuration as TOML: strings, numbers, booleans and lists of them are
        written as JSON writes them, which TOML reads alike."""
        lines = []
        for k, v in self.config.items():
            if not isinstance(v, (str, int, float, bool, list, tuple)):
                raise TypeError(f"config {k}: {type(v).__name__} is not written here")
            lines.append(f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}")
        return "\n".join(lines) + "\n"

    def start(self, wait: float = 30.0, *, cgroup: str | None = None) -> Daemon:
        """Start (again, after ``stop``: the log goes on) and wait until it serves.

        Ready means the ``ready`` event in the log; a daemon configured to log
        only warnings says nothing then, so it is ready once it answers a hello.
        With ``cgroup`` (a v1 cgroup directory), the daemon enters it before it
        makes anything, so that everything it runs is counted there.
        """
        cfg = self.dir / "sandboxd.toml"
        cfg.write_text(self.config_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        offset = self.log.stat().st_size if self.log.exists() else 0
        argv = [*_tied_prefix(self.prefix), sys.executable, "-m", "sandboxd", "serve",
                "--config", str(cfg), *self.args]
        if cgroup is not None:
            argv = ["/bin/sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh",
                    *argv]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(tied_to_caller(argv), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env)
        logs_ready = self.config.get("log_level", "info") in ("debug", "info")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log.read_text()}")
            if self._ready(offset, logs_ready):
                return self
            time.sleep(0.02)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"daemon not ready in {wait}s: {self.log.read_text()}")

    def _ready(self, offset: int, logs_ready: bool) -> bool:
        if logs_ready:
            return "event=ready" in self.log.read_text()[offset:]
        try:
            Client(self.socket, name="probe").close()
        except (OSError, ConnectionError):
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` (SIGTERM: the daemon drains, empties its pools, removes its
        cgroups) and reap it; its exit status. Killed, then raises, past ``timeout``."""
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
        return len(descriptors(self.pid))

    def cgroup_fds(self) -> int:
        """Those of the daemon's descriptors that are open cgroup files (counters it keeps
        open per job cgroup, live or kept for recycling)."""
        return sum(t.startswith(CGROUP_FS) for t in descriptors(self.pid))

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def stats(self) -> proto.ServerStats:
        c = self.connect()
        try:
            return c.stats()
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
    """A blocking client speaking the bare protocol, one socket, for tests and benchmarks
    of the daemon itself. ``timeout`` (seconds, ``None`` for none) bounds each read."""

    def __init__(self, path: str, hello: bool = True, *, name: str = "tests",
                 timeout: float | None = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.conn = proto.Connection(proto.CLIENT)
        self.welcome: proto.Welcome | None = None
        self.done: dict[str, proto.JobResult | proto.ErrorReport] = {}
        self.n = 0
        if hello:
            self.send(proto.Hello(client=name))
            ev = self.next()
            if not isinstance(ev, proto.Welcome):
                self.sock.close()
                raise ConnectionError(f"no welcome: {ev}")
            self.welcome = ev

    def send(self, ev: proto.Event) -> None:
        self.sock.sendall(self.conn.send(ev))

    def next(self) -> Any:
        """The next event from the daemon; ``ConnectionError`` once it closed."""
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

    def job(self, **fields: Any) -> proto.JobResult:
        """Submit one job (``JobSubmission`` fields but the id, numbered here) and wait for
        its result; ``RuntimeError`` if the daemon answers an error instead."""
        self.n += 1
        job_id = str(self.n)
        self.send(proto.JobSubmission(id=job_id, **fields))
        res, _ = self.result(job_id)
        if isinstance(res, proto.ErrorReport):
            raise RuntimeError(f"job {fields}: {res}")
        return res

    def stats(self) -> proto.ServerStats:
        self.send(proto.StatsRequest())
        ev = self.next()
        assert isinstance(ev, proto.ServerStats), ev
        return ev

    def close(self) -> None:
        self.sock.close()


# ------------------------------------------------------------ a process's costs


def descriptors(pid: int) -> list[str]:
    """What each open descriptor of ``pid`` points to (``[]`` once it is gone)."""
    d = f"/proc/{pid}/fd"
    try:
        names = os.listdir(d)
    except OSError:
        return []
    out = []
    for name in names:
        try:
            out.append(os.readlink(f"{d}/{name}"))
        except OSError:
            pass
    return out


def fds_but_cgroup_files(pid: int) -> int:
    """Descriptors of ``pid``, less the cgroup counter files a daemon keeps open per job
    cgroup (their number follows the peak concurrency, not the jobs run)."""
    return sum(not t.startswith(CGROUP_FS) for t in descriptors(pid))


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid``; 0 once it is gone (a zombie has none)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def module_daemon(tmp: Path, **config: Any) -> Iterator[Daemon]:
    """A daemon shared by a test module (its fixture yields from this): warm before the
    first test; stopped cleanly after the last, which must leave nothing of its own
    behind (the per-test check hides its warm containers, so this is where they count)."""
    before = leftovers.snapshot()
    d = Daemon(tmp, **config).start()
    try:
        d.wait_warm()
        yield d
    finally:
        assert d.stop() == 0, d.log.read_text()[-3000:]
        left = leftovers.new_leftovers(before, settle=10.0, view=leftovers.only_ours(d.instance))
        assert not left, f"the module's daemon left things behind: {left}"
