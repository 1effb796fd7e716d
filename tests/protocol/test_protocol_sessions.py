"""Arbitrary valid conversations keep both sides in agreement.

A hypothesis state machine plays a client and a server that only ever send
what their own ``Connection`` allows, over two wires that deliver bytes late
and in arbitrary pieces (so stdin and cancels cross results, as on a real
socket). Invariants: no protocol error is ever raised; each side receives,
in order, what the other sent, except stale messages the rules say to drop;
and once both wires are empty the two ``Connection`` objects agree on every
state and every job in flight.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from protocol_helpers import drain, handshake, step_results, submissions

from sandboxd_protocol import (
    CLIENT,
    SERVER,
    STREAMS,
    Cancellation,
    Connection,
    EndOfStdin,
    ErrorCode,
    ErrorReport,
    Event,
    Goodbye,
    JobAcceptance,
    JobList,
    JobListRequest,
    JobResult,
    JobState,
    OutputChunk,
    Ping,
    Pong,
    ServerStats,
    State,
    StatsRequest,
    StdinChunk,
)

STALE_TYPES = (StdinChunk, EndOfStdin, Cancellation)


class Wire:
    """Bytes and the events they carry, from one sender to one receiver."""

    def __init__(self, sender: Connection, receiver: Connection) -> None:
        self.sender = sender
        self.receiver = receiver
        self.pending = b""
        self.sent: list[Event] = []
        self.received: list[Event] = []

    def send(self, event: Event) -> None:
        data = self.sender.send(event)
        if data:
            self.sent.append(event)
            self.pending += data

    def deliver(self, n: int) -> None:
        chunk, self.pending = self.pending[:n], self.pending[n:]
        if not chunk:
            return  # b"" would mean end of stream
        self.receiver.receive_data(chunk)
        self.received.extend(drain(self.receiver))

    def check_order(self) -> None:
        """What arrived is what was sent, in order, minus droppable stale messages."""
        it = iter(self.sent)
        for got in self.received:
            for sent in it:
                if sent == got:
                    break
                assert isinstance(sent, STALE_TYPES), f"{sent} was lost"
            else:
                raise AssertionError(f"{got} was never sent")


def jobs(conn: Connection) -> dict[str, Any]:
    return conn._machine.jobs  # the tests may look inside


class Conversation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.client, self.server = handshake()
        self.up = Wire(self.client, self.server)
        self.down = Wire(self.server, self.client)
        self.counter = 0

    # -- the client ------------------------------------------------------------

    @precondition(lambda self: self.client.our_state is State.READY and len(jobs(self.client)) < 20)
    @rule(sub=submissions(job_id=st.sampled_from([f"j{i}" for i in range(6)])))
    def submit(self, sub: Any) -> None:
        if sub.id not in jobs(self.client):
            self.up.send(sub)

    def _client_jobs(self, *states: JobState) -> list[str]:
        return sorted(i for i, j in jobs(self.client).items() if j.client in states)

    @precondition(lambda self: self.client.our_state is State.READY)
    @rule(data=st.data(), payload=st.binary(max_size=8), end=st.booleans())
    def stdin(self, data: st.DataObject, payload: bytes, end: bool) -> None:
        ids = self._client_jobs(JobState.STDIN_OPEN)
        if ids:
            job_id = data.draw(st.sampled_from(ids))
            self.up.send(EndOfStdin(id=job_id) if end else StdinChunk(id=job_id, data=payload))

    @precondition(lambda self: self.client.our_state is State.READY)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        ids = self._client_jobs(JobState.STDIN_OPEN, JobState.SUBMITTED)
        if ids:
            self.up.send(Cancellation(id=data.draw(st.sampled_from(ids))))

    @precondition(lambda self: self.client.our_state is State.READY)
    @rule(kind=st.sampled_from(["ping", "list", "stats"]), nonce=st.integers(0, 2**64 - 1))
    def client_request(self, kind: str, nonce: int) -> None:
        if sum(len(q) for q in self.client._machine.owed[SERVER].values()) >= 8:
            return
        event = {"ping": Ping(nonce=nonce), "list": JobListRequest(), "stats": StatsRequest()}
        self.up.send(event[kind])

    # -- the server -----------------------------------------------------------------

    def _server_jobs(self, *states: JobState) -> list[str]:
        return sorted(i for i, j in jobs(self.server).items() if j.server in states)

    @rule(data=st.data())
    def accept(self, data: st.DataObject) -> None:
        ids = self._server_jobs(JobState.PENDING)
        if ids:
            self.down.send(JobAcceptance(id=data.draw(st.sampled_from(ids))))

    @rule(data=st.data(), payload=st.binary(max_size=8), stream=st.sampled_from(STREAMS))
    def output(self, data: st.DataObject, payload: bytes, stream: str) -> None:
        ids = [i for i in self._server_jobs(JobState.RUNNING) if jobs(self.server)[i].stream]
        if ids:
            job_id = data.draw(st.sampled_from(ids))
            job = jobs(self.server)[job_id]
            step = data.draw(st.integers(0, job.steps - 1))
            self.down.send(
                OutputChunk(id=job_id, stream=stream, data=payload, seq=job.seq, step=step)
            )

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        ids = self._server_jobs(JobState.RUNNING)
        if ids:
            job_id = data.draw(st.sampled_from(ids))
            n = data.draw(st.integers(0, jobs(self.server)[job_id].steps))
            steps = tuple(data.draw(step_results()) for _ in range(n))
            self.down.send(JobResult(id=job_id, steps=steps))

    @rule(data=st.data(), code=st.sampled_from([ErrorCode.SERVER_BUSY, ErrorCode.INTERNAL_ERROR]))
    def refuse(self, data: st.DataObject, code: ErrorCode) -> None:
        ids = self._server_jobs(JobState.PENDING, JobState.RUNNING)
        if ids:
            self.down.send(ErrorReport(code=code, message="no", id=data.draw(st.sampled_from(ids))))

    @rule()
    def answer(self) -> None:
        owed = self.server._machine.owed[SERVER]  # what the server was asked
        if owed["ping"]:
            self.down.send(Pong(nonce=owed["ping"][0]))
        elif owed["list_jobs"]:
            self.down.send(JobList())
        elif owed["get_stats"]:
            self.down.send(ServerStats(uptime=1.0))

    @rule(nonce=st.integers(0, 100))
    def server_ping(self, nonce: int) -> None:
        if not self.server._machine.owed[CLIENT]["ping"]:
            self.down.send(Ping(nonce=nonce))

    @rule()
    def client_pong(self) -> None:
        owed = self.client._machine.owed[CLIENT]["ping"]
        if owed and self.client.our_state is State.READY:
            self.up.send(Pong(nonce=owed[0]))

    # -- the wires ----------------------------------------------------------------------

    @rule(n=st.integers(1, 400))
    def deliver_up(self, n: int) -> None:
        self.up.deliver(n)

    @rule(n=st.integers(1, 400))
    def deliver_down(self, n: int) -> None:
        self.down.deliver(n)

    @rule()
    def flush(self) -> None:
        self.up.deliver(len(self.up.pending))
        self.down.deliver(len(self.down.pending))

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def in_order(self) -> None:
        self.up.check_order()
        self.down.check_order()

    @invariant()
    def agree_when_quiet(self) -> None:
        if self.up.pending or self.down.pending:
            return
        assert self.client.states == self.server.states
        assert set(self.client.jobs_in_flight) == set(self.server.jobs_in_flight)
        for job_id, job in jobs(self.client).items():
            other = jobs(self.server)[job_id]
            assert (job.client, job.server, job.seq) == (other.client, other.server, other.seq)

    def teardown(self) -> None:
        """Close cleanly: answer everything, then goodbye both ways."""
        if self.client.our_state is not State.READY:
            return
        self.flush()

        def owing() -> bool:
            sides = (self.client, self.server)
            return any(q for m in sides for q in m._machine.owed[m.our_role].values())

        while owing():
            self.answer()
            self.client_pong()
            self.flush()
        for job_id in list(self.server.jobs_in_flight):
            self.down.send(ErrorReport(code=ErrorCode.SHUTTING_DOWN, id=job_id))
        self.flush()
        self.client_pong()
        self.flush()
        self.up.send(Goodbye())
        self.flush()
        self.down.send(Goodbye())
        self.flush()
        assert (
            self.client.states
            == self.server.states
            == {
                CLIENT: State.CLOSED,
                SERVER: State.CLOSED,
            }
        )
        assert not self.client.jobs_in_flight


Conversation.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_conversations = Conversation.TestCase
