"""The HTTP listener itself: ``--http``, its configuration, the trailing-slash rule and
errors as JSON."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from daemon import Daemon

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
