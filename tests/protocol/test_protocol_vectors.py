"""Every test vector in ``sandboxd_protocol/vectors/``, both ways, from the files alone.

Decoding: the hex bytes, fed to the receiving ``Connection`` (whole, then one
byte at a time), give the event whose msgpack map is the vector's
``message``, or the vector's ``error`` code. Encoding: the sending side,
handed that event, writes exactly the vector's bytes (or its
``canonical_hex``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from make_protocol_vectors import VECTORS, body_of, build, from_json, render

from sandboxd_protocol import (
    CLIENT,
    NEED_DATA,
    PROTOCOL_ERROR_CODES,
    SERVER,
    Connection,
    RemoteProtocolError,
)

FILES = sorted(VECTORS.glob("*.json"))


def test_vector_files_are_up_to_date() -> None:
    """The committed files are what the generator writes (run it after a change)."""
    wanted = {f"{c.name}.json": render(c) for c in build()}
    assert sorted(wanted) == [f.name for f in FILES]
    for name, text in wanted.items():
        assert (VECTORS / name).read_text(encoding="utf-8") == text, name


def _same_order(a: Any, b: Any) -> bool:
    """Equal, and maps list their keys in the same order (the bytes depend on it)."""
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and list(a) == list(b) and all(_same_order(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(_same_order(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_vector(path: Path, bytewise: bool) -> None:
    vector = json.loads(path.read_text(encoding="utf-8"))
    ends = {"client": Connection(CLIENT), "server": Connection(SERVER)}
    frames = vector["frames"]
    assert frames, "a vector has frames"
    for i, frame in enumerate(frames):
        sender = ends[frame["from"]]
        receiver = ends["server" if frame["from"] == "client" else "client"]
        data = bytes.fromhex(frame["hex"])
        if "message" in frame:
            decoded = msgpack.unpackb(body_of(data), raw=False)
            assert _same_order(decoded, from_json(frame["message"])), f"frame {i}"
        pieces = [data[j : j + 1] for j in range(len(data))] if bytewise else [data]
        if "error" in frame:
            assert i == len(frames) - 1, "an error ends the conversation"
            assert frame["error"] in PROTOCOL_ERROR_CODES
            with pytest.raises(RemoteProtocolError) as info:
                for piece in pieces:
                    receiver.receive_data(piece)
                    receiver.next_event()
            assert info.value.code == frame["error"]
            return
        events = []
        for piece in pieces:
            receiver.receive_data(piece)
            while (event := receiver.next_event()) is not NEED_DATA:
                events.append(event)
        assert len(events) == 1, f"frame {i}: {events}"
        expected = bytes.fromhex(frame.get("canonical_hex", frame["hex"]))
        assert sender.send(events[0]) == expected, f"frame {i} re-encodes differently"
