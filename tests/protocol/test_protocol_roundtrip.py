"""Every event survives send → bytes → receive_data → next_event unchanged."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from protocol_helpers import all_event_types, drain, events, feed_bytewise, prepare
from sandboxd_protocol import MESSAGE_TYPES, TYPE_NAMES, Event


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
