"""Judge0's callback PUT (``judge0.put_json``) against loopback servers that answer, and
that hang up: a status, or an error the caller's retry loop catches (never a hang)."""

from __future__ import annotations

import h11
import pytest
import trio

from sandboxd.front.http.judge0 import put_json


async def _one_server(answer: bytes | None, got: list[bytes],
                      task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
    """Serve one connection on 127.0.0.1: read the request, then send ``answer`` (or
    nothing) and close."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    stream = await listeners[0].accept()
    async with stream, listeners[0]:
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                break
            data += chunk
        got.append(data)
        if answer is not None:
            await stream.send_all(answer)


async def test_put_json_returns_the_status_and_sends_the_body() -> None:
    got: list[bytes] = []
    async with trio.open_nursery() as n:
        port = await n.start(_one_server, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
                             got)
        with trio.fail_after(10):
            status = await put_json(f"http://127.0.0.1:{port}/cb?x=1", b'{"a": 1}')
    assert status == 204
    assert got[0].startswith(b"PUT /cb?x=1 HTTP/1.1\r\n") and got[0].endswith(b'{"a": 1}')


async def test_put_json_to_a_server_that_hangs_up_is_an_error_not_a_hang() -> None:
    async with trio.open_nursery() as n:
        port = await n.start(_one_server, None, [])
        with trio.fail_after(10), pytest.raises((OSError, h11.ProtocolError)):
            await put_json(f"http://127.0.0.1:{port}/cb", b'{"a": 1}')
