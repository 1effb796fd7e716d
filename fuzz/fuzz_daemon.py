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
import http.client
import json
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
        # Refused before its frame was read: another thread's connection burst held every
        # connection (server_busy, seen in CI), as act_out_of_order allows too.
        refused = [m.get("code") for m in got] == ["server_busy"]
        if not refused and not any(m.get("code") == "frame_too_large" for m in got):
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


# ======================================================================== HTTP

# The HTTP front door (docs/http.md), fuzzed the same way: hostile clients on threads,
# a good client throughout. Every answer must be a status the front door documents,
# never 500 (``internal_error``); a client that stalls is cut off after the listener's
# timeouts; a connection past ``http_max_connections`` is answered 503.

HTTP_STATUSES = frozenset({200, 201, 202, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415,
                           422, 429, 503})


@dataclass(frozen=True)
class HttpTarget:
    """The daemon's HTTP listener (open on loopback: no token), and its configured bounds."""

    host: str
    port: int
    request_timeout: float
    keepalive_timeout: float
    send_timeout: float
    max_connections: int
    max_body: int
    pid: int | None = None
    socket: str | None = None  # its msgpack socket, for a good client there too


class Raw(str):
    """JSON text put into a document as it is (NaN, 1e999, a lone surrogate's escape)."""


def dumps(value: Any) -> str:
    """JSON text of ``value``, ``Raw`` parts verbatim: what a careless client may send."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


NASTY_JSON = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-400", "-0", "2147483648",
              "9223372036854775808", "1" * 5000, '"\\ud800"', '"a\\udfffb"', '"\\u0000"',
              '"' + "x" * 70000 + '"', "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000,
              '"é"', '""', "true", "null", "[]", "{}", "0.5", "-1", "0")


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value; often one that parsers or validators trip on."""
    roll = rng.random()
    if roll < 0.35:
        return Raw(rng.choice(NASTY_JSON))
    if roll < 0.7 or depth >= 3:
        return rng.choice((None, True, False, 0, 1, -1, 3.5, "", "x", "bash", "python", "*",
                           "main.sh", "../x", "/etc/passwd", "a" * 300, 71, 46, "71", "1e3"))
    if roll < 0.85:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(("profile", "files", "limits", "argv", "name", "content", "x", "",
                        "language_id", "source_code", "stdin", "version")):
            random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


# What a valid request of each API looks like: (method, path, body); the fuzzer mutates them.
def http_templates() -> list[tuple[str, str, Any]]:
    job = {"profile": "bash", "files": {"main.sh": "echo hi; cat"}, "stdin": "x",
           "limits": {"wall_time": 2, "cpu_time": 1, "memory": "64M"}, "env": {"A": "b"},
           "argv": ["/bin/bash", "main.sh"], "compare": "exact", "expected_output": "hi\nx"}
    tests = {"profile": "bash", "files": {"main.sh": "cat"}, "limits": {"wall_time": 2},
             "tests": [{"stdin": "1", "expected_output": "1"}, {"stdin": {"base64": "Mg=="}}]}
    sub = {"source_code": "echo hi", "language_id": 46, "stdin": "x", "expected_output": "hi",
           "cpu_time_limit": 1, "wall_time_limit": 2, "memory_limit": 128000,
           "number_of_runs": 1, "command_line_arguments": "a b", "max_file_size": 1024}
    execute = {"language": "bash", "version": "*", "files": [{"name": "main.sh",
                                                              "content": "echo hi"}],
               "stdin": "x", "args": ["a"], "run_timeout": 2000, "run_memory_limit": -1}
    return [("POST", "/v1/jobs", job), ("POST", "/v1/jobs", tests),
            ("POST", "/v1/jobs?wait=false", job),
            ("POST", "/submissions?wait=true", sub),
            ("POST", "/submissions?base64_encoded=true&wait=true",
             {**sub, "source_code": "ZWNobyBoaQ==", "stdin": "eA=="}),
            ("POST", "/submissions", sub),
            ("POST", "/submissions/batch", {"submissions": [sub, {**sub, "stdin": "y"}]}),
            ("POST", "/api/v2/execute", execute), ("POST", "/api/v2/piston/execute", execute)]


