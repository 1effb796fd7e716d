"""The ordering rules of ``_state.py``, each seen from both sides."""

from __future__ import annotations

import pytest
from protocol_helpers import drain, handshake, submit, transfer

from sandboxd_protocol import (
    CLIENT,
    NEED_DATA,
    SERVER,
    Cancellation,
    Connection,
    ConnectionClosed,
    EndOfStdin,
    ErrorCode,
    ErrorReport,
    Goodbye,
    Hello,
    JobAcceptance,
    JobInfo,
    JobList,
    JobListRequest,
    JobResult,
    JobSubmission,
    KillRequest,
    KillResult,
    LocalProtocolError,
    OutputChunk,
    Ping,
    Pong,
    RemoteProtocolError,
    ServerStats,
    SizeLimits,
    State,
    StatsRequest,
    StdinChunk,
    StepResult,
    TestCase,
    Welcome,
)
from sandboxd_protocol._framing import encode_frame
from sandboxd_protocol._schema import encode_message

LIM = SizeLimits()


def raw(event: object) -> bytes:
    """The frame for ``event``, bypassing any state check (to play a misbehaving peer)."""
    return encode_frame(encode_message(event, LIM))


def remote_error(conn: Connection, event: object) -> RemoteProtocolError:
    conn.receive_data(raw(event))
    with pytest.raises(RemoteProtocolError) as info:
        drain(conn)
    return info.value


OK = StepResult(verdict="ok", exit_code=0)

# -- handshake ---------------------------------------------------------------------


def test_handshake_moves_both_sides_to_ready() -> None:
    client, server = handshake()
    for conn in (client, server):
        assert conn.states == {CLIENT: State.READY, SERVER: State.READY}
        assert conn.version == 1
    assert client.peer_limits == server.limits


def test_client_must_say_hello_first() -> None:
    client = Connection(CLIENT)
    with pytest.raises(LocalProtocolError) as info:
        client.send(JobSubmission(id="a", profile="p"))
    assert info.value.code == "unexpected_message"
    err = remote_error(Connection(SERVER), JobSubmission(id="a", profile="p"))
    assert err.code == "unexpected_message"
    assert "client may not send 'submit' in state START" in str(err)


def test_client_waits_for_welcome_before_submitting() -> None:
    client, server = Connection(CLIENT), Connection(SERVER)
    transfer(client, server, Hello())
    with pytest.raises(LocalProtocolError):
        client.send(JobSubmission(id="a", profile="p"))
    assert remote_error(server, JobSubmission(id="a", profile="p")).code == "unexpected_message"


def test_server_may_not_welcome_before_hello() -> None:
    with pytest.raises(LocalProtocolError) as info:
        Connection(SERVER).send(Welcome())
    assert "HANDSHAKE" in str(info.value)
    assert remote_error(Connection(CLIENT), Welcome()).code == "unexpected_message"


def test_welcome_version_must_not_exceed_hello() -> None:
    client, server = Connection(CLIENT), Connection(SERVER)
    transfer(client, server, Hello(version=1))
    with pytest.raises(LocalProtocolError) as info:
        server.send(Welcome(version=2))
    assert info.value.code == "unsupported_version"
    client2, server2 = Connection(CLIENT), Connection(SERVER)
    transfer(client2, server2, Hello(version=1))
    assert remote_error(client2, Welcome(version=2)).code == "unsupported_version"


def test_newer_client_gets_the_version_we_speak() -> None:
    client, server = Connection(CLIENT), Connection(SERVER)
    hello = transfer(client, server, Hello(version=7))
    assert isinstance(hello, Hello) and hello.version == 7
    transfer(server, client, Welcome(version=1))
    assert client.version == server.version == 1


def test_server_may_refuse_a_hello_with_an_error() -> None:
    client, server = Connection(CLIENT), Connection(SERVER)
    transfer(client, server, Hello(token="wrong"))
    report = ErrorReport(code=ErrorCode.UNAUTHORIZED, message="bad token")
    assert transfer(server, client, report) == report
    assert client.their_state is State.CLOSED


def test_welcome_must_carry_the_servers_own_limits() -> None:
    client, server = Connection(CLIENT), Connection(SERVER, limits=SizeLimits(max_files=5))
    transfer(client, server, Hello())
    with pytest.raises(LocalProtocolError, match=r"welcome\.limits"):
        server.send(Welcome())


