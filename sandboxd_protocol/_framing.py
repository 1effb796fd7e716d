"""Frames: a 4-byte big-endian length, then that many bytes holding one msgpack map.

Strategy: the length comes first so that a receiver can refuse an oversized
frame as soon as it has read 4 bytes, before buffering (or even waiting
for) the body. The reader keeps one ``bytearray`` and a read offset, and
compacts only when the consumed part is large, so feeding a long stream one
byte at a time stays linear.

This module knows nothing of msgpack's contents, events or state.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack  # type: ignore[import-untyped]

from ._errors import ErrorCode, Invalid

__all__ = ["HEADER_SIZE", "FrameReader", "encode_frame", "unpack_body"]

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size

_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def encode_frame(message: dict[str, Any]) -> bytes:
    """Pack one message map and put its length in front."""
    body: bytes = _packer.pack(message)
    return _HEADER.pack(len(body)) + body


def unpack_body(body: bytes) -> Any:
    """Decode a frame body into one msgpack object, or raise ``Invalid`` (malformed)."""
    try:
        return msgpack.unpackb(body, raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:
        # msgpack signals bad input with several classes (ExtraData, FormatError,
        # StackError, ValueError, UnicodeDecodeError, TypeError for unhashable keys...).
        # Every one of them means the same thing to us: the peer sent garbage.
        raise Invalid(
            "", f"frame body is not one valid msgpack object: {exc}", ErrorCode.MALFORMED
        ) from exc


class FrameReader:
    """Buffers bytes and cuts them into frame bodies."""

    __slots__ = ("_buf", "_pos", "eof", "max_frame_size")

    def __init__(self, max_frame_size: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.eof = False
        self.max_frame_size = max_frame_size

    def feed(self, data: bytes) -> None:
        """Append bytes; ``b""`` marks the end of the stream."""
        if not data:
            self.eof = True
            return
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a frame."""
        return len(self._buf) - self._pos

    def next_body(self) -> bytes | None:
        """The next complete frame body, or ``None`` until more bytes come.

        Raises ``Invalid`` with ``frame_too_large`` as soon as a prefix announces
        more than ``max_frame_size`` bytes, ``malformed`` for an empty frame or a
        stream that ends inside a frame.
        """
        buf = self._buf
        pos = self._pos
        have = len(buf) - pos
        if have < HEADER_SIZE:
            if have and self.eof:
                raise Invalid("", "stream ended inside a frame header", ErrorCode.MALFORMED)
            return None
        (size,) = _HEADER.unpack_from(buf, pos)
        if size > self.max_frame_size:
            raise Invalid(
                "",
                f"frame of {size} bytes exceeds the maximum of {self.max_frame_size}",
                ErrorCode.FRAME_TOO_LARGE,
            )
        if size == 0:
            raise Invalid("", "empty frame (a frame must hold a msgpack map)", ErrorCode.MALFORMED)
        end = pos + HEADER_SIZE + size
        if len(buf) < end:
            if self.eof:
                raise Invalid("", "stream ended inside a frame", ErrorCode.MALFORMED)
            return None
        with memoryview(buf) as view:  # one copy of the body, not two
            body = bytes(view[pos + HEADER_SIZE : end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
        return body
