"""Fuzz a running daemon through its socket: hostile clients, while a good one keeps working.

Invariants (see README.md, "Fuzzing the running daemon"):

1. The daemon never dies and never stops serving: a well-behaved client,
   connected throughout, gets every one of its jobs answered correctly, each
   within a bound.
2. Every hostile connection ends: the daemon answers garbage with one error
   whose code the protocol defines (never ``internal_error``, which means a bug
   of ours) and closes; a client that stalls (no hello, a message left half
   sent, silence with no job, a result never read) is dropped after the
   daemon's timeouts; a connection past ``max_connections`` is answered
   ``server_busy``.
3. Nothing accumulates: the daemon's log has no error and no traceback, and
   its memory and descriptors come back near where they started.

Hostile clients are *actions* (``ACTIONS``), picked at random (``--seed``),
several at a time, for ``--seconds``. Every action is bounded: it waits for the
daemon at most its timeouts plus a margin, then reports a finding.

    sudo .venv/bin/python fuzz/fuzz_daemon.py --seconds 60            # its own daemon
    .venv/bin/python fuzz/fuzz_daemon.py --socket PATH --seconds 600  # a running one

``run`` is also called by the test suite (tests/security/test_daemon_fuzz.py)
for a bounded run against a daemon started with short timeouts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

# sandboxd_testing is not installed: it imports from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sandboxd_protocol as proto
from sandboxd_protocol._schema import encode_message  # raw maps, in any state
from sandboxd_testing.daemon import Daemon, rss_kib
from sandboxd_testing.daemon import fds_but_cgroup_files as fd_count
from sandboxd_testing.wire import HEADER, frame, packed

KNOWN_CODES = frozenset(proto.ErrorCode)
# Margin on top of the daemon's own timeouts before a stalled connection is a finding.
MARGIN = 5.0


@dataclass(frozen=True)
class Target:
    """The daemon under test, and the limits it was configured with."""

    socket: str
    handshake_timeout: float
    idle_timeout: float
    max_connections: int
    max_frame: int
    pid: int | None = None  # for memory and descriptor readings


@dataclass
class Report:
    actions: Counter[str] = field(default_factory=Counter)
    error_codes: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)
    good_jobs: int = 0
    good_worst_latency: float = 0.0
    rss_kib: tuple[int, int] = (0, 0)  # before, after
    fds: tuple[int, int] = (0, 0)

    def summary(self) -> str:
        acts = ", ".join(f"{k} {v}" for k, v in sorted(self.actions.items()))
        codes = ", ".join(f"{k} {v}" for k, v in sorted(self.error_codes.items()))
        return (f"{sum(self.actions.values())} hostile connections ({acts}); errors answered: "
                f"{codes}; good client: {self.good_jobs} jobs, worst {self.good_worst_latency:.2f}"
                f" s; daemon RSS {self.rss_kib[0]} -> {self.rss_kib[1]} KiB, fds {self.fds[0]}"
                f" -> {self.fds[1]}; findings: {len(self.findings)}")


# ------------------------------------------------------------------ wire helpers


def wire(event: proto.Event) -> dict[str, Any]:
    """The message map of any event, whichever side may send it."""
    return encode_message(event, proto.DEFAULT_SIZE_LIMITS)


HELLO = packed(wire(proto.Hello(client="fuzz")))


class Conn:
    """A raw client socket: sends bytes, reads whole frames as maps (no state machine, so
    it can say anything, out of order included)."""

    def __init__(self, target: Target) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(target.socket)
        self.buf = b""
        self.closed_by_peer = False

    def send(self, data: bytes, rng: random.Random | None = None) -> bool:
        """Send, in random pieces if ``rng``; False if the daemon already closed."""
        try:
            if rng is None:
                self.sock.sendall(data)
                return True
            i = 0
            while i < len(data):
                n = rng.choice((1, 2, 7, 64, 4096, len(data)))
                self.sock.sendall(data[i:i + n])
                i += n
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.closed_by_peer = True
            return False

    def frames(self, until: float) -> Iterator[dict[str, Any]]:
        """Maps the daemon sends, until it closes (then ``closed_by_peer``) or ``until``."""
        while True:
            while len(self.buf) >= 4:
                (n,) = HEADER.unpack_from(self.buf)
                if len(self.buf) < 4 + n:
                    break
                body, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                yield msgpack.unpackb(body, raw=False, strict_map_key=False)
            left = until - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                return
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed_by_peer = True
                return
            self.buf += data

    def hello(self) -> dict[str, Any]:
        self.send(HELLO)
        return next(self.frames(time.monotonic() + 10), {})

    def close(self) -> None:
        self.sock.close()


def until_closed(c: Conn, report: Report, what: str, within: float,
                 allow: Callable[[dict[str, Any]], bool] = lambda m: True) -> list[dict[str, Any]]:
    """Read until the daemon closes; every error must carry a protocol code, never
    ``internal_error``; the close must come ``within`` seconds."""
    got = list(c.frames(time.monotonic() + within))
    for m in got:
        if m.get("type") == "error":
            code = str(m.get("code"))
            report.error_codes[code] += 1
            if code not in KNOWN_CODES or code == "internal_error":
                report.findings.append(f"{what}: error code {code!r}: {m.get('message')!r}")
        elif not allow(m):
            report.findings.append(f"{what}: unexpected answer {m!r:.200}")
    if not c.closed_by_peer:
        report.findings.append(f"{what}: still open after {within:.1f} s")
    return got


# ----------------------------------------------------------------- random messages

TYPES = ("hello", "welcome", "submit", "accepted", "output", "stdin", "stdin_end", "result",
         "cancel", "list_jobs", "job_list", "kill", "kill_result", "get_stats", "stats",
         "ping", "pong", "error", "goodbye", "no_such_type")


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["none", "bool", "int", "float", "str", "bin"]
    if depth < 3:
        kinds += ["list", "map"]
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice((0, 1, -1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, rng.randint(-999, 999)))
    if kind == "float":
        return rng.choice((0.0, -1.0, 1e300, float("nan"), float("inf"), rng.random()))
    if kind == "str":
        return rng.choice(("", "x", "a/b", "../x", "\0", "é" * 40, "main.sh", "bash", "1/a",
                           "x" * rng.choice((64, 65, 255, 256, 5000))))
    if kind == "bin":
        return os.urandom(rng.choice((0, 1, 16, 300)))
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(("id", "type", "files", "profile", "argv", "limits", "x", "")):
            random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def valid_submission(rng: random.Random, job_id: str) -> dict[str, Any]:
    """A submission the daemon accepts: small, quick jobs of a few shapes."""
    script = rng.choice((b"echo ok", b"exit 3", b"sleep 0.2; echo slept", b"head -c 100000 "
                         b"/dev/zero", b"cat", b"kill -9 $$"))
    sub = proto.JobSubmission(id=job_id, profile="bash", files={"main.sh": script},
                              stdin=os.urandom(rng.choice((0, 10, 1000))),
                              stream=rng.random() < 0.3,
                              limits=proto.JobLimits(cpu_time=1.0, wall_time=2.0))
    return wire(sub)


def mutated(rng: random.Random, msg: dict[str, Any]) -> dict[str, Any]:
    msg = dict(msg)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(("drop", "set", "add", "type"))
        keys = [k for k in msg if k != "type"]
        if op == "drop" and keys:
            del msg[rng.choice(keys)]
        elif op == "set" and keys:
            msg[rng.choice(keys)] = random_value(rng)
        elif op == "add":
            msg[rng.choice(("zz", "files", "limits", "tests", "env", "argv"))] = random_value(rng)
        else:
            msg["type"] = rng.choice(TYPES)
    return msg


def random_message(rng: random.Random, n: int) -> bytes:
    roll = rng.random()
    if roll < 0.3:
        return packed(valid_submission(rng, f"j{n}"))
    if roll < 0.6:
        return packed(mutated(rng, valid_submission(rng, f"j{n}")))
    if roll < 0.75:
        return packed({"type": rng.choice(TYPES), **{
            rng.choice(("id", "nonce", "job", "code", "x")): random_value(rng)
            for _ in range(rng.randint(0, 3))}})
    if roll < 0.85:  # not a map, or not msgpack at all
        return frame(rng.choice((msgpack.packb(random_value(rng)), os.urandom(rng.randint(1, 64)),
                                 b"\xc1", b"\x81\xa4type")))
    return packed(wire(rng.choice((proto.Ping(nonce=rng.randint(0, 9)), proto.StatsRequest(),
                                   proto.JobListRequest(), proto.Cancellation(id="j0")))))


# ------------------------------------------------------------------------ actions


def act_garbage(t: Target, rng: random.Random, r: Report) -> None:
    """Random bytes, sometimes after a hello; sometimes under a plausible length prefix."""
    c = Conn(t)
    try:
        if rng.random() < 0.5:
            c.hello()
        data = os.urandom(rng.randint(1, 4096))
        if rng.random() < 0.5:
            data = frame(data)
        c.send(data, rng)
        if rng.random() < 0.5:
            c.sock.shutdown(socket.SHUT_WR)
        until_closed(c, r, "garbage", max(t.handshake_timeout, t.idle_timeout) + MARGIN)
    finally:
        c.close()


def act_random_messages(t: Target, rng: random.Random, r: Report) -> None:
    """A hello (usually), then a few random, mutated or valid messages in random pieces;
    then either hang up at once, or read until the daemon is done with us."""
    c = Conn(t)
    try:
        if rng.random() < 0.9:
            c.hello()
        for i in range(rng.randint(1, 8)):
            if not c.send(random_message(rng, i), rng):
                break
        if rng.random() < 0.3:
            return  # hang up, jobs in flight or not: the daemon cancels them
        c.sock.settimeout(30)
        # Jobs may run (2 s of wall each, at most 8), then the idle timeout drops us.
        until_closed(c, r, "random messages", 8 * 2.5 + t.idle_timeout + MARGIN)
    finally:
        c.close()


def act_truncated(t: Target, rng: random.Random, r: Report) -> None:
    """A valid frame cut anywhere, then end of stream: a clean error, or a clean close."""
    c = Conn(t)
    try:
        c.hello()
        data = packed(valid_submission(rng, "cut"))
        c.send(data[:rng.randint(1, len(data) - 1)])
        c.sock.shutdown(socket.SHUT_WR)
        until_closed(c, r, "truncated frame", MARGIN)
    finally:
        c.close()


def act_oversized(t: Target, rng: random.Random, r: Report) -> None:
    """A length prefix past max_frame: refused at once (``frame_too_large``), body unread."""
    c = Conn(t)
    try:
        if rng.random() < 0.5:
            c.hello()
        c.send(HEADER.pack(rng.randint(t.max_frame + 1, 2**32 - 1)) + os.urandom(100))
        got = until_closed(c, r, "oversized frame", MARGIN)
        if not any(m.get("code") == "frame_too_large" for m in got):
            r.findings.append(f"oversized frame: no frame_too_large error: {got!r:.200}")
    finally:
        c.close()


OUT_OF_ORDER_BEFORE_HELLO = (proto.StatsRequest(), proto.Ping(nonce=1),
                             proto.Welcome(), proto.JobAcceptance(id="a"))
OUT_OF_ORDER_AFTER_HELLO = (
    proto.Hello(client="again"), proto.Welcome(), proto.JobAcceptance(id="a"),
    proto.OutputChunk(id="a", stream="stdout", data=b"x", seq=0),
    proto.JobResult(id="a"), proto.StdinChunk(id="nope", data=b"x"),
    proto.EndOfStdin(id="nope"), proto.Cancellation(id="nope"), proto.Pong(nonce=5),
    proto.JobList(), proto.KillResult(job="1/a"), proto.ServerStats())


def act_out_of_order(t: Target, rng: random.Random, r: Report) -> None:
    """A message the client may not send now: a protocol error, then a close (or, for a
    late cancel of a job the daemon never had, the protocol's silent drop)."""
    c = Conn(t)
    try:
        before = rng.random() < 0.3
        if not before and c.hello().get("type") != "welcome":
            return  # refused (too many connections, say): nothing out of order to send
        ev = rng.choice(OUT_OF_ORDER_BEFORE_HELLO if before else OUT_OF_ORDER_AFTER_HELLO)
        c.send(packed(wire(ev)))
        got = until_closed(c, r, f"out of order {type(ev).__name__}",
                           t.idle_timeout + MARGIN)
        fatal = [m for m in got if m.get("type") == "error" and not m.get("id")]
        if not fatal and not isinstance(ev, proto.Cancellation | proto.EndOfStdin |
                                        proto.StdinChunk):
            r.findings.append(f"out of order {type(ev).__name__}: no error: {got!r:.200}")
    finally:
        c.close()


def act_slow_hello(t: Target, rng: random.Random, r: Report) -> None:
    """Nothing at all, or the hello one byte at a time, slower than the handshake allows."""
    c = Conn(t)
    try:
        start = time.monotonic()
        if rng.random() < 0.5:
            for b in HELLO[:-1]:
                if not c.send(bytes([b])) or time.monotonic() - start > t.handshake_timeout:
                    break
                time.sleep(t.handshake_timeout / 4)
        until_closed(c, r, "slow hello", t.handshake_timeout + MARGIN - (time.monotonic()
                                                                        - start))
    finally:
        c.close()


def act_stall_mid_message(t: Target, rng: random.Random, r: Report) -> None:
    """Half a message, with or without a job in flight, then silence."""
    c = Conn(t)
    try:
        c.hello()
        if rng.random() < 0.5:
            c.send(packed(valid_submission(rng, "busy")))
        data = packed(valid_submission(rng, "half"))
        c.send(data[:rng.randint(1, len(data) - 1)])
        until_closed(c, r, "stall mid-message", t.idle_timeout + 2.5 + MARGIN)
    finally:
        c.close()


def act_silent_after_job(t: Target, rng: random.Random, r: Report) -> None:
    """A job, its result read, then silence: dropped after idle_timeout."""
    c = Conn(t)
    try:
        c.hello()
        c.send(packed(wire(proto.JobSubmission(id="q", profile="bash",
                                               files={"main.sh": b"echo quick"}))))
        until_closed(c, r, "silent after a job", 2.5 + t.idle_timeout + MARGIN)
    finally:
        c.close()


def act_never_read(t: Target, rng: random.Random, r: Report) -> None:
    """Answers that pile up unread (a big result, or a stream of pongs): the daemon stops
    waiting for us after idle_timeout instead of holding the connection for ever."""
    c = Conn(t)
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.hello()
        if rng.random() < 0.5:
            c.send(packed(wire(proto.JobSubmission(
                id="big", profile="bash", files={"main.sh": b"head -c 8000000 /dev/zero"}))))
        else:
            c.sock.setblocking(False)
            ping = packed(wire(proto.StatsRequest()))
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                for _ in range(100_000):
                    c.sock.send(ping)
            c.sock.setblocking(True)
        time.sleep(t.idle_timeout + 2.5)
        until_closed(c, r, "never reading", t.idle_timeout + MARGIN)
    finally:
        c.close()


def act_connection_burst(t: Target, rng: random.Random, r: Report) -> None:
    """More connections at once than max_connections: the excess is answered server_busy."""
    conns: list[Conn] = []
    try:
        for _ in range(t.max_connections + 4):
            try:
                conns.append(Conn(t))
            except OSError:
                break
        busy = 0
        for c in conns:
            c.send(HELLO)
        for c in conns:
            first = next(c.frames(time.monotonic() + MARGIN), {})
            if first.get("code") == "server_busy":
                busy += 1
                r.error_codes["server_busy"] += 1
            elif first.get("type") != "welcome":
                r.findings.append(f"connection burst: answer {first!r:.200}")
        if busy < 4:
            r.findings.append(f"connection burst: only {busy} of {len(conns)} refused busy")
    finally:
        for c in conns:
            c.close()


ACTIONS: dict[str, tuple[float, Callable[[Target, random.Random, Report], None]]] = {
    "garbage": (3, act_garbage),
    "random_messages": (6, act_random_messages),
    "truncated": (2, act_truncated),
    "oversized": (1, act_oversized),
    "out_of_order": (3, act_out_of_order),
    "slow_hello": (1, act_slow_hello),
    "stall_mid_message": (1, act_stall_mid_message),
    "silent_after_job": (1, act_silent_after_job),
    "never_read": (1, act_never_read),
    "connection_burst": (0.3, act_connection_burst),
}


# --------------------------------------------------------------------- the run


def good_client(t: Target, stop: threading.Event, r: Report, bound: float) -> None:
    """One connection for the whole run, one small job after another, each checked."""
    c = Conn(t)
    try:
        if c.hello().get("type") != "welcome":
            r.findings.append("good client: no welcome")
            return
        n = 0
        while not stop.is_set():
            n += 1
            start = time.monotonic()
            c.send(packed(wire(proto.JobSubmission(
                id=f"g{n}", profile="bash", files={"main.sh": f"echo good {n}".encode()}))))
            result = None
            for m in c.frames(start + bound):
                if m.get("type") in ("result", "error") and m.get("id") == f"g{n}":
                    result = m
                    break
            took = time.monotonic() - start
            r.good_worst_latency = max(r.good_worst_latency, took)
            steps = (result or {}).get("steps") or [{}]
            if result is None or result.get("type") != "result" or \
                    steps[0].get("stdout") != f"good {n}\n".encode():
                r.findings.append(f"good client: job {n} answered {result!r:.300} in {took:.1f} s")
                return
            r.good_jobs += 1
    finally:
        c.close()


def run(target: Target, seconds: float, seed: int, workers: int = 4,
        good_bound: float = 20.0) -> Report:
    """Hostile clients on ``workers`` threads for ``seconds``, a good client throughout."""
    report = Report()
    if target.pid is not None:
        report.rss_kib = (rss_kib(target.pid), 0)
        report.fds = (fd_count(target.pid), 0)
    stop = threading.Event()
    good = threading.Thread(target=good_client, args=(target, stop, report, good_bound))
    good.start()
    deadline = time.monotonic() + seconds
    names = list(ACTIONS)
    weights = [ACTIONS[n][0] for n in names]

    def worker(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        while time.monotonic() < deadline and not stop.is_set():
            name = rng.choices(names, weights)[0]
            if name == "connection_burst" and k != 0:
                continue  # one burst at a time, or bursts would refuse each other
            report.actions[name] += 1
            try:
                ACTIONS[name][1](target, rng, report)
            except OSError as e:
                if getattr(e, "errno", None) == 11 and name == "connection_burst":
                    continue
                report.findings.append(f"{name}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    good.join()
    return report


# ---------------------------------------------------------- a daemon of its own


@contextlib.contextmanager
def own_daemon(handshake: float, idle: float, max_connections: int,
               max_frame: int) -> Iterator[tuple[Target, Path]]:
    """Start ``sandboxd serve`` with short timeouts in a temporary directory (root); the
    directory, log included, is kept if ``FUZZ_KEEP`` is set."""
    d = tempfile.mkdtemp(prefix="sandboxd-fuzz-")
    try:
        daemon = Daemon(Path(d), instance=f"fuzz-{os.getpid()}", pool_size=2,
                        pool_profiles=["bash"], handshake_timeout=handshake, idle_timeout=idle,
                        max_connections=max_connections, max_frame=max_frame).start(wait=60)
        try:
            yield Target(daemon.socket, handshake, idle, max_connections, max_frame,
                         daemon.pid), daemon.log
        finally:
            daemon.stop(timeout=60)
    finally:
        if not os.environ.get("FUZZ_KEEP"):
            shutil.rmtree(d, ignore_errors=True)


def log_problems(text: str) -> list[str]:
    """Lines of a daemon log that mean a bug: errors and tracebacks."""
    return [line for line in text.splitlines()
            if "level=error" in line or "Traceback" in line]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--socket", help="fuzz a daemon already listening here")
    ap.add_argument("--pid", type=int, help="that daemon's pid, for memory readings")
    ap.add_argument("--handshake-timeout", type=float, default=1.0)
    ap.add_argument("--idle-timeout", type=float, default=1.0)
    ap.add_argument("--max-connections", type=int, default=32)
    ap.add_argument("--max-frame", type=int, default=1 << 20)
    a = ap.parse_args(argv)
    print(f"seed {a.seed}")
    if a.socket:
        target = Target(a.socket, a.handshake_timeout, a.idle_timeout, a.max_connections,
                        a.max_frame, a.pid)
        report = run(target, a.seconds, a.seed, a.workers)
        problems: list[str] = []
    else:
        with own_daemon(a.handshake_timeout, a.idle_timeout, a.max_connections,
                        a.max_frame) as (target, log):
            report = run(target, a.seconds, a.seed, a.workers)
            time.sleep(a.idle_timeout + 1)
            assert target.pid is not None
            report.rss_kib = (report.rss_kib[0], rss_kib(target.pid))
            report.fds = (report.fds[0], fd_count(target.pid))
            problems = log_problems(log.read_text())
    if target.pid is not None and not report.rss_kib[1]:
        report.rss_kib = (report.rss_kib[0], rss_kib(target.pid))
        report.fds = (report.fds[0], fd_count(target.pid))
    print(report.summary())
    for f in report.findings + problems:
        print("FINDING", f)
    return 1 if report.findings or problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