def test_client_adopts_the_servers_smaller_limits() -> None:
    client, _server = handshake(server_limits=SizeLimits(max_files=2))
    with pytest.raises(LocalProtocolError, match=r"at most 2 files"):
        client.send(JobSubmission(id="a", profile="p", files={"a": b"", "b": b"", "c": b""}))


# -- jobs ----------------------------------------------------------------------------


def test_duplicate_job_id_is_refused_while_in_flight() -> None:
    client, server = handshake()
    submit(client, server, "a")
    with pytest.raises(LocalProtocolError) as info:
        client.send(JobSubmission(id="a", profile="p"))
    assert info.value.code == "duplicate_job"
    assert remote_error(server, JobSubmission(id="a", profile="p")).code == "duplicate_job"


def test_job_id_is_free_again_after_its_result() -> None:
    client, server = handshake()
    submit(client, server, "a")
    transfer(server, client, JobResult(id="a", steps=(OK,)))
    assert "a" not in client.jobs_in_flight and "a" not in server.jobs_in_flight
    submit(client, server, "a")
    assert "a" in client.jobs_in_flight


def test_many_jobs_in_flight_are_told_apart() -> None:
    client, server = handshake()
    for i in range(5):
        submit(client, server, f"job-{i}", accept=False, stream=True)
    for i in (3, 1, 4, 0, 2):
        transfer(server, client, JobAcceptance(id=f"job-{i}"))
    for i in (4, 0):
        transfer(server, client, OutputChunk(id=f"job-{i}", stream="stdout", data=b"x", seq=0))
    for i in (2, 4, 0, 1, 3):
        got = transfer(server, client, JobResult(id=f"job-{i}", steps=(OK,)))
        assert isinstance(got, JobResult) and got.id == f"job-{i}"
    assert not client.jobs_in_flight and not server.jobs_in_flight


def test_result_for_unknown_job_is_a_protocol_error() -> None:
    client, server = handshake()
    with pytest.raises(LocalProtocolError) as info:
        server.send(JobResult(id="nope", steps=(OK,)))
    assert info.value.code == "unknown_job"
    err = remote_error(client, JobResult(id="nope", steps=(OK,)))
    assert err.code == "unknown_job" and "'nope'" in str(err)


def test_result_before_acceptance_is_out_of_order() -> None:
    client, server = handshake()
    submit(client, server, "a", accept=False)
    with pytest.raises(LocalProtocolError) as info:
        server.send(JobResult(id="a", steps=(OK,)))
    assert info.value.code == "unexpected_message"
    assert remote_error(client, JobResult(id="a")).code == "unexpected_message"


def test_acceptance_twice_is_out_of_order() -> None:
    client, server = handshake()
    submit(client, server, "a")
    assert remote_error(client, JobAcceptance(id="a")).code == "unexpected_message"


def test_server_may_refuse_a_job_with_a_job_scoped_error() -> None:
    client, server = handshake()
    submit(client, server, "a", accept=False)
    report = ErrorReport(code=ErrorCode.UNKNOWN_PROFILE, message="no such profile", id="a")
    assert report.job_scoped
    assert transfer(server, client, report) == report
    assert not client.jobs_in_flight
    assert client.their_state is State.READY  # only the job ended


def test_protocol_error_code_with_id_is_still_fatal() -> None:
    report = ErrorReport(code=ErrorCode.INVALID_FIELD, message="x", id="a")
    assert not report.job_scoped
    client, server = handshake()
    transfer(server, client, report)
    assert client.their_state is State.CLOSED


def test_client_may_not_send_job_scoped_errors() -> None:
    client, server = handshake()
    submit(client, server, "a")
    with pytest.raises(LocalProtocolError):
        client.send(ErrorReport(code=ErrorCode.INTERNAL_ERROR, id="a"))


def test_output_only_for_streaming_jobs_and_in_sequence() -> None:
    client, server = handshake()
    submit(client, server, "quiet")
    with pytest.raises(LocalProtocolError, match="stream=true"):
        server.send(OutputChunk(id="quiet", stream="stdout", data=b"", seq=0))

    client, server = handshake()
    submit(client, server, "loud", stream=True)
    transfer(server, client, OutputChunk(id="loud", stream="stdout", data=b"a", seq=0))
    transfer(server, client, OutputChunk(id="loud", stream="stderr", data=b"b", seq=1))
    with pytest.raises(LocalProtocolError) as info:
        server.send(OutputChunk(id="loud", stream="stdout", data=b"c", seq=3))
    assert info.value.code == "bad_sequence"
    err = remote_error(client, OutputChunk(id="loud", stream="stdout", data=b"c", seq=1))
    assert err.code == "bad_sequence" and "expected seq 2" in str(err)


