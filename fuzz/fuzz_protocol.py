"""Fuzz the protocol decoder: arbitrary bytes must parse or raise RemoteProtocolError.

Invariant (see README.md): for every input, a ``Connection`` fed the bytes
either returns events or raises ``RemoteProtocolError`` - never any other
exception, never a hang - and feeding the same bytes in one piece or in
arbitrary pieces gives the same events and the same error code.

Runs under atheris (coverage-guided) when it is installed, otherwise under
hypothesis (random and structured inputs). ``one_input`` is also called by the
test suite (``tests/protocol/test_protocol_fuzz.py``) for a bounded run.

    .venv/bin/python fuzz/fuzz_protocol.py -max_total_time=60 fuzz/corpus   # atheris
    .venv/bin/python fuzz/fuzz_protocol.py --hypothesis --seconds 60       # no atheris
    .venv/bin/python fuzz/fuzz_protocol.py --make-corpus fuzz/corpus       # seeds
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:
    atheris = None

_PLAIN_MODES = {"--hypothesis", "--make-corpus"}
if atheris is not None and __name__ == "__main__" and not _PLAIN_MODES & set(sys.argv):
    with atheris.instrument_imports():  # coverage feedback from the protocol package
        import sandboxd_protocol as p
else:
    import sandboxd_protocol as p

LIMITS = p.SizeLimits(max_frame_size=1 << 16, max_jobs_in_flight=16, max_pending_requests=8)

# What the receiving side has seen before the fuzzed bytes: the first byte of
# the input picks one, so that the fuzzer reaches every state's rules.
MODES = ("server-fresh", "server-ready", "client-hello-sent", "client-with-jobs")


def _receiver(mode: int) -> p.Connection:
    """A fresh Connection in the state that ``mode`` names."""
    name = MODES[mode % len(MODES)]
    if name == "server-fresh":
        return p.Connection(p.SERVER, limits=LIMITS)
    client = p.Connection(p.CLIENT, limits=LIMITS)
    server = p.Connection(p.SERVER, limits=LIMITS)
    server.receive_data(client.send(p.Hello(client="fuzz")))
    server.next_event()
    if name == "server-ready":
        client.receive_data(server.send(p.Welcome(limits=LIMITS)))
        client.next_event()
        return server
    if name == "client-hello-sent":
        return client
    client.receive_data(server.send(p.Welcome(limits=LIMITS)))
    client.next_event()
    for job_id, kw in (("s", {"stream": True}), ("i", {"interactive_stdin": True}), ("t", {})):
        server.receive_data(client.send(p.JobSubmission(id=job_id, profile="py", **kw)))
        server.next_event()
    client.receive_data(server.send(p.JobAcceptance(id="s")))
    client.next_event()
    client.send(p.Ping(nonce=1))
    client.send(p.JobListRequest())
    client.send(p.KillRequest(job="1/x"))
    return client


def _run(conn: p.Connection, pieces: list[bytes]) -> tuple[list[Any], str | None]:
    events: list[Any] = []
    try:
        for piece in pieces:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is p.NEED_DATA or isinstance(event, p.ConnectionClosed):
                    break
                events.append(event)
                if len(events) > 100_000:
                    raise AssertionError("too many events: a loop?")
    except p.RemoteProtocolError as exc:
        assert exc.code in p.PROTOCOL_ERROR_CODES, exc.code
        return events, exc.code
    return events, None


def _framed(payload: bytes) -> bytes:
    """Cut ``payload`` at 0xC1 (a byte msgpack never uses) and frame each piece.

    Lets the fuzzer spend its time inside msgpack bodies rather than on prefixes.
    """
    return b"".join(struct.pack(">I", len(part)) + part for part in payload.split(b"\xc1") if part)


def one_input(data: bytes) -> None:
    """Check the invariant on one input; raises on a violation."""
    if len(data) < 2:
        return
    mode, flags, payload = data[0], data[1], data[2:]
    if flags & 1:
        payload = _framed(payload)
    whole = _run(_receiver(mode), [payload])
    step = ((flags >> 1) & 0x3F) or 1
    pieces = [payload[i : i + step] for i in range(0, len(payload), step)]
    pieced = _run(_receiver(mode), pieces)
    assert whole == pieced, (whole, pieced)
    if flags & 0x80:  # and with an end of stream after it
        _run(_receiver(mode), [payload, b""])


def seeds() -> list[bytes]:
    """Valid conversations for every mode, to start the search from."""
    client = p.Connection(p.CLIENT)
    server = p.Connection(p.SERVER)
    hello = client.send(p.Hello(client="seed"))
    server.receive_data(hello)
    server.next_event()
    welcome = server.send(p.Welcome())
    client.receive_data(welcome)
    client.next_event()
    sub = p.JobSubmission(
        id="j1",
        profile="python3",
        files={"main.py": b"print(input())", "lib/util.py": b""},
        argv=("python3", "main.py"),
        env={"LANG": "C.UTF-8"},
        limits=p.JobLimits(cpu_time=1.0, memory=1 << 28),
        compile=p.CompileStep(argv=("true",)),
        tests=(p.TestCase(stdin=b"1", expected_output=b"1", repeat=3),),
        stream=True,
    )
    up = (
        client.send(sub)
        + client.send(p.Ping(nonce=3))
        + client.send(p.StatsRequest())
        + client.send(p.KillRequest(job="1/x"))
    )
    server.receive_data(up)
    while server.next_event() is not p.NEED_DATA:
        pass
    step = p.StepResult(verdict="time_limit", reason="cpu", cpu_time=1.0, stdout=b"x")
    down = (
        server.send(p.JobAcceptance(id="j1"))
        + server.send(p.OutputChunk(id="j1", stream="stdout", data=b"x", seq=0))
        + server.send(p.JobResult(id="j1", compile=step, steps=(step,)))
        + server.send(p.Pong(nonce=3))
        + server.send(p.ServerStats(uptime=1.0, counters={"x": 1}))
        + server.send(p.KillResult(job="1/x", found=True))
    )
    i_jobs = client.send(p.JobSubmission(id="i2", profile="c", interactive_stdin=True))
    return [
        bytes([0, 0]) + hello + up,
        bytes([1, 2]) + up + i_jobs,
        bytes([2, 6]) + welcome,
        bytes([3, 0]) + down,
        bytes([3, 0x81]) + b"\xc1".join(_bodies(down)),  # framed mode: bodies only
    ]


def _bodies(stream: bytes) -> list[bytes]:
    out = []
    while stream:
        (size,) = struct.unpack_from(">I", stream)
        out.append(stream[4 : 4 + size])
        stream = stream[4 + size :]
    return out


def _hypothesis_main(seconds: float) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    deadline = time.monotonic() + seconds
    runs = 0

    @settings(
        max_examples=10**9, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        st.one_of(
            st.binary(max_size=4096),
            st.sampled_from(seeds()).flatmap(
                lambda s: st.binary(max_size=64).map(
                    lambda b, s=s: s[: len(s) // 2] + b + s[len(s) // 2 :]
                )
            ),
        )
    )
    def run(data: bytes) -> None:
        nonlocal runs
        runs += 1
        one_input(data)
        if time.monotonic() > deadline:
            raise _Done

    try:
        run()
    except _Done:
        pass
    print(f"hypothesis fuzzing: {runs} inputs in {seconds:.0f} s, invariant held")
    return 0


class _Done(Exception):
    pass


def main(argv: list[str]) -> int:
    if "--make-corpus" in argv:
        out = Path(argv[argv.index("--make-corpus") + 1])
        out.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds()):
            (out / f"seed-{i}").write_bytes(seed)
        return 0
    if "--hypothesis" in argv or atheris is None:
        seconds = float(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 10.0
        return _hypothesis_main(seconds)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
