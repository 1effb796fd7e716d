"""The workspace messages (PROTOCOL.md §5.16, §5.17) and the CI fields of a submission:
their order, from both sides, and the cross-field rules."""

from __future__ import annotations

import pytest
from protocol_helpers import handshake, submit, transfer
from test_protocol_state import remote_error

from sandboxd_protocol import (
    NEED_DATA,
    Cancellation,
    EndOfWorkspace,
    JobResult,
    JobSubmission,
    LocalProtocolError,
    SizeLimits,
    State,
    StepResult,
    WorkspaceChunk,
)
from sandboxd_protocol._errors import Invalid
from sandboxd_protocol._schema import decode_message, encode_message

OK = StepResult(verdict="ok", exit_code=0)


def test_chunks_then_the_end_then_nothing_more() -> None:
    client, server = handshake()
    submit(client, server, "w", workspace="gzip", accept=False)
    chunk = WorkspaceChunk(id="w", data=b"x")
    assert transfer(client, server, chunk) == chunk  # before accepted: fine
    assert transfer(client, server, EndOfWorkspace(id="w")) == EndOfWorkspace(id="w")
    with pytest.raises(LocalProtocolError):
        client.send(WorkspaceChunk(id="w", data=b"late"))
    assert remote_error(server, WorkspaceChunk(id="w", data=b"y")).code == "unexpected_message"


def test_no_chunks_for_a_job_without_a_workspace() -> None:
    client, server = handshake()
    submit(client, server, "a")
    with pytest.raises(LocalProtocolError):
        client.send(WorkspaceChunk(id="a", data=b"x"))
    assert remote_error(server, WorkspaceChunk(id="a", data=b"x")).code == "unexpected_message"


def test_cancel_while_uploading() -> None:
    client, server = handshake()
    submit(client, server, "w", workspace="tar")
    transfer(client, server, WorkspaceChunk(id="w", data=b"x"))
    assert transfer(client, server, Cancellation(id="w")) == Cancellation(id="w")
    with pytest.raises(LocalProtocolError):
        client.send(EndOfWorkspace(id="w"))


def test_chunks_crossing_the_servers_refusal_are_dropped() -> None:
    client, server = handshake()
    submit(client, server, "w", workspace="gzip")
    late = client.send(WorkspaceChunk(id="w", data=b"x")) + client.send(EndOfWorkspace(id="w"))
    answer = server.send(JobResult(id="w", steps=(OK,)))
    server.receive_data(late)
    assert server.next_event() is NEED_DATA  # stale: dropped
    client.receive_data(answer)
    assert isinstance(client.next_event(), JobResult)
    assert client.our_state is State.READY


@pytest.mark.parametrize(("fields", "where"), [
    ({"workspace": "zip"}, "workspace"),
    ({"workspace": "gzip", "interactive_stdin": True}, "workspace"),
    ({"caches": ["Bad Name"]}, "caches"),
    ({"artifacts": ["../x"]}, "artifacts[0]"),
    ({"artifacts": ["/etc/passwd"]}, "artifacts[0]"),
    ({"artifacts": [""]}, "artifacts[0]"),
])
def test_bad_ci_fields_are_refused(fields: dict, where: str) -> None:
    msg = {"type": "submit", "id": "j", "profile": "bash", **fields}
    with pytest.raises(Invalid) as info:
        decode_message(msg, SizeLimits())
    assert where in str(info.value)


def test_the_ci_fields_round_trip() -> None:
    sub = JobSubmission(id="j", profile="bash", workspace="gzip", caches=("wheels",),
                        artifacts=("reports/**/*.xml",))
    assert decode_message(encode_message(sub, SizeLimits()), SizeLimits()) == sub
    r = StepResult(verdict="ok", artifacts={"a.xml": b"<x/>"}, artifacts_truncated=True)
    assert decode_message(encode_message(JobResult(id="j", steps=(r,)), SizeLimits()),
                          SizeLimits()).steps[0] == r