def test_output_and_results_may_not_name_steps_the_job_lacks() -> None:
    client, server = handshake()
    submit(client, server, "a", stream=True, tests=[TestCase(), TestCase()])
    transfer(server, client, OutputChunk(id="a", stream="stdout", data=b"", seq=0, step=1))
    with pytest.raises(LocalProtocolError, match="2 step"):
        server.send(OutputChunk(id="a", stream="stdout", data=b"", seq=1, step=2))
    client, server = handshake()
    submit(client, server, "a")
    assert remote_error(client, JobResult(id="a", steps=(OK, OK))).code == "invalid_field"


def test_stdin_only_for_interactive_jobs_and_not_after_its_end() -> None:
    client, server = handshake()
    submit(client, server, "a")
    with pytest.raises(LocalProtocolError):
        client.send(StdinChunk(id="a", data=b"x"))

    client, server = handshake()
    submit(client, server, "b", interactive_stdin=True, accept=False)
    transfer(client, server, StdinChunk(id="b", data=b"x"))  # before acceptance is fine
    transfer(client, server, EndOfStdin(id="b"))
    assert remote_error(server, StdinChunk(id="b", data=b"y")).code == "unexpected_message"


def test_cancel_then_the_server_still_answers() -> None:
    client, server = handshake()
    submit(client, server, "a")
    assert transfer(client, server, Cancellation(id="a")) == Cancellation(id="a")
    cancelled = StepResult(verdict="cancelled")
    transfer(server, client, JobResult(id="a", steps=(cancelled,)))
    assert not client.jobs_in_flight


def test_cancel_twice_is_out_of_order() -> None:
    client, server = handshake()
    submit(client, server, "a")
    transfer(client, server, Cancellation(id="a"))
    assert remote_error(server, Cancellation(id="a")).code == "unexpected_message"
    with pytest.raises(LocalProtocolError):
        client.send(Cancellation(id="a"))


def test_stale_cancel_and_stdin_after_the_result_are_dropped_on_both_sides() -> None:
    client, server = handshake()
    submit(client, server, "a", interactive_stdin=True)
    # The client sends stdin and a cancel while the server's result is on the wire.
    late = client.send(StdinChunk(id="a", data=b"x")) + client.send(Cancellation(id="a"))
    server_result = server.send(JobResult(id="a", steps=(OK,)))
    server.receive_data(late)
    assert server.next_event() is NEED_DATA  # stale: dropped, not an error
    client.receive_data(server_result)
    assert isinstance(client.next_event(), JobResult)
    # The client's own late sends are no-ops rather than errors.
    assert client.send(EndOfStdin(id="a")) == b""
    assert client.our_state is State.READY


def test_stdin_for_a_job_never_submitted_is_an_error() -> None:
    _client, server = handshake()
    assert remote_error(server, StdinChunk(id="ghost", data=b"")).code == "unknown_job"


def test_too_many_jobs_in_flight() -> None:
    limits = SizeLimits(max_jobs_in_flight=2)
    client, server = handshake(limits)
    submit(client, server, "a")
    submit(client, server, "b")
    with pytest.raises(LocalProtocolError) as info:
        client.send(JobSubmission(id="c", profile="p"))
    assert info.value.code == "too_many_jobs"
    assert remote_error(server, JobSubmission(id="c", profile="p")).code == "too_many_jobs"


# -- requests and answers --------------------------------------------------------------


def test_requests_are_answered_in_order() -> None:
    client, server = handshake()
    transfer(client, server, Ping(nonce=1))
    transfer(client, server, Ping(nonce=2))
    transfer(client, server, JobListRequest())
    transfer(client, server, StatsRequest())
    transfer(server, client, ServerStats(uptime=1.0))
    transfer(server, client, JobList())
    with pytest.raises(LocalProtocolError, match="oldest ping, nonce 1"):
        server.send(Pong(nonce=2))


