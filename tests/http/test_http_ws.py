"""The WebSocket ``/v1/jobs/stream``: a playground's terminal (type input, read the echo),
streamed output, and refusals as messages."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root


def ws(http_daemon: Daemon) -> ClientConnection:
    return connect(f"ws://{http_daemon.http_address}/v1/jobs/stream", open_timeout=30,
                   close_timeout=30)


def recv(c: ClientConnection) -> dict[str, Any]:
    return json.loads(c.recv(timeout=60))


def until(c: ClientConnection, kind: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen = []
    while True:
        m = recv(c)
        if m["type"] == kind:
            return m, seen
        seen.append(m)


def test_interactive_echo(http_daemon: Daemon):
    code = ("import sys\n"
            "for line in sys.stdin:\n"
            "    print('echo:', line.strip(), flush=True)\n"
            "print('bye')\n")
    with ws(http_daemon) as c:
        c.send(json.dumps({"profile": "python3", "files": {"main.py": code}}))
        accepted = recv(c)
        assert accepted["type"] == "accepted" and accepted["id"]
        for word in ("first", "second"):
            c.send(json.dumps({"stdin": f"{word}\n"}))
            out = ""
            while "\n" not in out:
                m = recv(c)
                assert m["type"] == "output" and m["stream"] == "stdout", m
                out += m["data"]
            assert out == f"echo: {word}\n"
        c.send(json.dumps({"stdin_b64": base64.b64encode(b"third\n").decode()}))
        c.send(json.dumps({"eof": True}))
        result, outputs = until(c, "result")
        assert "".join(m["data"] for m in outputs) == "echo: third\nbye\n"
        assert result["verdict"] == "ok" and result["steps"][0]["stdout"].endswith("bye\n")
        with pytest.raises(Exception):  # noqa: B017 (the server closed it)
            c.recv(timeout=30)
        assert c.close_code == 1000


def test_streamed_output_of_a_compiled_batch(http_daemon: Daemon):
    with ws(http_daemon) as c:
        c.send(json.dumps({"profile": "c", "files": {
            "main.c": '#include <stdio.h>\nint main(void){int x; scanf("%d",&x);'
                      'printf("%d\\n", x*x); fprintf(stderr, "\\xff"); return 0;}'},
            "tests": [{"stdin": "3"}, {"stdin": "4"}]}))
        assert recv(c)["type"] == "accepted"
        result, outputs = until(c, "result")
        by_step = {m["step"]: m for m in outputs if m["stream"] == "stdout" and not m["compile"]}
        assert by_step[0]["data"] == "9\n" and by_step[1]["data"] == "16\n"
        err = [m for m in outputs if m["stream"] == "stderr" and not m["compile"]]
        assert err and base64.b64decode(err[0]["data_b64"]) == b"\xff"
        assert [s["stdout"] for s in result["steps"]] == ["9\n", "16\n"]


def test_cancel_message(http_daemon: Daemon):
    with ws(http_daemon) as c:
        c.send(json.dumps({"profile": "bash", "files": {"main.sh": "echo go; sleep 30"}}))
        assert recv(c)["type"] == "accepted"
        assert recv(c)["data"] == "go\n"
        c.send(json.dumps({"cancel": True}))
        result, _ = until(c, "result")
        assert result["verdict"] == "cancelled"


@pytest.mark.parametrize(("first", "code"), [
    ("{not json", "malformed"),
    (json.dumps({"profile": "nope"}), "unknown_profile"),
    (json.dumps({"profile": "bash", "interactive": True, "stdin": "x"}), "invalid_field"),
    (json.dumps({"profile": "bash", "limits": {"memory": "1T"}}), "limit_exceeded"),
])
def test_refusals_are_error_messages(http_daemon: Daemon, first: str, code: str):
    with ws(http_daemon) as c:
        c.send(first)
        m = recv(c)
        assert m == {"type": "error", "error": code, "message": m["message"]}


def test_bad_stdin_message_is_an_error_and_the_job_goes_on(http_daemon: Daemon):
    with ws(http_daemon) as c:
        c.send(json.dumps({"profile": "python3", "files": {"main.py": "print(input())"}}))
        assert recv(c)["type"] == "accepted"
        c.send(json.dumps({"stdin": 5}))
        m = recv(c)
        assert m["type"] == "error" and m["error"] == "invalid_field"
        c.send(json.dumps({"stdin": "ok\n"}))
        result, _ = until(c, "result")
        assert result["steps"][0]["stdout"] == "ok\n"