def mutate_json(rng: random.Random, body: Any) -> Any:
    """A valid body with fields dropped, retyped or added, or replaced whole."""
    if rng.random() < 0.1:
        return random_json(rng)
    body = json_copy(body)
    for _ in range(rng.randint(1, 3)):
        node = body
        while isinstance(node, dict | list) and node and rng.random() < 0.4:
            child = node[rng.choice(list(node))] if isinstance(node, dict) else rng.choice(node)
            if not isinstance(child, dict | list) or not child:
                break
            node = child
        if isinstance(node, list):
            if node and rng.random() < 0.5:
                node[rng.randrange(len(node))] = random_json(rng)
            else:
                node.append(random_json(rng))
            continue
        if not isinstance(node, dict):
            continue
        op = rng.choice(("drop", "set", "set", "add"))
        if op == "drop" and node:
            del node[rng.choice(list(node))]
        elif op == "set" and node:
            node[rng.choice(list(node))] = random_json(rng)
        else:
            node[rng.choice(("zz", "unknown", "files", "limits", "tests", "interactive"))] = \
                random_json(rng)
    return body


def json_copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: json_copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_copy(x) for x in v]
    return v


class HttpConn:
    """A raw TCP connection to the listener: sends any bytes, reads one response, or sees
    whether the daemon closed it."""

    def __init__(self, t: HttpTarget, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((t.host, t.port))
        self.buf = b""
        self.closed_by_peer = False

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.closed_by_peer = True
            return False

    def _fill(self, until: float) -> bool:
        left = until - time.monotonic()
        if left <= 0 or self.closed_by_peer:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed_by_peer = True
            return False
        self.buf += data
        return True

    def response(self, until: float) -> tuple[int, dict[str, str], bytes] | None:
        """The next response (status, headers, body), or ``None`` if none came in time or
        the daemon closed first."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(until):
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            return -1, {}, head
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0") or 0)
        while len(self.buf) < n:
            if not self._fill(until):
                break
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def wait_closed(self, until: float) -> bool:
        """Read (and drop) until the daemon closes; whether it did before ``until``."""
        while self._fill(until):
            self.buf = b""
        return self.closed_by_peer

    def held_by_daemon(self) -> bool:
        """Whether the daemon still holds its end of this connection (a descriptor of a
        socket with our addresses, per /proc/net/tcp), seen without reading from it.

        Not the state of our end: a daemon that closes a connection with data unsent
        to a client that reads nothing leaves it to the kernel (an orphan socket, inode
        0), whose end the client sees as open until the kernel gives up on it.
        """
        def hexaddr(addr: tuple[str, int]) -> str:
            return f"{socket.inet_aton(addr[0])[::-1].hex().upper()}:{addr[1]:04X}"

        ours, theirs = hexaddr(self.sock.getsockname()), hexaddr(self.sock.getpeername())
        with open("/proc/net/tcp") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 9 and fields[1] == theirs and fields[2] == ours:
                    return fields[9] != "0"
        return False

    def close(self) -> None:
        self.sock.close()


def request_bytes(method: str, path: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None, close: bool = True) -> bytes:
    hdrs = {"Host": "fuzz", **({"Content-Type": "application/json"} if body is not None
                               else {}), **(headers or {})}
    if body is not None and "Transfer-Encoding" not in hdrs:
        hdrs.setdefault("Content-Length", str(len(body)))
    if close:
        hdrs["Connection"] = "close"
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    return head.encode("latin-1") + b"\r\n" + (body or b"")


def check_answer(r: Report, what: str, got: tuple[int, dict[str, str], bytes] | None,
                 allowed: frozenset[int] = HTTP_STATUSES) -> int | None:
    """A finding unless the answer is a documented status (never 500) with, for an error
    of ours, a JSON body whose ``error`` is a protocol code other than internal_error."""
    if got is None:
        r.findings.append(f"http {what}: no answer")
        return None
    status, _headers, body = got
    r.error_codes[f"http {status}"] += 1
    if status not in allowed:
        r.findings.append(f"http {what}: status {status}: {body[:300]!r}")
    if b"internal_error" in body or b"Traceback" in body:
        r.findings.append(f"http {what}: {body[:300]!r}")
    return status


def http_exchange(t: HttpTarget, r: Report, what: str, data: bytes, within: float,
                  allowed: frozenset[int] = HTTP_STATUSES) -> int | None:
    """Send one request (``Connection: close``), check its answer and that the daemon then
    closes; returns the status."""
    c = HttpConn(t)
    try:
        c.send(data)
        until = time.monotonic() + within
        status = check_answer(r, what, c.response(until), allowed)
        if not c.wait_closed(until + MARGIN):
            r.findings.append(f"http {what}: still open after the answer")
        return status
    finally:
        c.close()


JOB_BOUND = 8 * 2.5  # a fuzzed job may run: at most a few of 2 s each


def act_http_bad_json(t: HttpTarget, rng: random.Random, r: Report) -> None:
    """Malformed JSON, or JSON a parser trips on (deep nesting, a 5000-digit number, NaN,
    lone surrogates), or bytes that are not UTF-8, to an endpoint that takes a body."""
    method, path, body = rng.choice(http_templates())
    roll = rng.random()
    if roll < 0.3:
        text = dumps(body).encode()
        data = text[:rng.randint(0, len(text) - 1)]
    elif roll < 0.5:
        data = os.urandom(rng.randint(1, 300))
    elif roll < 0.6:
        data = dumps(body).encode().replace(b'"', b"\xff\xfe", 1)
    else:
        data = dumps(random_json(rng)).encode()
    ctype = rng.choice(("application/json", "application/json", "text/plain",
                        "application/json; charset=utf-16", ""))
    http_exchange(t, r, f"bad json {path}", request_bytes(
        method, path, data, {"Content-Type": ctype} if ctype else {}),
        JOB_BOUND + t.request_timeout + MARGIN)


def act_http_mutated(t: HttpTarget, rng: random.Random, r: Report) -> None:
    """A valid request with fields dropped, retyped (to any JSON, nasty values included)
    or added: answered with a documented status, or run."""
    method, path, body = rng.choice(http_templates())
    data = dumps(mutate_json(rng, body)).encode()
    http_exchange(t, r, f"mutated {path}", request_bytes(method, path, data),
                  JOB_BOUND + t.request_timeout + MARGIN)


HTTP_PATHS = ("/v1/jobs/{x}", "/submissions/{x}", "/submissions/batch?tokens={x}",
              "/submissions/{x}?fields={x}&base64_encoded={x}", "/languages/{x}",
              "/api/v2/runtimes", "/v1/kill/{x}", "/v1/ps", "/v1/stats", "/v1/profiles",
              "/statuses", "/config_info", "/metrics", "/{x}", "/v1/jobs?wait={x}",
              "/api/v2/{x}")


def act_http_random_request(t: HttpTarget, rng: random.Random, r: Report) -> None:
    """Any method on any route (or none), with random path parameters and queries."""
    x = rng.choice(("1", "abc", "%00", "..%2F..%2Fetc", "%ff%fe", "x" * 3000, "-1",
                    "0" * 40, "9" * 400, "a,b,c," * 50, "%E2%82", "true"))
    path = rng.choice(HTTP_PATHS).replace("{x}", x)
    method = rng.choice(("GET", "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS",
                         "BREW"))
    body = dumps(random_json(rng)).encode() if method in ("POST", "PUT", "PATCH") else None
    status = http_exchange(t, r, f"{method} {path[:60]}", request_bytes(method, path, body),
                           JOB_BOUND + MARGIN)
    if method == "HEAD" and status is None:
        r.findings.pop()  # a HEAD answer has no body to read; its status line sufficed


def act_http_garbage(t: HttpTarget, rng: random.Random, r: Report) -> None:
    """Bytes that are not HTTP (or nearly): answered 400 by the listener, or closed."""
    c = HttpConn(t)
    try:
        data = rng.choice((os.urandom(rng.randint(1, 2000)),
                           b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                           b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
                           b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
                           b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n",
                           b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\n\r\n"))
        c.send(data)
        until = time.monotonic() + t.keepalive_timeout + t.request_timeout + MARGIN
        got = c.response(until)
        if got is not None:
            check_answer(r, "garbage", got)
        if not c.wait_closed(until):
            r.findings.append("http garbage: still open")
    finally:
        c.close()


def act_http_huge_body(t: HttpTarget, rng: random.Random, r: Report) -> None:
    """A body over http_max_body: declared (refused before it comes) or chunked (refused
    once past the cap): 413, then the connection closes; or, if we were still sending
    when the daemon stopped reading the rest (2 s after its answer), cut off (the
    kernel drops an answer not yet read when the reset comes)."""
    method, path, _ = rng.choice(http_templates())
    c = HttpConn(t)
    try:
        if rng.random() < 0.5:
            size = rng.choice((t.max_body + 1, 2**40))
            c.send(request_bytes(method, path, None, {"Content-Type": "application/json",
                                                     "Content-Length": str(size)}, close=False)
                   + b'{"x": "' + b"y" * 1000)
        else:
            c.send(request_bytes(method, path, None, {"Content-Type": "application/json",
                                                     "Transfer-Encoding": "chunked"},
                                 close=False))
            chunk = b"y" * (64 << 10)
            for _ in range(t.max_body // len(chunk) + 2):
                if not c.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n"):
                    break
        until = time.monotonic() + t.request_timeout + MARGIN
        got = c.response(until)
        if got is None and c.closed_by_peer:
            return  # cut off while we still sent: the answer was lost with the reset
        status = check_answer(r, "huge body", got, frozenset({413, 503}))
        if status is not None and not c.wait_closed(until + MARGIN):
            r.findings.append("http huge body: still open after 413")
    finally:
        c.close()


def act_http_slow(t: HttpTarget, rng: random.Random, r: Report) -> None:
    """Headers never finished (cut after http_keepalive_timeout), or a body never finished
    (408 after http_request_timeout), or nothing at all (cut after the keep-alive time)."""
    c = HttpConn(t)
    try:
        roll = rng.random()
        if roll < 0.4:
            c.send(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 1000\r\n\r\n" + b'{"profile": "ba')
            until = time.monotonic() + t.request_timeout + MARGIN
            check_answer(r, "slow body", c.response(until), frozenset({408, 503}))
            if not c.wait_closed(until + MARGIN):
                r.findings.append("http slow body: still open")
            return
        if roll < 0.7:
            c.send(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        if not c.wait_closed(time.monotonic() + t.keepalive_timeout + MARGIN):
            r.findings.append(f"http slow {'headers' if roll < 0.7 else 'silence'}: still open")
    finally:
        c.close()


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked frame, as a client sends it (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big") \
        if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return bytes([0x80 | opcode]) + size + mask + bytes(b ^ mask[i % 4]
                                                        for i, b in enumerate(payload))


def ws_open(t: HttpTarget, path: str, rcvbuf: int | None = None) -> HttpConn | None:
    """A WebSocket handshake on a raw connection; ``None`` if refused (503 when busy)."""
    c = HttpConn(t, rcvbuf)
    c.send(f"GET {path} HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
           .encode())
    got = c.response(time.monotonic() + MARGIN)
    if got is None or got[0] != 101:
        c.close()
        return None
    return c


WS_JOBS = {"/v1/jobs/stream": {"profile": "bash", "files": {"main.sh": "yes hello"},
                               "limits": {"wall_time": 30, "output": "1G"}},
           "/api/v2/connect": {"type": "init", "language": "bash", "version": "*",
                               "files": [{"content": "yes hello"}], "run_timeout": 30000}}


def act_ws_never_reads(t: HttpTarget, rng: random.Random, r: Report) -> None:
    """A WebSocket job that writes without end to a client that never reads: the job is
    cancelled and the connection cut, after http_send_timeout at most."""
    path = rng.choice(list(WS_JOBS))
    c = ws_open(t, path, rcvbuf=4096)
    if c is None:
        return
    try:
        c.send(ws_frame(dumps(WS_JOBS[path]).encode()))
        # The job's output fills the buffers within a second; then the daemon's bound on
        # unread output (v1) or on unacknowledged sends (both) lets the client go.
        deadline = time.monotonic() + 1 + t.send_timeout + t.request_timeout + MARGIN
        while c.held_by_daemon() and time.monotonic() < deadline:
            time.sleep(0.1)
        if c.held_by_daemon():
            r.findings.append(f"ws never reads {path}: still held by the daemon")
    finally:
        c.close()


def act_ws_random(t: HttpTarget, rng: random.Random, r: Report) -> None:
    """A WebSocket with random messages (mutated jobs, nasty JSON, binary, pings, a
    message over the cap), then it reads until the daemon closes."""
    path = rng.choice(list(WS_JOBS))
    c = ws_open(t, path)
    if c is None:
        return
    try:
        for _ in range(rng.randint(1, 4)):
            roll = rng.random()
            if roll < 0.4:
                payload = dumps(mutate_json(rng, WS_JOBS[path])).encode()
            elif roll < 0.7:
                payload = dumps(random_json(rng)).encode()
            elif roll < 0.8:
                payload = os.urandom(rng.randint(0, 200))
            elif roll < 0.9:
                payload = b"x" * (t.max_body + 1)
            else:
                payload = dumps({"stdin": "x", "eof": True, "type": "data", "stream": "stdin",
                                 "data": "x"}).encode()
            opcode = rng.choice((1, 1, 1, 2, 9))
            if not c.send(ws_frame(payload, opcode)):
                break
        if not c.wait_closed(time.monotonic() + 30 + t.request_timeout + MARGIN):
            r.findings.append(f"ws random {path}: still open")
        if b"internal_error" in c.buf:
            r.findings.append(f"ws random {path}: internal_error")
    finally:
        c.close()


def act_http_flood(t: HttpTarget, rng: random.Random, r: Report) -> None:
    """More requests at once than http_max_connections (each a body that never ends),
    and as many connections that say nothing: the excess requests are answered 503 at
    once, the others 408, the silent connections cut after the keep-alive time."""
    extra = 4
    held: list[HttpConn] = []
    silent: list[HttpConn] = []
    try:
        for _ in range(t.max_connections + extra):
            c = HttpConn(t)
            c.send(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 100\r\n\r\n{")
            held.append(c)
        for _ in range(t.max_connections):
            silent.append(HttpConn(t))
        until = time.monotonic() + t.request_timeout + MARGIN
        busy = 0
        for c in held:
            got = c.response(until)
            status = check_answer(r, "flood", got, frozenset({408, 429, 503}))
            busy += status in (429, 503)
        if busy < extra:
            r.findings.append(f"http flood: only {busy} of {len(held)} refused busy")
        for c in silent:
            if not c.wait_closed(time.monotonic() + t.keepalive_timeout + MARGIN):
                r.findings.append("http flood: a silent connection still open")
                break
    finally:
        for c in held + silent:
            c.close()


HTTP_ACTIONS: dict[str, tuple[float, Callable[[HttpTarget, random.Random, Report], None]]] = {
    "http_bad_json": (4, act_http_bad_json),
    "http_mutated": (6, act_http_mutated),
    "http_random_request": (3, act_http_random_request),
    "http_garbage": (2, act_http_garbage),
    "http_huge_body": (1, act_http_huge_body),
    "http_slow": (1, act_http_slow),
    "ws_never_reads": (0.5, act_ws_never_reads),
    "ws_random": (2, act_ws_random),
    "http_flood": (0.3, act_http_flood),
}


def good_http_client(t: HttpTarget, stop: threading.Event, r: Report, bound: float) -> None:
    """One keep-alive connection (a new one if the daemon closed it), one small job after
    another through ``POST /v1/jobs``, each checked; 503 and 429 (a flood holds every
    place) are retried, as their Retry-After says, within the bound."""
    conn = http.client.HTTPConnection(t.host, t.port, timeout=bound)
    n = 0
    try:
        while not stop.is_set():
            n += 1
            start = time.monotonic()
            body = json.dumps({"profile": "bash", "files": {"main.sh": f"echo good {n}"}})
            answer: Any = None
            while time.monotonic() - start < bound:
                try:
                    conn.request("POST", "/v1/jobs", body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    status, data = resp.status, resp.read()
                except (OSError, http.client.HTTPException):
                    conn.close()  # the keep-alive time passed, or a reset: a new connection
                    time.sleep(0.05)
                    continue
                if status in (429, 503):
                    time.sleep(0.1)
                    continue
                answer = (status, data)
                break
            took = time.monotonic() - start
            r.good_worst_latency = max(r.good_worst_latency, took)
            ok = answer is not None and answer[0] == 200 and \
                json.loads(answer[1])["steps"][0]["stdout"] == f"good {n}\n"
            if not ok:
                r.findings.append(f"good http client: job {n} answered {answer!r:.300} in "
                                  f"{took:.1f} s")
                return
            r.good_jobs += 1
    finally:
        conn.close()


def run_http(target: HttpTarget, seconds: float, seed: int, workers: int = 4,
             good_bound: float = 20.0) -> Report:
    """Hostile HTTP and WebSocket clients on ``workers`` threads for ``seconds``; a good
    HTTP client throughout, and a good msgpack client if the target names its socket."""
    report = Report()
    if target.pid is not None:
        report.rss_kib = (rss_kib(target.pid), 0)
        report.fds = (fd_count(target.pid), 0)
    stop = threading.Event()
    goods = [threading.Thread(target=good_http_client, args=(target, stop, report,
                                                             good_bound))]
    if target.socket:
        msgpack_target = Target(target.socket, 10.0, 300.0, 1 << 20, 1 << 20, target.pid)
        goods.append(threading.Thread(target=good_client, args=(msgpack_target, stop, report,
                                                                good_bound)))
    for g in goods:
        g.start()
    deadline = time.monotonic() + seconds
    names = list(HTTP_ACTIONS)
    weights = [HTTP_ACTIONS[n][0] for n in names]

    def worker(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        while time.monotonic() < deadline and not stop.is_set():
            name = rng.choices(names, weights)[0]
            if name == "http_flood" and k != 0:
                continue  # one flood at a time, or floods would refuse each other
            report.actions[name] += 1
            try:
                HTTP_ACTIONS[name][1](target, rng, report)
            except OSError as e:
                report.findings.append(f"{name}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    for g in goods:
        g.join()
    return report


# ---------------------------------------------------------- a daemon of its own


HTTP_CONFIG = {"http": "127.0.0.1:0", "http_loopback_open": True, "http_request_timeout": 1.0,
               "http_keepalive_timeout": 1.0, "http_send_timeout": 2.0,
               "http_max_connections": 16, "http_max_body": 1 << 20,
               "http_ws_buffer": 64 << 10}
"""The HTTP listener's configuration for fuzzing: short timeouts, few places, 1 MiB bodies
(``http_target`` reads them back)."""


def http_target(daemon: Daemon, with_socket: bool = True) -> HttpTarget:
    """The HTTP target of a daemon started with ``HTTP_CONFIG`` (or like it)."""
    host, port = daemon.http_address.rsplit(":", 1)
    c = daemon.config
    return HttpTarget(host, int(port), float(c["http_request_timeout"]),
                      float(c["http_keepalive_timeout"]), float(c["http_send_timeout"]),
                      int(c["http_max_connections"]), int(c["http_max_body"]), daemon.pid,
                      daemon.socket if with_socket else None)


@contextlib.contextmanager
def own_daemon(handshake: float, idle: float, max_connections: int,
               max_frame: int) -> Iterator[tuple[Target, HttpTarget, Path]]:
    """Start ``sandboxd serve`` with short timeouts, its HTTP listener on a loopback port
    too, in a temporary directory (root); the directory, log included, is kept if
    ``FUZZ_KEEP`` is set."""
    d = tempfile.mkdtemp(prefix="sandboxd-fuzz-")
    try:
        daemon = Daemon(Path(d), instance=f"fuzz-{os.getpid()}", pool_size=2,
                        pool_profiles=["bash"], handshake_timeout=handshake, idle_timeout=idle,
                        max_connections=max_connections, max_frame=max_frame,
                        **HTTP_CONFIG).start(wait=60)
        try:
            yield (Target(daemon.socket, handshake, idle, max_connections, max_frame,
                          daemon.pid), http_target(daemon), daemon.log)
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
    ap.add_argument("--http", action="store_true",
                    help="fuzz the HTTP front door (and WebSockets) instead of the socket")
    ap.add_argument("--http-address", help="with --http: a running daemon's HOST:PORT "
                    "(loopback, open: http_loopback_open), its bounds as below")
    ap.add_argument("--http-timeouts", default="30,5,60", help="its http_request_timeout, "
                    "http_keepalive_timeout, http_send_timeout (seconds)")
    ap.add_argument("--http-max-connections", type=int, default=256)
    ap.add_argument("--http-max-body", type=int, default=64 << 20)
    a = ap.parse_args(argv)
    print(f"seed {a.seed}")
    if a.socket or a.http_address:
        problems: list[str] = []
        if a.http_address:
            host, port = a.http_address.rsplit(":", 1)
            req, keep, send = (float(x) for x in a.http_timeouts.split(","))
            target = HttpTarget(host, int(port), req, keep, send, a.http_max_connections,
                                a.http_max_body, a.pid, a.socket)
            report = run_http(target, a.seconds, a.seed, a.workers)
        else:
            target = Target(a.socket, a.handshake_timeout, a.idle_timeout, a.max_connections,
                            a.max_frame, a.pid)
            report = run(target, a.seconds, a.seed, a.workers)
    else:
        with own_daemon(a.handshake_timeout, a.idle_timeout, a.max_connections,
                        a.max_frame) as (sock_target, web_target, log):
            target = web_target if a.http else sock_target
            report = (run_http(web_target, a.seconds, a.seed, a.workers) if a.http else
                      run(sock_target, a.seconds, a.seed, a.workers))
            time.sleep(max(a.idle_timeout, web_target.keepalive_timeout) + 1)
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