def test_answers_without_requests_are_errors() -> None:
    client, server = handshake()
    assert remote_error(client, Pong(nonce=1)).code == "unexpected_message"
    client, server = handshake()
    assert remote_error(client, JobList()).code == "unexpected_message"
    client, server = handshake()
    with pytest.raises(LocalProtocolError):
        server.send(ServerStats())


def test_kill_is_answered_in_order_by_its_reference() -> None:
    """``kill`` is a request like ``list_jobs``; its answer echoes the reference it answers."""
    client, server = handshake()
    ref = "12/" + "j" * 64  # a connection number before a 64-character job id
    transfer(client, server, KillRequest(job=ref))
    transfer(client, server, KillRequest(job="3/b"))
    with pytest.raises(LocalProtocolError, match="oldest kill"):
        server.send(KillResult(job="3/b"))
    client, server = handshake()
    transfer(client, server, KillRequest(job=ref))
    assert remote_error(client, KillResult(job="3/b")).code == "unexpected_message"
    client, server = handshake()
    transfer(client, server, KillRequest(job=ref))
    assert transfer(server, client, KillResult(job=ref, found=True)) == KillResult(
        job=ref, found=True
    )
    assert remote_error(client, KillResult(job=ref)).code == "unexpected_message"


def test_a_kill_after_the_server_closed_is_dropped() -> None:
    client, server = handshake()
    transfer(server, client, Goodbye())
    server.receive_data(raw(KillRequest(job="1/a")))
    assert drain(server) == []
    with pytest.raises(LocalProtocolError, match="has closed"):
        client.send(KillRequest(job="1/a"))


def test_job_references_are_longer_than_job_ids() -> None:
    client, server = handshake()
    transfer(client, server, JobListRequest())
    listed = JobList(jobs=(JobInfo(id="9/" + "x" * 126, profile="c", state="running"),))
    assert transfer(server, client, listed) == listed
    client, server = handshake()
    transfer(client, server, JobListRequest())
    too_long = {"type": "job_list", "jobs": [{"id": "x" * 129, "profile": "c", "state": "queued"}]}
    client.receive_data(encode_frame(too_long))
    with pytest.raises(RemoteProtocolError) as info:
        drain(client)
    err = info.value
    assert err.code == "invalid_field" and "job_list.jobs[0].id" in err.message
    with pytest.raises(LocalProtocolError, match="1 to 64"):
        handshake()[0].send(JobSubmission(id="x" * 65, profile="c"))


def test_check_names_the_field_and_leaves_the_connection_usable() -> None:
    """A client checks a submission built from user input without risking its connection."""
    client, server = handshake()
    bad = JobSubmission(id="a", profile="c", files={"../x": b""})
    with pytest.raises(LocalProtocolError, match=r"submit\.files\['\.\./x'\]") as info:
        client.check(bad)
    assert info.value.code == "invalid_field"
    assert client.error is None and client.our_state is State.READY
    client.check(JobSubmission(id="a", profile="c"))  # a good one passes
    submit(client, server, "a")  # and the connection still works


def test_server_may_ping_too() -> None:
    client, server = handshake()
    transfer(server, client, Ping(nonce=9))
    assert transfer(client, server, Pong(nonce=9)) == Pong(nonce=9)


def test_too_many_unanswered_requests() -> None:
    client, server = handshake(SizeLimits(max_pending_requests=3))
    for i in range(3):
        transfer(client, server, Ping(nonce=i))
    with pytest.raises(LocalProtocolError) as info:
        client.send(Ping(nonce=3))
    assert info.value.code == "too_many_requests"
    assert remote_error(server, Ping(nonce=3)).code == "too_many_requests"


# -- goodbye and closing ------------------------------------------------------------------


def test_server_says_goodbye_only_after_answering_every_job() -> None:
    client, server = handshake()
    submit(client, server, "a")
    with pytest.raises(LocalProtocolError, match="1 job"):
        server.send(Goodbye())
    client, server = handshake()
    transfer(client, server, Ping(nonce=1))
    with pytest.raises(LocalProtocolError, match="ping"):
        server.send(Goodbye())


def test_graceful_close_client_first() -> None:
    client, server = handshake()
    submit(client, server, "a")
    transfer(client, server, Goodbye(reason="done"))
    transfer(server, client, JobResult(id="a", steps=(OK,)))  # results still flow
    transfer(server, client, Goodbye())
    assert client.states == server.states == {CLIENT: State.CLOSED, SERVER: State.CLOSED}
    client.receive_data(b"")
    assert isinstance(client.next_event(), ConnectionClosed)


