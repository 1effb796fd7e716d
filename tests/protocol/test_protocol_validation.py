"""Every field is checked: types, ranges, sizes, path names; errors name the field."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from protocol_helpers import handshake, submit

from sandboxd_protocol import (
    CLIENT,
    SERVER,
    Connection,
    JobLimits,
    JobResult,
    JobSubmission,
    LocalProtocolError,
    RemoteProtocolError,
    SizeLimits,
    StepResult,
    TestCase,
)


def frame(message: Any) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def server_error(message: Any, limits: SizeLimits | None = None) -> RemoteProtocolError:
    """What a READY server raises for ``message`` from the client."""
    _, server = handshake(limits)
    server.receive_data(message if isinstance(message, bytes) else frame(message))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    return info.value


def server_accepts(message: dict[str, Any]) -> Any:
    _, server = handshake()
    server.receive_data(frame(message))
    return server.next_event()


def sub(**fields: Any) -> dict[str, Any]:
    return {"type": "submit", "id": "j1", "profile": "python3", **fields}


# -- file names ----------------------------------------------------------------------------

BAD_PATHS = {
    "": "must not be empty",
    "/etc/passwd": "relative",
    "..": "'..' component",
    "a/../../b": "'..' component",
    ".": "'.' or '..'",
    "a//b": "empty",
    "a/": "empty",
    "./a": "'.'",
    "a\x00b": "NUL",
    "x" * 256: "at most 255 bytes",
    "é" * 128: "at most 255 bytes",  # 256 bytes of UTF-8 in 128 characters
}


@pytest.mark.parametrize("path", list(BAD_PATHS))
def test_bad_paths_are_refused_both_ways(path: str) -> None:
    err = server_error(sub(files={path: b""}))
    assert err.code == "invalid_field"
    assert f"submit.files[{path!r}]" in str(err)
    assert BAD_PATHS[path] in str(err)
    client, _ = handshake()
    with pytest.raises(LocalProtocolError, match=r"submit\.files"):
        client.send(JobSubmission(id="j1", profile="p", files={path: b""}))


@pytest.mark.parametrize("path", ["main.py", "src/a/b.c", "x" * 255, "é" * 127, ".hidden", "a..b"])
def test_good_paths_pass(path: str) -> None:
    event = server_accepts(sub(files={path: b"x"}))
    assert event.files == {path: b"x"}


def test_a_path_may_not_be_both_file_and_directory() -> None:
    err = server_error(sub(files={"a": b"", "a/b": b""}))
    assert "'a' is both a file and a directory" in str(err)


def test_file_path_must_be_a_string_and_content_bytes() -> None:
    assert "must be a string" in str(server_error(sub(files={b"a": b""})))
    err = server_error(sub(files={"a": "text, not bytes"}))
    assert "submit.files['a']: must be bytes" in str(err)


# -- sizes -----------------------------------------------------------------------------------


def test_file_count_and_sizes_are_capped() -> None:
    lim = SizeLimits(max_files=2, max_file_size=10, max_total_file_size=15)
    assert "at most 2 files" in str(server_error(sub(files={"a": b"", "b": b"", "c": b""}), lim))
    assert "at most 10 bytes, got 11" in str(server_error(sub(files={"a": b"x" * 11}), lim))
    err = server_error(sub(files={"a": b"x" * 8, "b": b"x" * 8}), lim)
    assert "total at most 15 bytes, got 16" in str(err)


def test_stdin_argv_env_tests_are_capped() -> None:
    lim = SizeLimits(max_input=4, max_argv=2, max_arg_length=3, max_env=1, max_tests=2)
    assert "submit.stdin" in str(server_error(sub(stdin=b"12345"), lim))
    assert "submit.argv" in str(server_error(sub(argv=["a", "b", "c"]), lim))
    assert "submit.argv[0]" in str(server_error(sub(argv=["abcd"]), lim))
    assert "submit.env" in str(server_error(sub(env={"A": "1", "B": "2"}), lim))
    assert "submit.tests" in str(server_error(sub(tests=[{}, {}, {}]), lim))
    err = server_error(sub(tests=[{}, {"stdin": b"12345"}]), lim)
    assert "submit.tests[1].stdin" in str(err)


def test_frame_too_large_is_refused_before_the_body_arrives() -> None:
    _, server = handshake(SizeLimits(max_frame_size=1000))
    server.receive_data(struct.pack(">I", 1001))  # only the prefix
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == "frame_too_large"
    assert "1001" in str(info.value)


def test_our_own_frame_too_large_is_a_local_error() -> None:
    client, _ = handshake(SizeLimits(max_frame_size=1000))
    with pytest.raises(LocalProtocolError) as info:
        client.send(JobSubmission(id="j", profile="p", stdin=b"x" * 2000))
    assert info.value.code == "frame_too_large"


# -- types and ranges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"id": 7}, "submit.id: must be a string"),
        ({"id": ""}, "submit.id: must be 1 to 64"),
        ({"id": "a b"}, "submit.id: must be 1 to 64"),
        ({"id": "x" * 65}, "submit.id: must be 1 to 64"),
        ({"id": "é"}, "submit.id: must be 1 to 64"),
        ({"profile": "../x"}, "submit.profile"),
        ({"stdin": "text"}, "submit.stdin: must be bytes"),
        ({"argv": []}, "submit.argv: must have at least 1"),
        ({"argv": "python3 main.py"}, "submit.argv: must be an array"),
        ({"argv": ["a\x00b"]}, "submit.argv[0]: must not contain NUL"),
        ({"env": {"1BAD": "x"}}, "submit.env key: must be a variable name"),
        ({"env": {"A": 1}}, "submit.env['A']: must be a string"),
        ({"limits": {"cpu_time": 0}}, "submit.limits.cpu_time: must be in (0.0"),
        ({"limits": {"cpu_time": -1.5}}, "submit.limits.cpu_time"),
        ({"limits": {"cpu_time": float("nan")}}, "submit.limits.cpu_time: must be a finite"),
        ({"limits": {"wall_time": float("inf")}}, "submit.limits.wall_time"),
        ({"limits": {"memory": 0}}, "submit.limits.memory: must be in [1"),
        ({"limits": {"memory": 2**64 - 1}}, "submit.limits.memory"),
        ({"limits": {"memory": 1.5}}, "submit.limits.memory: must be an int"),
        ({"limits": {"pids": True}}, "submit.limits.pids: must be an int"),
        ({"limits": []}, "submit.limits: must be a map"),
        ({"cpuset_pin": 1}, "submit.cpuset_pin: must be a bool"),
        ({"compare": "fuzzy"}, "submit.compare: must be one of"),
        ({"float_tolerance": 0.1}, "submit.float_tolerance: is only allowed with compare"),
        ({"tests": [{"repeat": 0}]}, "submit.tests[0].repeat"),
        ({"tests": [{"limits": {"stack": -1}}]}, "submit.tests[0].limits.stack"),
        ({"tests": [{}], "stdin": b"x"}, "submit.stdin: must be empty when tests"),
        ({"tests": [{}], "interactive_stdin": True}, "submit.interactive_stdin"),
        ({"compile": {"argv": [1]}}, "submit.compile.argv[0]: must be a string"),
        ({"stream": "yes"}, "submit.stream: must be a bool"),
    ],
)
def test_wrong_fields_name_themselves(fields: dict[str, Any], where: str) -> None:
    err = server_error(sub(**fields))
    assert err.code == "invalid_field"
    assert where in str(err), str(err)


def test_required_fields() -> None:
    assert "submit.profile: is required" in str(server_error({"type": "submit", "id": "a"}))
    assert "type: is required" in str(server_error({"id": "a"}))
    assert "type: must be a string" in str(server_error({"type": 1}))
    err = server_error({"type": "teleport"})
    assert err.code == "unknown_message" and "teleport" in str(err)


def test_ints_are_accepted_where_floats_are_expected() -> None:
    event = server_accepts(sub(limits={"cpu_time": 2, "wall_time": 2.5}))
    assert event.limits == JobLimits(cpu_time=2.0, wall_time=2.5)
    assert type(event.limits.cpu_time) is float


def test_nil_means_absent() -> None:
    event = server_accepts(sub(stdin=None, argv=None, limits=None, compare=None))
    assert event == JobSubmission(id="j1", profile="python3")


def test_unknown_fields_are_ignored_at_every_level() -> None:
    event = server_accepts(
        sub(
            from_the_future=[1, 2, {"x": b""}],
            limits={"cpu_time": 1.0, "gpu": 1},
            tests=[{"stdin": b"", "weight": 3}],
            more=msgpack.ExtType(5, b"ext"),
        )
    )
    assert event.limits == JobLimits(cpu_time=1.0)
    assert event.tests == (TestCase(),)


def test_step_result_rules() -> None:
    client, server = handshake()
    submit(client, server, "a")
    bad = {"type": "result", "id": "a", "steps": [{"verdict": "time_limit"}]}
    client.receive_data(frame(bad))
    with pytest.raises(RemoteProtocolError, match=r"result.steps\[0\].reason: must be 'cpu'"):
        client.next_event()
    client, server = handshake()
    submit(client, server, "a")
    with pytest.raises(LocalProtocolError, match="sandbox_error"):
        server.send(JobResult(id="a", steps=(StepResult(verdict="sandbox_error"),)))


@pytest.mark.parametrize(
    "body",
    [
        b"\x93\x01\x02\x03",  # an array, not a map
        b"\x81\xa4type\xa5hello\xc0",  # a map followed by trailing bytes
        b"\x81\xa4type\xa5hell",  # truncated string
        b"\x81\xa4type\xa2\xff\xfe",  # invalid UTF-8
        b"\x81\x01\x02",  # an int key
        b"\xc1",  # the never-used byte
        b"\xa5hello",  # a string
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    err = server_error(struct.pack(">I", len(body)) + body)
    assert err.code in {"malformed", "invalid_field"}


def test_empty_frame_is_malformed() -> None:
    assert server_error(b"\x00\x00\x00\x00").code == "malformed"


# -- our own sends ---------------------------------------------------------------------


def test_send_refuses_unencodable_text_and_nil_defaults() -> None:
    client, _ = handshake()
    with pytest.raises(LocalProtocolError, match="surrogates"):
        client.send(JobSubmission(id="j", profile="p", argv=("\udc80",)))
    client, _ = handshake()
    with pytest.raises(LocalProtocolError, match=r"submit.compare: must not be None"):
        client.send(JobSubmission(id="j", profile="p", compare=None))  # type: ignore[arg-type]
    client, _ = handshake()
    with pytest.raises(LocalProtocolError, match="must be a JobLimits"):
        client.send(JobSubmission(id="j", profile="p", limits={"cpu_time": 1}))  # type: ignore[arg-type]


def test_send_accepts_lists_and_bytearrays() -> None:
    client, server = handshake()
    event = JobSubmission(
        id="j", profile="p", argv=["a", "b"], files={"f": bytearray(b"x")}, stdin=bytearray(b"y")
    )  # type: ignore[arg-type]
    server.receive_data(client.send(event))
    got = server.next_event()
    assert isinstance(got, JobSubmission)
    assert got.argv == ("a", "b") and got.files == {"f": b"x"} and got.stdin == b"y"


def test_connection_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        Connection("client")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_files"):
        SizeLimits(max_files=0)
    Connection(CLIENT, limits=SizeLimits(max_frame_size=2**32 - 1))
    with pytest.raises(ValueError, match="max_frame_size"):
        Connection(SERVER, limits=SizeLimits(max_frame_size=2**32))
