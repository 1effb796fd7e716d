"""The internal control channel: msgpack maps with file descriptors, over a Unix stream socket.

Strategy: each message is a 4-byte big-endian length and a msgpack map; file
descriptors ride with the first byte of a message (SCM_RIGHTS), and the
receiver reads the 4-byte header alone with recvmsg, so that the kernel hands
it exactly that message's descriptors. The blocking functions serve the
zygote (plain single-threaded Python); ``AsyncChannel`` serves the trio
supervisor. The container's init is native code (sandboxd/native/channel.c
speaks the same framing, msgpack.c the same maps). Peers on this channel are
our own processes, but a container's init could in principle be subverted,
so the supervisor bounds every frame it reads.

This is not the client protocol (that is ``sandboxd_protocol``).
"""

from __future__ import annotations

import array
import socket
import struct
from typing import Any

import msgpack

_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30  # files travel on this channel: generous, but bounded
MAX_FDS = 8


class ChannelClosed(EOFError):
    """The peer closed the channel (or died)."""


class ChannelError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(msg: dict[str, Any]) -> bytes:
    payload = msgpack.packb(msg, use_bin_type=True)
    return _HEADER.pack(len(payload)) + payload


def _decode(payload: bytes) -> dict[str, Any]:
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:
        raise ChannelError(f"undecodable frame: {e}") from e
    if not isinstance(msg, dict):
        raise ChannelError("frame is not a map")
    return msg


def _fds_from_ancdata(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - (len(data) % arr.itemsize)])
            fds.extend(arr)
    return fds


_ANC_SIZE = socket.CMSG_SPACE(MAX_FDS * 4)


# --------------------------------------------------------------- blocking side


def send(sock: socket.socket, msg: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
    data = encode(msg)
    if fds:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      array.array("i", fds).tobytes())])
        data = data[sent:]
    if data:
        sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ChannelClosed("channel closed mid-frame")
        buf += chunk
    return bytes(buf)


def recv(sock: socket.socket, max_frame: int = MAX_FRAME) -> tuple[dict[str, Any], list[int]]:
    """Read one message and the descriptors sent with it. Raises ChannelClosed at EOF."""
    data, ancdata, _flags, _addr = sock.recvmsg(_HEADER.size, _ANC_SIZE)
    fds = _fds_from_ancdata(ancdata)
    _check_start(data, fds)
    if len(data) < _HEADER.size:
        data += _recv_exact(sock, _HEADER.size - len(data))
    length = _check_length(data, fds, max_frame)
    return _decode(_recv_exact(sock, length)), fds


def recv_message(sock: socket.socket) -> dict[str, Any]:
    """Read one message that should carry no descriptors; close any that came with it."""
    msg, fds = recv(sock)
    for fd in fds:
        _close(fd)
    return msg


def _check_start(data: bytes, fds: list[int]) -> None:
    if not data:
        for fd in fds:
            _close(fd)
        raise ChannelClosed("channel closed")


def _check_length(header: bytes, fds: list[int], max_frame: int) -> int:
    """The frame's length, refused (descriptors closed) before its body is read if too big."""
    (length,) = _HEADER.unpack(header)
    if length > max_frame:
        for fd in fds:
            _close(fd)
        raise ChannelError(f"frame of {length} bytes exceeds {max_frame}")
    return int(length)


def _close(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass


# ------------------------------------------------------------------ trio side


class AsyncChannel:
    """The supervisor's end of a control channel, on a trio socket.

    Cancellation: a cancelled ``recv`` may leave a frame half-read; the
    channel is then unusable and the caller must close it (every caller does,
    because a cancelled container is destroyed).
    """

    def __init__(self, sock: socket.socket, max_frame: int = MAX_FRAME) -> None:
        import trio

        self._raw = sock  # the same socket, for recv_nowait's one plain call
        self._sock = trio.socket.from_stdlib_socket(sock)  # (which makes it non-blocking)
        self._max_frame = max_frame

    def fileno(self) -> int:
        return self._sock.fileno()

    async def send(self, msg: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
        """Send one frame (and ``fds`` with its first byte).

        The peer reads promptly and frames are small: the socket's buffer almost always
        has room, so one plain non-blocking call comes first (trio's own call costs two
        passes through its scheduler); trio's waits only take what that left. Not a
        cancellation point when the frame went out whole.
        """
        data = encode(msg)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] \
            if fds else []
        try:
            sent = self._raw.sendmsg([data], anc, socket.MSG_DONTWAIT)
        except BlockingIOError:
            if fds:
                sent = await self._sock.sendmsg([data], anc)
            else:
                sent = 0
        data = data[sent:]
        while data:
            sent = await self._sock.send(data)
            data = data[sent:]

    async def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await self._sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise ChannelClosed("channel closed mid-frame")
            buf += chunk
        return bytes(buf)

    async def recv(self) -> tuple[dict[str, Any], list[int]]:
        data, ancdata, _flags, _addr = await self._sock.recvmsg(_HEADER.size, _ANC_SIZE)
        return await self._finish(data, ancdata)

    async def recv_nowait(self) -> tuple[dict[str, Any], list[int]] | None:
        """The next message if one has begun to arrive, else None, without waiting.

        For a caller that waits on this channel's descriptor itself (with others, in
        one epoll: the container's single supervising loop); the rest of a begun
        frame is awaited, since its writer sends whole frames.
        """
        try:
            data, ancdata, _flags, _addr = self._raw.recvmsg(
                _HEADER.size, _ANC_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        return await self._finish(data, ancdata)

    async def _finish(self, data: bytes, ancdata: list) -> tuple[dict[str, Any], list[int]]:
        fds = _fds_from_ancdata(ancdata)
        _check_start(data, fds)
        if len(data) < _HEADER.size:
            data += await self._recv_exact(_HEADER.size - len(data))
        length = _check_length(data, fds, self._max_frame)
        # The writer sends whole frames: the body is normally there already, and one
        # plain call saves trio's two checkpoints (a pass through its scheduler).
        try:
            body = self._raw.recv(length, socket.MSG_DONTWAIT) if length else b""
        except BlockingIOError:
            body = b""
        if len(body) < length:
            body += await self._recv_exact(length - len(body))
        return _decode(body), fds

    def close(self) -> None:
        self._sock.close()
