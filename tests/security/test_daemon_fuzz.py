"""The running daemon against hostile clients: malformed, truncated, oversized and out-of-order
frames, slow clients, too many connections, huge submissions; then a bounded random run
of fuzz/fuzz_daemon.py while a good client keeps working.

The module's daemon has short timeouts (1 s to say hello, 1 s of idleness or of
a message left half sent), 16 connections at most and 1 MiB frames, so that
every rule is reached in seconds; its HTTP front door likewise (1 s for a body
or an idle connection, 2 s for an unread send, 16 requests at once, 1 MiB
bodies). The HTTP tests at the end check what the fuzzer found there, and run
``fuzz_daemon.run_http``. Three of the rules here were broken until
the fuzzer found them (see the docstrings of the tests that name a fix).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from attacks import AttackDaemon, MiB

import sandboxd_protocol as proto
from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

MARGIN = 3.0  # on top of a timeout, on a shared machine


def _load_fuzzer() -> Any:
    path = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_daemon.py"
    spec = importlib.util.spec_from_file_location("fuzz_daemon", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fz = _load_fuzzer()

# Its HTTP front door too (fz.HTTP_CONFIG): 1 s timeouts, 16 requests at once, 1 MiB bodies.
DAEMON_CONFIG = {"handshake_timeout": 1.0, "idle_timeout": 1.0, "max_connections": 16,
                 "max_frame": 1 * MiB, "pool_size": 2, "pool_profiles": ["bash"],
                 **fz.HTTP_CONFIG}


def target(ad: AttackDaemon) -> Any:
    return fz.Target(ad.daemon.socket, 1.0, 1.0, 16, 1 * MiB, ad.pid)


def answers(ad: AttackDaemon, data: bytes, hello: bool = True, within: float = MARGIN,
            half_close: bool = True) -> tuple[list[dict[str, Any]], bool]:
    """Send ``data`` (after a hello), and read until the daemon closes or ``within``."""
    c = fz.Conn(target(ad))
    try:
        if hello:
            assert c.hello().get("type") == "welcome"
        c.send(data)
        if half_close:
            c.sock.shutdown(socket.SHUT_WR)
        got = list(c.frames(time.monotonic() + within))
        return got, c.closed_by_peer
    finally:
        c.close()


def codes(got: list[dict[str, Any]]) -> list[str]:
    return [m.get("code", "?") for m in got if m.get("type") == "error"]


def serves(ad: AttackDaemon) -> None:
    step = ad.run("bash", {"main.sh": b"echo fine"})
    assert step.stdout == b"fine\n", step


def only_us(ad: AttackDaemon, timeout: float = 5.0) -> None:
    """Until the daemon counts no connection but the one asking (which may itself be
    refused busy while the daemon has not yet seen the others hang up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            n = ad.daemon.stats().connections
        except ConnectionError:  # server_busy instead of a welcome
            n = -1
        if n == 1:
            return
        assert time.monotonic() < deadline, f"{n - 1} connections still held"
        time.sleep(0.05)


# ------------------------------------------------------------------ bad frames

BAD_FRAMES = {
    "random bytes": os.urandom(3000),
    "random body": fz.frame(os.urandom(200)),
    "not a map": fz.frame(b"\x93\x01\x02\x03"),
    "empty frame": fz.HEADER.pack(0),
    "unused msgpack byte": fz.frame(b"\xc1"),
    "map key not a string": fz.frame(b"\x81\x01\x02"),
    "unknown type": fz.packed({"type": "no_such_type"}),
    "missing field": fz.packed({"type": "submit", "profile": "bash"}),
    "wrong field type": fz.packed({"type": "submit", "id": 5, "profile": "bash"}),
    "bad path": fz.packed({"type": "submit", "id": "a", "profile": "bash",
                           "files": {"../etc/passwd": b"x"}}),
    "nan limit": fz.packed({"type": "submit", "id": "a", "profile": "bash",
                            "limits": {"cpu_time": float("nan")}}),
    "truncated submit": fz.packed(fz.valid_submission(random.Random(1), "cut"))[:40],
    "truncated header": b"\x00\x00",
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_frames_get_one_protocol_error_and_a_close(attack_daemon: AttackDaemon,
                                                       case: str) -> None:
    got, closed = answers(attack_daemon, BAD_FRAMES[case])
    assert closed, f"{case}: the connection stayed open"
    assert len(codes(got)) == 1 and codes(got)[0] in proto.PROTOCOL_ERROR_CODES, (case, got)
    serves(attack_daemon)


def test_oversized_frame_is_refused_before_its_body(attack_daemon: AttackDaemon) -> None:
    """Only the 4-byte prefix is read: the refusal comes at once, with 1 GiB unsent."""
    t = time.monotonic()
    got, closed = answers(attack_daemon, fz.HEADER.pack(1 << 30) + b"\x81", half_close=False)
    assert closed and codes(got) == ["frame_too_large"], got
    assert time.monotonic() - t < 2.0


@pytest.mark.parametrize("event", fz.OUT_OF_ORDER_AFTER_HELLO + fz.OUT_OF_ORDER_BEFORE_HELLO,
                         ids=lambda e: type(e).__name__)
def test_valid_frames_out_of_order(attack_daemon: AttackDaemon, event: proto.Event) -> None:
    """A message the client may not send now is a protocol error that ends the connection,
    except stdin, stdin_end and cancel about a job not in flight, which the protocol
    drops in silence (they may have crossed the job's result on the wire, PROTOCOL 6.4)."""
    before = event in fz.OUT_OF_ORDER_BEFORE_HELLO
    got, closed = answers(attack_daemon, fz.packed(fz.wire(event)), hello=not before,
                          within=1.0 + MARGIN)
    assert closed
    if isinstance(event, proto.StdinChunk | proto.EndOfStdin | proto.Cancellation):
        assert codes(got) in ([], ["timeout"], ["unknown_job"]), got
    else:
        assert codes(got) and codes(got)[0] in ("unexpected_message", "unknown_job"), got


# ---------------------------------------------------------------- slow clients


def _silent(c: Any) -> None:
    pass


def _trickle_hello(c: Any) -> None:
    for b in fz.HELLO[:-1]:  # one byte every 0.3 s: each byte in time, the whole too late
        if not c.send(bytes([b])):
            return
        time.sleep(0.3)


def _silent_after_job(c: Any) -> None:
    c.hello()
    c.send(fz.packed(fz.wire(proto.JobSubmission(id="a", profile="bash",
                                                 files={"main.sh": b"echo a"}))))


def _half_message(c: Any) -> None:
    c.hello()
    c.send(fz.packed(fz.wire(proto.Ping(nonce=1)))[:5])


def _half_message_job_in_flight(c: Any) -> None:
    c.hello()
    c.send(fz.packed(fz.wire(proto.JobSubmission(id="a", profile="bash",
                                                 files={"main.sh": b"sleep 0.5"}))))
    c.send(fz.packed(fz.wire(proto.Ping(nonce=1)))[:5])


def _never_reads_a_result(c: Any) -> None:
    c.hello()
    c.send(fz.packed(fz.wire(proto.JobSubmission(
        id="big", profile="bash", files={"main.sh": b"head -c 900000 /dev/zero"}))))


def _never_reads_answers(c: Any) -> None:
    c.hello()
    c.sock.setblocking(False)
    req = fz.packed(fz.wire(proto.StatsRequest()))
    try:
        for _ in range(100_000):
            c.sock.send(req)
    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
        pass
    c.sock.setblocking(True)


SLOW = {
    "no hello": (_silent, 1.0),
    "hello trickled in": (_trickle_hello, 1.0),
    "silent after a job": (_silent_after_job, 1.0),
    "half a message": (_half_message, 1.0),
    "half a message, job in flight": (_half_message_job_in_flight, 1.0),
    "never reads a result": (_never_reads_a_result, 2.0),
    "never reads answers": (_never_reads_answers, 2.0),
}


@pytest.mark.parametrize("case", sorted(SLOW))
def test_slow_clients_are_dropped_after_the_timeouts(attack_daemon: AttackDaemon,
                                                     case: str) -> None:
    """Before the fix in sandboxd/front/msgpack_api.py (Session._receive, send), the last five held
    their connection, and a finished job's container, for ever: the idle clock did not
    start when the last job ended during a receive, a half-sent message counted as a job
    wait, and sending had no bound (results were sent shielded)."""
    behave, timeout = SLOW[case]
    c = fz.Conn(target(attack_daemon))
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        t = time.monotonic()
        behave(c)
        if case.startswith("never reads"):
            time.sleep(timeout + 1.5)  # the daemon gives up on us meanwhile
        list(c.frames(time.monotonic() + timeout + MARGIN))
        assert c.closed_by_peer, f"{case}: still connected after {time.monotonic() - t:.1f} s"
    finally:
        c.close()
    only_us(attack_daemon)
    serves(attack_daemon)


def test_connections_past_the_limit_are_answered_busy(attack_daemon: AttackDaemon) -> None:
    held = [fz.Conn(target(attack_daemon)) for _ in range(16)]
    try:
        for c in held:
            assert c.hello().get("type") == "welcome"
        extra = [fz.Conn(target(attack_daemon)) for _ in range(4)]
        for c in extra:
            got = list(c.frames(time.monotonic() + MARGIN))
            assert codes(got) == ["server_busy"] and c.closed_by_peer, got
            c.close()
    finally:
        for c in held:
            c.close()
    only_us(attack_daemon)


def test_unfinished_frames_of_many_clients_share_a_budget(attack_daemon: AttackDaemon) -> None:
    """Fifteen clients each start a frame of almost max_frame (1 MiB here) and stop: what
    the daemon holds for them together stays within a few frames' worth (the budget,
    max_buffered; before it, memory grew with max_connections x max_frame: 16 GiB by
    default)."""
    start = attack_daemon.rss_kib()
    held = []
    try:
        for _ in range(15):
            c = fz.Conn(target(attack_daemon))
            c.hello()
            c.send(fz.HEADER.pack(MiB - 64) + os.urandom(MiB - 4096))
            held.append(c)
        time.sleep(0.3)
        grown = attack_daemon.rss_kib() - start
    finally:
        for c in held:
            c.close()
    only_us(attack_daemon)
    assert grown <= 4 * 1024 + 2048, f"{grown} KiB held for 15 unfinished 1 MiB frames"


# ----------------------------------------------------------- huge submissions


def _submit(files: dict[str, bytes]) -> bytes:
    return fz.packed({"type": "submit", "id": "f", "profile": "bash", "files": files,
                      "argv": ["/bin/sh", "-c", "find . -type f | wc -l"]})


def test_thousands_of_files_and_huge_names(attack_daemon: AttackDaemon) -> None:
    """Up to the protocol's caps a job runs (1000 files, a 255-byte name, a 255-byte path
    128 directories deep); one past any cap is refused with a clear invalid_field."""
    many = {f"f{i}": b"" for i in range(1000)}
    long_name = "n" * 255
    deep = "/".join(["d"] * 128)
    for files, count in ((many, 1000), ({long_name: b"x"}, 1), ({deep: b"x"}, 1)):
        c = fz.Conn(target(attack_daemon))
        try:
            c.hello()
            c.send(_submit(files))
            got = [m for m in c.frames(time.monotonic() + 30)
                   if m.get("type") in ("result", "error")][:1]
        finally:
            c.close()
        assert got and got[0]["type"] == "result", got
        assert got[0]["steps"][0]["stdout"] == f"{count}\n".encode(), got
    for files, what in (({**many, "one-more": b""}, "files"), ({"n" * 256: b"x"}, "255"),
                        ({"/".join(["d"] * 129): b"x"}, "255")):
        got, closed = answers(attack_daemon, _submit(files))
        assert closed and codes(got) == ["invalid_field"], got
        assert what in got[0]["message"], got


def test_a_result_larger_than_a_frame_arrives_cut_to_fit(attack_daemon: AttackDaemon) -> None:
    """Fixed in sandboxd/front/msgpack_api.py (_fit): a job may ask for more output than a frame
    carries; its result used to fail to encode and the exception killed the daemon (with
    the default configuration too: 64 MiB frames, output limits up to 1 GiB)."""
    res = attack_daemon.job("bash", {"main.sh": b"head -c 3000000 /dev/zero; "
                                                b"head -c 3000000 /dev/zero >&2"},
                            limits=proto.JobLimits(output=8 * MiB))
    (step,) = res.steps
    assert step.verdict == "ok" and step.stdout_truncated and step.stderr_truncated, step
    assert 0 < len(step.stdout) + len(step.stderr) < 1 * MiB
    serves(attack_daemon)


def test_clients_hanging_up_during_cold_starts_do_not_break_the_daemon(
        tmp_path: Path) -> None:
    """Fixed in sandboxd/zygote.py (ZygoteClient.spawn): with no warm container, a job
    waits for the zygote to clone one; a client that hung up then cancelled the request
    mid-exchange, which broke the zygote client for good: every later job of every
    client failed with internal_error."""
    with Daemon(tmp_path, pool_size=0) as d:
        for i in range(30):
            c = d.connect()
            c.submit(f"x{i}", files={"main.sh": b"echo x"})
            time.sleep(0.002 * (i % 8))
            c.close()
        r = d.connect().run("after", files={"main.sh": b"echo after"})
        assert r.steps[0].stdout == b"after\n", r
        assert "zygote" not in d.log.read_text()


# -------------------------------------------------------------- random fuzzing


def own_fds(ad: AttackDaemon) -> int:
    """The daemon's descriptors, less the cgroup counter files each job cgroup keeps open
    (their number follows the peak concurrency, not the jobs run): fz.fd_count."""
    return fz.fd_count(ad.pid)


# What one waiting container holds in the daemon: its init's pidfd and control socket,
# and a warm runtime's stdio (two pipes and the stdin memfd), with one to spare.
FDS_PER_POOLED = 6


def fds_allowed(ad: AttackDaemon, fds_start: int, pooled_start: int) -> int:
    """The descriptors the daemon may hold after a round: as many as before (two to
    spare), and those of the pools the round's jobs started (a Judge0 body's random
    language_id can start any profile's pool); a leak per job (thousands) stays far
    above it."""
    return fds_start + 2 + FDS_PER_POOLED * max(0, pooled(ad) - pooled_start)


def pooled(ad: AttackDaemon) -> int:
    """Waiting containers the daemon's pools keep (their targets)."""
    return sum(p.target for p in ad.daemon.stats().pools)


def test_random_fuzzing_keeps_the_daemon_serving(attack_daemon: AttackDaemon) -> None:
    """Two rounds of fuzz_daemon.run (hostile clients on 4 threads, a good client
    throughout): no finding, no error in the daemon's log, descriptors back where they
    were (a leak of two per hung-up job was fixed in sandboxd/container.py), memory
    bounded."""
    seed = int(os.environ.get("FUZZ_SEED", "0")) or int.from_bytes(os.urandom(3), "big")
    log_start = attack_daemon.daemon.log.stat().st_size
    start = attack_daemon.rss_kib()
    fds_start = own_fds(attack_daemon)
    pooled_start = pooled(attack_daemon)
    reports = []
    for round_ in range(2):
        report = fz.run(target(attack_daemon), seconds=8, seed=seed + round_)
        attack_daemon.wait_idle()
        report.rss_kib = (report.rss_kib[0], attack_daemon.rss_kib())
        report.fds = (report.fds[0], fz.fd_count(attack_daemon.pid))
        reports.append(report)
        assert own_fds(attack_daemon) <= fds_allowed(attack_daemon, fds_start, pooled_start), (
            f"seed {seed + round_}: descriptors {fds_start} -> {own_fds(attack_daemon)}, "
            f"pooled containers {pooled_start} -> {pooled(attack_daemon)}")
        assert not report.findings, (f"seed {seed + round_}", report.findings)
        assert report.good_jobs > 0
    log = attack_daemon.daemon.log.read_text()[log_start:]
    assert not fz.log_problems(log), fz.log_problems(log)[:5]
    first, second = reports[0].rss_kib[1], reports[1].rss_kib[1]
    print(f"\nseed {seed}: " + "\n".join(r.summary() for r in reports))
    # glibc keeps some freed buffers (a result of a few MiB, a 1 MiB frame) resident:
    # measured here, RSS moves between +0 and +20 MiB from round to round, and back
    # (14 rounds in a row: 32-50 MiB, ending at 34). A leak would add up instead.
    assert max(first, second) - start < 48 * 1024, f"RSS {start} -> {first} -> {second} KiB"


# ====================================================================== HTTP


def http_target(ad: AttackDaemon) -> Any:
    return fz.http_target(ad.daemon)


def http_answer(ad: AttackDaemon, method: str, path: str, body: bytes | None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request on a connection of its own: the status and the JSON answered."""
    c = fz.HttpConn(http_target(ad))
    try:
        c.send(fz.request_bytes(method, path, body, headers))
        got = c.response(time.monotonic() + 30)
    finally:
        c.close()
    assert got is not None, f"{method} {path}: no answer"
    status, _headers, data = got
    return status, json.loads(data) if data else None


def log_clean(ad: AttackDaemon, start: int) -> None:
    log = ad.daemon.log.read_text()[start:]
    assert not fz.log_problems(log), fz.log_problems(log)[:5]


BAD_JSON = {
    "nested 5000 deep": b"[" * 5000 + b"]" * 5000,
    "a 5000-digit number": b'{"profile": "bash", "x": ' + b"1" * 5000 + b"}",
    "NaN": b'{"profile": "bash", "limits": {"cpu_time": NaN}}',
    "Infinity": b'{"language": "bash", "version": "*", "run_timeout": Infinity}',
    "a lone surrogate escaped": b'{"profile": "bash", "files": {"main.sh": "echo \\udfff"}}',
    "a lone surrogate's bytes": b'{"source_code": "\xed\xa0\x80", "language_id": 46}',
    "not UTF-8": b'{"profile": "\xff"}',
}
JSON_DOORS = {"v1": "/v1/jobs", "judge0": "/submissions?wait=true", "piston": "/api/v2/execute"}


@pytest.mark.parametrize("door", sorted(JSON_DOORS))
@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_http_bodies_that_are_not_json_are_400(attack_daemon: AttackDaemon, door: str,
                                               case: str) -> None:
    """Fixed in sandboxd/front/http/_common.py (parse_json): json.loads raised
    RecursionError and ValueError besides JSONDecodeError (500 internal_error, and an
    error in the daemon's log), and let NaN and lone surrogates through to validators
    that then raised."""
    start = attack_daemon.daemon.log.stat().st_size
    status, answer = http_answer(attack_daemon, "POST", JSON_DOORS[door], BAD_JSON[case])
    assert status == 400, (status, answer)
    assert "internal_error" not in json.dumps(answer)
    log_clean(attack_daemon, start)


@pytest.mark.parametrize("value", ["NaN", "inf", "-Infinity", 1e308 * 10])
def test_judge0_limits_that_are_no_number_are_422(attack_daemon: AttackDaemon,
                                                  value: Any) -> None:
    """Fixed in judge0.py (_number): "NaN" as a limit passed Rails' numericality check
    as Python reads it, and int(NaN) was a 500."""
    start = attack_daemon.daemon.log.stat().st_size
    body = fz.dumps({"source_code": "echo hi", "language_id": 46,
                     "memory_limit": fz.Raw("1e999") if value == 1e308 * 10 else value})
    status, answer = http_answer(attack_daemon, "POST", "/submissions?wait=true",
                                 body.encode())
    assert status == 422 and "memory_limit" in answer, (status, answer)
    log_clean(attack_daemon, start)


@pytest.mark.parametrize("limit", [{"run_memory_limit": 3}, {"run_timeout": 0.001},
                                   {"run_cpu_time": 0.0001}])
def test_piston_limits_out_of_sandboxd_range_are_400(attack_daemon: AttackDaemon,
                                                     limit: dict[str, float]) -> None:
    """Fixed in piston.py (Piston.execute): a limit Piston's checks let through but
    sandboxd's range refuses (3 bytes of memory) raised LimitError: a 500."""
    start = attack_daemon.daemon.log.stat().st_size
    body = {"language": "bash", "version": "*", "files": [{"content": "echo hi"}], **limit}
    status, answer = http_answer(attack_daemon, "POST", "/api/v2/execute",
                                 json.dumps(body).encode())
    assert status in (200, 400), (status, answer)
    assert status == 200 or "message" in answer, answer
    log_clean(attack_daemon, start)


def test_a_request_refused_busy_before_its_body_is_cut_off(attack_daemon: AttackDaemon) -> None:
    """Fixed in _app.py (_deny): a request refused 503 (too many at once), 401 or 429
    before its body was read kept its connection open for ever when the body never
    came: no timeout covers a request whose answer has been sent."""
    t = http_target(attack_daemon)
    head = (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{")
    held = [fz.HttpConn(t) for _ in range(t.max_connections)]
    extra = fz.HttpConn(t)
    try:
        for c in held:
            c.send(head)
        time.sleep(0.2)  # the daemon has taken them all in
        extra.send(head)
        got = extra.response(time.monotonic() + MARGIN)
        assert got is not None and got[0] == 503, got
        assert json.loads(got[2])["error"] == "server_busy"
        deadline = time.monotonic() + 2.0 + MARGIN  # the refusal reads on for 2 s at most
        while extra.held_by_daemon() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not extra.held_by_daemon(), "the refused connection is still held"
    finally:
        for c in [*held, extra]:
            c.close()
    # The daemon serves again once it has seen the held connections close (asynchronously).
    deadline = time.monotonic() + 5 + MARGIN
    while (status := http_answer(attack_daemon, "GET", "/v1/health", None)[0]) != 200 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200


def test_a_piston_websocket_ends_after_its_close(attack_daemon: AttackDaemon) -> None:
    """Fixed in piston.py (_Session._end_after_close): after "Job Completed" the session
    waited for its client to say something, for ever; now the client has 2 s to answer
    the close. The init comes as a binary message, which crashed the session before
    (its text is None)."""
    start = attack_daemon.daemon.log.stat().st_size
    c = fz.ws_open(http_target(attack_daemon), "/api/v2/connect")
    assert c is not None
    try:
        c.send(fz.ws_frame(fz.dumps({"type": "init", "language": "bash", "version": "*",
                                     "files": [{"content": "echo hi"}]}).encode(), 2))
        deadline = time.monotonic() + 10 + MARGIN
        while b"Job Completed" not in c.buf and c._fill(deadline):
            pass
        assert b'"stream": "stdout", "data": "hi\\n"' in c.buf, c.buf[:500]
        assert b"Job Completed" in c.buf, c.buf[:500]
        while c.held_by_daemon() and time.monotonic() < deadline:
            time.sleep(0.05)  # we never answer the close
        assert not c.held_by_daemon(), "the session still holds its connection"
    finally:
        c.close()
    log_clean(attack_daemon, start)


def test_an_oversized_websocket_message_then_a_binary_one_ends_only_its_connection(
        attack_daemon: AttackDaemon) -> None:
    """Fixed in _app.py (_ContainedTCPServer): in hypercorn 0.18 the rest of a text
    message over websocket_max_message_size stays in the connection's buffer, and a
    binary message after it raised TypeError out of hypercorn's connection handler,
    which ended every connection and the daemon (exit 1)."""
    t = http_target(attack_daemon)
    start = attack_daemon.daemon.log.stat().st_size
    c = fz.ws_open(t, "/v1/jobs/stream")
    assert c is not None
    try:
        c.send(fz.ws_frame(b"x" * (t.max_body + 1)))
        time.sleep(0.3)
        c.send(fz.ws_frame(b"abc", 2))
        assert c.wait_closed(time.monotonic() + MARGIN)
    finally:
        c.close()
    assert attack_daemon.daemon.proc is not None and attack_daemon.daemon.proc.poll() is None
    assert http_answer(attack_daemon, "GET", "/v1/health", None)[0] == 200
    serves(attack_daemon)
    log_clean(attack_daemon, start)


def test_random_http_fuzzing_keeps_the_daemon_serving(attack_daemon: AttackDaemon) -> None:
    """Two rounds of fuzz_daemon.run_http (hostile HTTP and WebSocket clients on 4
    threads; a good HTTP client and a good msgpack client throughout): no finding (no
    500, no internal_error, every stalled client cut off), no error or traceback in the
    daemon's log, descriptors back where they were, memory bounded."""
    seed = int(os.environ.get("FUZZ_SEED", "0")) or int.from_bytes(os.urandom(3), "big")
    t = http_target(attack_daemon)
    log_start = attack_daemon.daemon.log.stat().st_size
    start = attack_daemon.rss_kib()
    fds_start = own_fds(attack_daemon)
    pooled_start = pooled(attack_daemon)
    reports = []
    for round_ in range(2):
        report = fz.run_http(t, seconds=8, seed=seed + round_)
        attack_daemon.wait_idle()
        time.sleep(t.keepalive_timeout + 0.5)  # the good client's idle connection goes
        report.rss_kib = (report.rss_kib[0], attack_daemon.rss_kib())
        report.fds = (report.fds[0], fz.fd_count(attack_daemon.pid))
        reports.append(report)
        assert not report.findings, (f"seed {seed + round_}", report.findings[:10])
        assert report.good_jobs > 0
        assert own_fds(attack_daemon) <= fds_allowed(attack_daemon, fds_start, pooled_start), (
            f"seed {seed + round_}: descriptors {fds_start} -> {own_fds(attack_daemon)}, "
            f"pooled containers {pooled_start} -> {pooled(attack_daemon)}")
    log_clean(attack_daemon, log_start)
    print(f"\nseed {seed}: " + "\n".join(r.summary() for r in reports))
    # A leak grows with the traffic, so it shows at the end of the second round. What the
    # allocator keeps after a burst (glibc raises its trim threshold after a large free)
    # is given back by later traffic: CI once read 47 -> 133 -> 50 MiB. So the end is held
    # to the leak bound, and a round's peak only to a looser one.
    first, second = reports[0].rss_kib[1], reports[1].rss_kib[1]
    assert second - start < 64 * 1024, f"RSS {start} -> {first} -> {second} KiB: kept"
    assert max(first, second) - start < 192 * 1024, f"RSS {start} -> {first} -> {second} KiB"


# ------------------------------------------------------------- a full queue


def test_a_full_queue_is_503_for_v1_and_judge0(tmp_path: Path) -> None:
    """concurrency 1 and queue_length 1: with one long job running and one waiting, a
    third is refused at once: 503 server_busy on /v1, Judge0's 503 "queue is full", and
    Piston's 429 (docs/http.md); the jobs in flight are untouched and the daemon then
    serves again."""
    with Daemon(tmp_path, pool_size=1, pool_profiles=["bash"], concurrency=1,
                queue_length=1, **fz.HTTP_CONFIG) as d:
        host, port = d.http_address.rsplit(":", 1)
        long_job = {"profile": "bash", "files": {"main.sh": "sleep 30"},
                    "limits": {"wall_time": 60}}
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as c:
            ids = [c.post("/v1/jobs?wait=false", json=long_job).json()["id"] for _ in range(2)]
            try:
                r = c.post("/v1/jobs", json={"profile": "bash", "files": {"main.sh": "echo"}})
                assert r.status_code == 503 and r.json()["error"] == "server_busy", r.text
                assert r.headers["retry-after"]
                r = c.post("/submissions?wait=true",
                           json={"source_code": "echo hi", "language_id": 46})
                assert r.status_code == 503 and r.json() == {"error": "queue is full"}, r.text
                r = c.post("/api/v2/execute", json={"language": "bash", "version": "*",
                                                    "files": [{"content": "echo hi"}]})
                assert r.status_code == 429, r.text
                assert [c.get(f"/v1/jobs/{i}").json()["state"] for i in ids] == \
                    ["running", "queued"]
            finally:
                for i in ids:
                    c.delete(f"/v1/jobs/{i}")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                r = c.post("/v1/jobs", json={"profile": "bash", "files": {"main.sh": "echo ok"}})
                if r.status_code == 200:
                    break
                time.sleep(0.1)
            assert r.status_code == 200 and r.json()["steps"][0]["stdout"] == "ok\n", r.text
        while time.monotonic() < deadline:  # the cancelled jobs' containers are gone
            st = d.stats()
            if not st.jobs_running and not st.jobs_queued and all(
                    p.warm >= p.target for p in st.pools):
                break
            time.sleep(0.05)
