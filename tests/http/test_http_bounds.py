"""The listener's rules on a daemon that needs tokens: auth, body size, requests at once and
per token, slow clients, a WebSocket client that never reads. Each gets its documented
answer or is cut off, and the daemon serves others meanwhile."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

import sandboxd_protocol as proto
from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

DAEMON_CONFIG = {
    "http_tokens": ["alpha", "beta", "gamma"],
    "http_loopback_open": False,
    "metrics_token": "metrics-secret",
    "http_max_body": 1 << 20,
    "http_request_timeout": 2.0,
    "http_keepalive_timeout": 1.0,
    "http_token_concurrency": 3,
    "http_max_connections": 4,
    "http_ws_buffer": 64 << 10,
    "http_send_timeout": 2.0,
}
SLEEP = {"profile": "bash", "files": {"main.sh": "sleep 30"}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def alpha(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60, headers=bearer("alpha")) as c:
        yield c


@pytest.fixture
def beta(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60, headers=bearer("beta")) as c:
        yield c


def jobs_in_flight(d: Daemon) -> list[Any]:
    c = d.connect()
    try:
        c.send(proto.JobListRequest())
        ev = c.next()
        assert isinstance(ev, proto.JobList)
        return list(ev.jobs)
    finally:
        c.close()


def wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.05)


def kill_all(d: Daemon) -> None:
    c = d.connect()
    try:
        for j in jobs_in_flight(d):
            c.send(proto.KillRequest(job=j.id))
            c.next()
    finally:
        c.close()
    wait_for(lambda: not jobs_in_flight(d))


# ------------------------------------------------------------------ tokens


def test_a_token_is_required(client: httpx.Client):
    r = client.get("/v1/ps")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.post("/v1/jobs", json={"profile": "bash"}, headers=bearer("wrong"))
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_tokens_accepted_where_clients_put_them(client: httpx.Client):
    assert client.get("/v1/ps", headers=bearer("alpha")).status_code == 200
    assert client.get("/v1/ps", headers={"X-Auth-Token": "beta"}).status_code == 200
    assert client.get("/v1/ps", params={"X-Auth-Token": "gamma"}).status_code == 200
    assert client.get("/v1/ps", params={"token": "gamma"}).status_code == 401  # WebSockets only


def test_health_needs_no_token(client: httpx.Client):
    assert client.get("/v1/health").status_code == 200


def test_metrics_need_their_own_token(client: httpx.Client):
    assert client.get("/metrics", headers=bearer("alpha")).status_code == 401
    r = client.get("/metrics", headers=bearer("metrics-secret"))
    assert r.status_code == 200 and "sandboxd_jobs_total" in r.text


def test_websocket_token_in_the_query(http_daemon: Daemon):
    url = f"ws://{http_daemon.http_address}/v1/jobs/stream"
    with pytest.raises(Exception, match="401"):
        connect(url, open_timeout=30)
    with connect(url + "?token=alpha", open_timeout=30) as c:
        c.send(json.dumps({"profile": "bash", "files": {"main.sh": "echo ok"}}))
        assert json.loads(c.recv(timeout=60))["type"] == "accepted"


# ------------------------------------------------------------------ bodies


def test_a_body_over_the_cap_is_413_declared_or_not(alpha: httpx.Client):
    big = b"x" * ((1 << 20) + 1)
    r = alpha.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "frame_too_large"

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to refuse early
        for _ in range(20):
            yield b"y" * (64 << 10)

    r = alpha.post("/v1/jobs", content=chunks())
    assert r.status_code == 413 and r.json()["error"] == "frame_too_large"
    assert alpha.get("/v1/health").status_code == 200


def test_a_body_that_never_ends_is_cut_off(http_daemon: Daemon, alpha: httpx.Client):
    host, port = http_daemon.http_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alpha\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"prof")
        answer = b""
        while chunk := s.recv(65536):  # the daemon answers, then closes
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["error"] == "timeout"
    assert alpha.get("/v1/health").status_code == 200


def test_headers_that_never_end_are_cut_off(http_daemon: Daemon):
    host, port = http_daemon.http_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert s.recv(65536) == b""  # closed by the daemon (http_keepalive_timeout)


# ------------------------------------------------------------------ requests at once


def test_per_token_concurrency_is_429(alpha: httpx.Client, beta: httpx.Client,
                                      http_daemon: Daemon):
    ids = []
    try:
        for _ in range(2):  # each background job holds one of alpha's 3 slots until it ends
            r = alpha.post("/v1/jobs?wait=false", json=SLEEP)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        # The third slot is this request's own: its job would need a fourth.
        r = alpha.post("/v1/jobs?wait=false", json=SLEEP)
        assert r.status_code == 429 and r.json()["error"] == "too_many_requests"
        assert r.headers["retry-after"]
        assert beta.get("/v1/ps").status_code == 200  # other tokens are not held back
    finally:
        for job_id in ids:
            beta.delete(f"/v1/jobs/{job_id}")
    wait_for(lambda: alpha.get("/v1/ps").status_code == 200)


def test_requests_at_once_past_the_cap_are_503(base_url: str, beta: httpx.Client,
                                               http_daemon: Daemon):
    def hold(token: str) -> None:
        with httpx.Client(base_url=base_url, timeout=60, headers=bearer(token)) as c:
            c.post("/v1/jobs", json=SLEEP)

    threads = [threading.Thread(target=hold, args=(t,)) for t in
               ("alpha", "alpha", "gamma", "gamma")]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(jobs_in_flight(http_daemon)) == 4)
        r = beta.get("/v1/ps")
        assert r.status_code == 503 and r.json()["error"] == "server_busy"
    finally:
        kill_all(http_daemon)
        for t in threads:
            t.join(60)
    assert beta.get("/v1/ps").status_code == 200


def _ws_frame(text: str) -> bytes:
    """One masked text frame, as a client sends it (RFC 6455 section 5.2)."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                            bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_websocket_client_that_never_reads_is_cut_off(http_daemon: Daemon,
                                                        beta: httpx.Client):
    host, port = http_daemon.http_address.rsplit(":", 1)

    def serving() -> int:
        text = beta.get("/metrics", headers=bearer("metrics-secret")).text
        return int(float(re.search(r"^sandboxd_http_in_flight (\S+)$", text, re.M)[1]))

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(60)
    s.connect((host, int(port)))
    try:
        s.sendall(b"GET /v1/jobs/stream?token=alpha HTTP/1.1\r\nHost: x\r\n"
                  b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(_ws_frame(json.dumps({"profile": "bash", "files": {"main.sh": "yes hello"},
                                        "limits": {"wall_time": 60, "output": "1G"}})))
        # From now on the client reads nothing: the daemon's sends block once the kernel's
        # buffers are full, its queue for this client fills, the job is cancelled...
        wait_for(lambda: "event=ws_overflow" in http_daemon.log.read_text())
        wait_for(lambda: not jobs_in_flight(http_daemon))
        assert beta.get("/v1/health").status_code == 200
        # ...and the connection, whose blocked send only the kernel can end, is dropped
        # after http_send_timeout while the client still holds it open.
        wait_for(lambda: serving() == 1)  # this /metrics request alone
    finally:
        s.close()
