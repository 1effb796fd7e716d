"""The control channel's plain-call fast paths (one non-blocking call before trio's waits),
on real Unix sockets: whole frames, descriptors, frames bigger than the socket's buffer, a
frame whose body arrives late, and a peer that is gone."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import trio

from sandboxd import channel


def _pair() -> tuple[channel.AsyncChannel, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return channel.AsyncChannel(ours), theirs


def test_recv_nowait_is_none_until_a_frame_begins_then_the_frame() -> None:
    async def main() -> None:
        chan, peer = _pair()
        try:
            assert await chan.recv_nowait() is None
            r, w = os.pipe()
            channel.send(peer, {"t": "started", "t0": 1.5}, [r])
            os.close(r)
            msg, fds = await chan.recv_nowait()  # type: ignore[misc]
            assert msg == {"t": "started", "t0": 1.5} and len(fds) == 1
            os.write(w, b"x")
            assert os.read(fds[0], 1) == b"x"  # the very pipe, passed over
            os.close(fds[0])
            os.close(w)
            assert await chan.recv_nowait() is None
        finally:
            chan.close()
            peer.close()

    trio.run(main)


def test_a_body_that_arrives_late_is_awaited() -> None:
    async def main() -> None:
        chan, peer = _pair()
        data = channel.encode({"t": "exited", "status": 0})
        try:
            peer.sendall(data[:6])  # the header and a bit: the rest comes later
            threading.Timer(0.05, peer.sendall, [data[6:]]).start()
            t = time.monotonic()
            msg, _ = await chan.recv_nowait()  # type: ignore[misc]
            assert msg == {"t": "exited", "status": 0}
            assert time.monotonic() - t >= 0.03
        finally:
            chan.close()
            peer.close()

    trio.run(main)


def test_send_larger_than_the_socket_buffer_completes_through_trio() -> None:
    async def main() -> None:
        chan, peer = _pair()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        payload = os.urandom(4 << 20)
        got: list[dict] = []

        def reader() -> None:
            got.append(channel.recv_message(peer))

        th = threading.Thread(target=reader)
        th.start()
        try:
            r, w = os.pipe()
            await chan.send({"t": "files", "blob": payload}, [r])
            os.close(r)
            os.close(w)
            await trio.to_thread.run_sync(th.join)
            assert got[0]["blob"] == payload
        finally:
            chan.close()
            peer.close()

    trio.run(main)


def test_a_peer_gone_is_channel_closed() -> None:
    async def main() -> None:
        chan, peer = _pair()
        peer.close()
        try:
            with pytest.raises(channel.ChannelClosed):
                await chan.recv_nowait()
            with pytest.raises(OSError):
                await chan.send({"t": "exec"})
        finally:
            chan.close()

    trio.run(main)
