"""The HTTP listener itself: ``--http``, its configuration, the trailing-slash rule and
errors as JSON."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import start_http_daemon, wait_idle

from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root


def test_health_over_http(client: httpx.Client):
    r = client.get("/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.headers["content-type"] == "application/json"


def test_every_route_with_and_without_a_trailing_slash(client: httpx.Client):
    assert client.get("/v1/health/").json() == client.get("/v1/health").json()


def test_unknown_route_and_method_are_json_errors(client: httpx.Client):
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"] == "unknown_message"
    r = client.delete("/v1/health")
    assert r.status_code == 405
    assert r.json()["error"] == "unexpected_message"


def test_ready_line_names_the_bound_port(http_daemon: Daemon):
    host, port = http_daemon.http_address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0


def test_port_in_use_is_a_clear_error(tmp_path: Path, http_daemon: Daemon):
    d = Daemon(tmp_path, args=("--http", http_daemon.http_address), http_loopback_open=True)
    with pytest.raises(RuntimeError, match="cannot listen for HTTP"):
        d.start()


def test_sigterm_lets_a_waiting_request_have_its_result(tmp_path: Path):
    d = start_http_daemon(tmp_path)
    try:
        wait_idle(d)
        base = f"http://{d.http_address}"
        answer: dict[str, Any] = {}

        def waiting() -> None:
            r = httpx.post(f"{base}/v1/jobs", timeout=60, json={
                "profile": "bash", "files": {"main.sh": "sleep 1; echo done"}})
            answer.update(status=r.status_code, body=r.json())

        t = threading.Thread(target=waiting)
        t.start()
        for _ in range(600):
            if httpx.get(f"{base}/v1/ps", timeout=60).json()["jobs"]:
                break
            time.sleep(0.05)
        assert d.proc is not None
        d.proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert answer["status"] == 200 and answer["body"]["steps"][0]["stdout"] == "done\n"
        assert d.proc.wait(60) == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
