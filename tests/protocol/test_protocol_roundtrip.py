"""Every event survives send → bytes → receive_data → next_event unchanged."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_helpers import (
    all_event_types,
    drain,
    events,
    feed_bytewise,
    feed_whole,
    handshake,
    prepare,
    step_results,
    submissions,
)

from sandboxd_protocol import (
    MESSAGE_TYPES,
    TYPE_NAMES,
    Event,
    JobAcceptance,
    JobList,
    JobListRequest,
    JobResult,
    JobSubmission,
    OutputChunk,
    Ping,
    Pong,
    StepResult,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_every_event_round_trips(event: Event) -> None:
    sender, receiver, event = prepare(event)
    data = sender.send(event)
    receiver.receive_data(data)
    assert drain(receiver) == [event]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_every_event_round_trips_one_byte_at_a_time(event: Event) -> None:
    sender, receiver, event = prepare(event)
    data = sender.send(event)
    got, error = feed_bytewise(receiver, data)
    assert error is None
    assert got == [event]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_encoding_is_deterministic(event: Event) -> None:
    """Two connections in the same state write the same bytes for the same event."""
    a, _, event_a = prepare(event)
    b, _, event_b = prepare(event)
    assert a.send(event_a) == b.send(event_b)


def test_the_strategy_covers_every_message_type() -> None:
    assert set(all_event_types()) == set(MESSAGE_TYPES.values())
    assert {TYPE_NAMES[t] for t in MESSAGE_TYPES.values()} == set(MESSAGE_TYPES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(submissions(), max_size=5, unique_by=lambda s: s.id),
    st.lists(step_results(), min_size=1, max_size=3),
    st.integers(0, 2**64 - 1),
)
def test_a_conversation_fed_whole_or_bytewise_gives_the_same_events(
    subs: list[JobSubmission], results: list[StepResult], nonce: int
) -> None:
    """Both directions of a conversation, each fed in one piece and one byte at a time."""
    up: list[Event] = [*subs, Ping(nonce=nonce), JobListRequest()]
    client, server = handshake()
    up_bytes = b"".join(client.send(e) for e in up)
    server.receive_data(up_bytes)
    assert drain(server) == up
    down: list[Event] = []
    for sub in subs:
        n = len(sub.tests) if sub.tests else 1
        down.append(JobAcceptance(id=sub.id))
        if sub.stream:
            down.append(OutputChunk(id=sub.id, stream="stdout", data=b"x", seq=0, step=n - 1))
        down.append(JobResult(id=sub.id, steps=tuple(results[:n])))
    down += [Pong(nonce=nonce), JobList()]
    down_bytes = b"".join(server.send(e) for e in down)
    for receiver, data, expected in ((0, up_bytes, up), (1, down_bytes, down)):
        pair_a, pair_b = handshake(), handshake()
        if receiver == 1:  # the client side must have sent what the server answers
            for pair in (pair_a, pair_b):
                pair[1].receive_data(b"".join(pair[0].send(e) for e in up))
                drain(pair[1])
        whole = feed_whole(pair_a[1 - receiver], data)
        pieces = feed_bytewise(pair_b[1 - receiver], data)
        assert whole == pieces == (expected, None)
