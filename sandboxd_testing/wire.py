"""Frames as the daemon reads them, built by hand: bypassing ``sandboxd_protocol``'s checks
and state machine, to play a hostile client (fuzz/fuzz_daemon.py) or a misbehaving
daemon (tests/clients)."""

from __future__ import annotations

import struct
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
"""A frame's header: the body's length, 4 bytes big-endian."""


def frame(body: bytes) -> bytes:
    """``body`` (any bytes) behind its length."""
    return HEADER.pack(len(body)) + body


def packed(message: dict[str, Any]) -> bytes:
    """A frame holding ``message`` as it is, whatever it says."""
    return frame(msgpack.packb(message, use_bin_type=True))
