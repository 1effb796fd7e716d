"""Every error the clients promise, each with its exception and a message that helps.

The first part needs no daemon: a missing socket, a stale one, a daemon that
does not answer, speaks another version, breaks the protocol or hangs up are
played by ``FakeDaemon``. The second part provokes the real daemon: busy,
rejected jobs, a wrong token, too many connections, a daemon that stops
mid-job.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest
import trio
from client_helpers import SLEEPER, FakeDaemon, next_event, run_async

import sandboxd_client as sc
import sandboxd_protocol as proto
from sandboxd_testing.daemon import Daemon
from sandboxd_testing.wire import packed

# -- without a daemon -------------------------------------------------------------------


def test_no_socket_says_is_the_daemon_running(tmp_path: Path) -> None:
    path = tmp_path / "nothing.sock"
    with pytest.raises(sc.ConnectError) as info:
        sc.Client(path)
    e = info.value
    assert e.address == str(path)
    assert str(path) in str(e) and "No such file" in str(e)
    assert "is the daemon running?" in e.hint and "SANDBOXD_SOCKET" in e.hint


def test_the_default_socket_comes_from_the_environment(tmp_path, monkeypatch) -> None:
    path = str(tmp_path / "from-env.sock")
    monkeypatch.setenv("SANDBOXD_SOCKET", path)
    with pytest.raises(sc.ConnectError, match=r"from-env\.sock"):
        sc.Client()
    monkeypatch.delenv("SANDBOXD_SOCKET")
    with pytest.raises(sc.ConnectError) as info:
        sc.Client()
    assert info.value.address == sc.DEFAULT_SOCKET


def test_a_stale_socket_file_says_the_daemon_is_gone(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)  # bound, never listening: what a crashed daemon leaves
    s.close()
    with pytest.raises(sc.ConnectError) as info:
        sc.Client(path)
    assert "left from a daemon that is gone" in info.value.hint


def test_async_connect_errors_are_the_same(tmp_path: Path) -> None:
    path = tmp_path / "nothing.sock"

    async def connect() -> None:
        async with sc.AsyncClient(path):
            pass

    for library in ("asyncio", "trio"):
        with pytest.raises(sc.ConnectError, match="is the daemon running"):
            run_async(library, connect)


def test_a_daemon_that_never_answers_times_out(tmp_path: Path) -> None:
    def silent(conn: proto.Connection, sock: socket.socket) -> None:
        sock.recv(65536)
        time.sleep(2)

    with FakeDaemon(tmp_path / "s.sock", silent) as fake:
        start = time.monotonic()
        with pytest.raises(sc.ConnectError, match=r"no answer in 0\.3 s"):
            sc.Client(fake.path, timeout=0.3)
        assert time.monotonic() - start < 1.5


@pytest.mark.parametrize("how", ["error", "welcome"])
@pytest.mark.parametrize("which", ["sync", "asyncio", "trio"])
def test_protocol_version_mismatch(tmp_path: Path, how: str, which: str) -> None:
    """The daemon refuses our version, or answers with one we do not speak."""

    def newer(conn: proto.Connection, sock: socket.socket) -> None:
        hello = next_event(conn, sock)
        assert hello.version == proto.PROTOCOL_VERSION
        if how == "error":
            sock.sendall(
                conn.send(
                    proto.ErrorReport(code="unsupported_version", message="I speak version 7 only")
                )
            )
        else:
            sock.sendall(packed({"type": "welcome", "version": 7}))
        time.sleep(0.2)

    with (
        FakeDaemon(tmp_path / "s.sock", newer) as fake,
        pytest.raises(sc.ProtocolVersionError) as info,
    ):
        _connect(which, fake.path)
    assert "version" in str(info.value) and "same sandboxd release" in info.value.hint
    assert not fake.errors


def _connect(which: str, path: str) -> None:
    if which == "sync":
        sc.Client(path).close()
        return

    async def connect() -> None:
        async with sc.AsyncClient(path):
            pass

    run_async(which, connect)


def _hang_up_after_accepting(conn: proto.Connection, sock: socket.socket) -> None:
    next_event(conn, sock)
    sock.sendall(conn.send(proto.Welcome(server="fake/1")))
    sub = next_event(conn, sock)
    sock.sendall(conn.send(proto.JobAcceptance(id=sub.id)))
    time.sleep(0.1)
    sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("which", ["sync", "asyncio", "trio"])
def test_connection_lost_mid_job(tmp_path: Path, which: str) -> None:
    with FakeDaemon(tmp_path / "s.sock", _hang_up_after_accepting) as fake:
        if which == "sync":
            with sc.Client(fake.path) as client, pytest.raises(sc.ConnectionLost) as info:
                client.run("bash", {"main.sh": "sleep 1"})
        else:

            async def go() -> None:
                async with sc.AsyncClient(fake.path) as client:
                    await client.run("bash", {"main.sh": "sleep 1"})

            with pytest.raises(sc.ConnectionLost) as info:
                run_async(which, go)
    e = info.value
    assert e.job_id == "1" and e.ran is None
    assert "job 1 got no result" in str(e) and "submit it again" in e.hint
    assert not fake.errors


def test_a_daemon_breaking_the_protocol_is_a_violation(tmp_path: Path) -> None:
    def garbage(conn: proto.Connection, sock: socket.socket) -> None:
        next_event(conn, sock)
        sock.sendall(conn.send(proto.Welcome()))
        sub = next_event(conn, sock)
        sock.sendall(packed({"type": "result", "id": sub.id, "steps": [{"verdict": "great"}]}))
        time.sleep(0.2)

    with FakeDaemon(tmp_path / "s.sock", garbage) as fake, sc.Client(fake.path) as client:
        with pytest.raises(sc.ProtocolViolation) as info:
            client.run("bash", {})
        assert "steps[0].verdict" in str(info.value) and "report it" in info.value.hint
        with pytest.raises(sc.ProtocolViolation):  # and the connection stays broken
            client.ping()


def test_a_bad_field_is_rejected_before_sending_and_the_connection_goes_on(tmp_path) -> None:
    seen: list[object] = []

    def record(conn: proto.Connection, sock: socket.socket) -> None:
        next_event(conn, sock)
        sock.sendall(conn.send(proto.Welcome()))
        ping = next_event(conn, sock)
        seen.append(ping)
        sock.sendall(conn.send(proto.Pong(nonce=ping.nonce)))
        time.sleep(0.2)

    with FakeDaemon(tmp_path / "s.sock", record) as fake, sc.Client(fake.path) as client:
        for files, kw, field in (
            ({"../etc/passwd": "x"}, {}, "files['../etc/passwd']"),
            ({}, {"argv": "python3 main.py"}, "argv"),
            ({}, {"limits": {"cpu": 1}}, "limits.cpu"),
            ({}, {"limits": {"memory": "lots"}}, "limits.memory"),
            ({}, {"tests": [{"stdin": 5}]}, "tests[0].stdin"),
        ):
            with pytest.raises(sc.JobRejected) as info:
                client.run("bash", files, **kw)
            assert info.value.field == field, info.value
            assert field in str(info.value)
        client.ping()
    assert len(seen) == 1 and isinstance(seen[0], proto.Ping)  # nothing else was sent


# -- against the daemon ----------------------------------------------------------------


@pytest.mark.root
def test_rejected_jobs_name_the_field(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d, sc.Client(d.socket) as client:
        with pytest.raises(sc.UnknownProfile) as info:
            client.run("cobol", {"main.cob": "x"})
        assert info.value.field == "profile" and "cobol" in str(info.value)
        assert "sandboxctl profiles" in info.value.hint
        with pytest.raises(sc.LimitExceeded) as info2:
            client.run("bash", {"main.sh": ""}, limits={"memory": "1T"})
        assert info2.value.field == "limits.memory" and "16G" in str(info2.value)
        with pytest.raises(sc.LimitExceeded) as info3:
            client.run("bash", {"main.sh": ""}, tests=[{}, {"limits": {"cpu_time": 9999}}])
        assert info3.value.field == "tests[1].limits.cpu_time"
        assert client.run("bash", {"main.sh": "echo fine"}).text == "fine\n"


@pytest.mark.root
def test_busy_is_raised_and_retried_with_backoff(tmp_path: Path) -> None:
    with Daemon(tmp_path, concurrency=1, queue_length=0, pool_profiles=["bash"]) as d:
        with sc.Client(d.socket) as client:
            first = client.submit("bash", {"main.sh": "sleep 0.6"})
            with pytest.raises(sc.ServerBusy) as info:
                client.run("bash", {"main.sh": "echo hi"})
            e = info.value
            assert e.attempts == 1 and "queue is full" in str(e) and "busy_retries" in e.hint
            start = time.monotonic()
            second = client.run("bash", {"main.sh": "echo second"}, busy_retries=12)
            assert second.text == "second\n" and time.monotonic() - start > 0.2
            assert first.result().ok
        assert d.stats().counters["busy_refusals"] >= 2

        async def retried() -> None:
            async with sc.AsyncClient(d.socket, busy_retries=12) as client:
                job = await client.submit("bash", {"main.sh": "sleep 0.3"})
                r = await client.run("bash", {"main.sh": "echo async"})
                assert r.text == "async\n" and (await job.result()).ok

        asyncio.run(retried())


@pytest.mark.root
def test_too_many_connections_is_busy(tmp_path: Path) -> None:
    """The daemon writes its refusal and closes at once, maybe before our hello is written:
    its words, not our broken pipe, make the error."""

    async def connect() -> None:
        async with sc.AsyncClient(d.socket):
            pass

    with Daemon(tmp_path, max_connections=1) as d, sc.Client(d.socket):
        for _ in range(5):
            with pytest.raises(sc.ServerBusy, match="too many connections"):
                sc.Client(d.socket)
            for library in ("asyncio", "trio"):
                with pytest.raises(sc.ServerBusy, match="too many connections"):
                    run_async(library, connect)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.root
def test_tcp_needs_the_right_token(tmp_path: Path, monkeypatch) -> None:
    port = _free_port()
    with Daemon(tmp_path, tcp=f"127.0.0.1:{port}", token="s3cret") as d:
        with pytest.raises(sc.AuthenticationError) as info:
            sc.Client(host="127.0.0.1", port=port, token="wrong")
        assert f"127.0.0.1:{port}" in str(info.value) and "token" in info.value.hint
        with sc.Client(host="127.0.0.1", port=port, token="s3cret") as client:
            assert client.run("bash", {"main.sh": "echo tcp"}).text == "tcp\n"
        monkeypatch.setenv("SANDBOXD_TOKEN", "s3cret")  # the daemon's variable, for clients too

        async def via_env() -> str:
            async with sc.AsyncClient(host="127.0.0.1", port=port) as client:
                return (await client.run("bash", {"main.sh": "echo env"})).text

        assert trio.run(via_env) == "env\n"
        assert d.socket  # the Unix socket still needs no token
        with sc.Client(d.socket) as client:
            client.ping()


@pytest.mark.root
@pytest.mark.parametrize("which", ["sync", "asyncio"])
def test_connection_lost_when_the_daemon_stops_mid_job(tmp_path: Path, which: str) -> None:
    """SIGTERM: the daemon drains for grace_period, then drops the connections."""
    d = Daemon(tmp_path, grace_period=0.3, pool_profiles=["bash"]).start()
    try:
        stopper = threading.Thread(target=d.stop)
        if which == "sync":
            with sc.Client(d.socket) as client, client.stream("bash", SLEEPER) as job:
                assert next(iter(job)).text == "started\n"
                stopper.start()
                with pytest.raises(sc.ConnectionLost) as info:
                    job.result()
        else:

            async def go() -> None:
                async with (
                    sc.AsyncClient(d.socket) as client,
                    await client.stream("bash", SLEEPER) as job,
                ):
                    async for _ in job:
                        break
                    stopper.start()
                    await job.result()

            with pytest.raises(sc.ConnectionLost) as info:
                asyncio.run(go())
        assert info.value.job_id is not None and "closed the connection" in str(info.value)
        stopper.join(30)
        assert d.proc is not None and d.proc.returncode == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()