def test_nothing_but_answers_come_after_goodbye() -> None:
    client, server = handshake()
    transfer(client, server, Goodbye())
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        client.send(Ping(nonce=1))
    assert remote_error(server, Ping(nonce=1)).code == "unexpected_message"


def test_requests_that_cross_the_servers_goodbye_are_dropped() -> None:
    client, server = handshake()
    late = client.send(JobSubmission(id="late", profile="p")) + client.send(Ping(nonce=1))
    bye = server.send(Goodbye(reason="shutting down"))
    server.receive_data(late)
    assert server.next_event() is NEED_DATA  # dropped: the server will not answer
    client.receive_data(bye)
    assert client.next_event() == Goodbye(reason="shutting down")
    assert set(client.jobs_in_flight) == {"late"}  # never seen: safe to resubmit elsewhere
    with pytest.raises(LocalProtocolError, match="has closed"):
        client.send(JobSubmission(id="later", profile="p"))


def test_eof_mid_frame_is_an_error_and_clean_eof_is_an_event() -> None:
    client, server = handshake()
    data = client.send(Ping(nonce=1))
    server.receive_data(data[:5])
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == "malformed"
    client, server = handshake()
    server.receive_data(b"")
    assert isinstance(server.next_event(), ConnectionClosed)
    assert isinstance(server.next_event(), ConnectionClosed)
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"more")


# -- errors are permanent ------------------------------------------------------------------


def test_remote_error_is_permanent_and_allows_one_error_report() -> None:
    client, server = handshake()
    err = remote_error(server, JobResult(id="a"))  # a client may not send results
    assert server.their_state is State.ERROR
    with pytest.raises(RemoteProtocolError) as again:
        server.next_event()
    assert again.value is err
    server.receive_data(client.send(Ping(nonce=1)))  # ignored now
    report = ErrorReport(code=err.code, message=err.message)
    data = server.send(report)
    client.receive_data(data)
    assert client.next_event() == report
    assert client.their_state is State.CLOSED


def test_after_a_remote_error_only_an_error_report_may_be_sent() -> None:
    client, server = handshake()
    transfer(client, server, Ping(nonce=1))
    remote_error(server, JobResult(id="a"))
    with pytest.raises(LocalProtocolError, match="only a fatal ErrorReport"):
        server.send(Pong(nonce=1))


def test_local_error_is_permanent() -> None:
    client, _server = handshake()
    with pytest.raises(LocalProtocolError):
        client.send(JobSubmission(id="a b", profile="p"))
    assert client.our_state is State.ERROR
    with pytest.raises(LocalProtocolError):
        client.send(Ping(nonce=1))
    with pytest.raises(LocalProtocolError):
        client.next_event()


def test_a_refused_send_changes_nothing_before_the_error_state() -> None:
    """The state machine checks everything before applying anything."""
    client, server = handshake()
    submit(client, server, "a", stream=True)
    with pytest.raises(LocalProtocolError):
        server.send(OutputChunk(id="a", stream="stdout", data=b"", seq=5))
    # The job's sequence did not move: the client side still expects 0.
    client.receive_data(raw(OutputChunk(id="a", stream="stdout", data=b"", seq=0)))
    assert isinstance(client.next_event(), OutputChunk)


def test_remote_error_carries_the_job_id_when_readable() -> None:
    _client, server = handshake()
    server.receive_data(raw_map({"type": "submit", "id": "j7", "profile": "../bad"}))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    err = info.value
    assert err.code == "invalid_field" and err.job_id == "j7"
    assert "submit.profile" in str(err)


@pytest.mark.parametrize("sender_role", [CLIENT, SERVER])
def test_error_report_codes_must_be_known_when_sent(sender_role: object) -> None:
    client, server = handshake()
    conn = client if sender_role is CLIENT else server
    with pytest.raises(LocalProtocolError, match="ErrorCode"):
        conn.send(ErrorReport(code="made_up"))


def test_unknown_error_codes_from_a_newer_peer_are_accepted() -> None:
    client, _ = handshake()
    client.receive_data(raw_map({"type": "error", "code": "brand_new_code", "message": "x"}))
    event = client.next_event()
    assert isinstance(event, ErrorReport) and event.code == "brand_new_code"


def raw_map(message: dict[str, object]) -> bytes:
    return encode_frame(message)
