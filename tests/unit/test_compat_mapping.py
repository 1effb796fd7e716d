"""The Judge0 and Piston layers' pure mappings, without a daemon: statuses from verdicts,
units, Ruby's base64, validation messages, semver ranges, Piston's stages and limits."""

from __future__ import annotations

import base64
import signal

import pytest

import sandboxd_protocol as proto
from sandboxd.front.http import judge0, piston
from sandboxd.profiles import load_dir
from sandboxd.result import Result


def result(verdict: str = "ok", reason: str | None = None, exit_code: int | None = 0,
           sig: int | None = None, stdout: bytes = b"", stderr: bytes = b"") -> Result:
    return Result(verdict, reason, exit_code, sig, 0.25, 0.2, 0.05, 0.3, 5 << 20, False,
                  stdout, stderr, False, False)


PROFILES = load_dir()


# ------------------------------------------------------------------ Judge0


def test_ruby_base64_has_a_line_break_every_60_characters_and_at_the_end() -> None:
    data = bytes(range(256)) * 2
    text = judge0.ruby_b64encode(data)
    assert text is not None
    lines = text.split("\n")
    assert lines[-1] == "" and all(len(line) == 60 for line in lines[:-2])
    assert base64.b64decode(text.replace("\n", "")) == data
    assert judge0.ruby_b64encode(b"hello, Judge0\n") == "aGVsbG8sIEp1ZGdlMAo=\n"
    assert judge0.ruby_b64encode(b"") == "" and judge0.ruby_b64encode(None) is None


def test_ruby_base64_decoding_is_lenient_as_ruby_is() -> None:
    assert judge0.ruby_b64decode("aGVsbG8=\n") == b"hello"
    assert judge0.ruby_b64decode("aGVsbG8") == b"hello"  # no padding
    assert judge0.ruby_b64decode("aGVs\nbG8*=") == b"hello"  # junk skipped
    assert judge0.ruby_b64decode(None) is None


def test_times_are_rails_decimals_and_timestamps_have_milliseconds_and_z() -> None:
    assert judge0.decimal_seconds(0.0123) == "0.012"
    assert judge0.decimal_seconds(0) == "0.0"
    assert judge0.decimal_seconds(1.5) == "1.5"
    assert judge0.decimal_seconds(5.0) == "5.0"
    assert judge0.decimal_seconds(None) is None
    assert judge0.timestamp(0.5) == "1970-01-01T00:00:00.500Z"


@pytest.mark.parametrize(("res", "status", "message", "code", "sig"), [
    (result(), 3, None, 0, None),
    (result("wrong_answer", "output differs"), 4, None, 0, None),
    (result("time_limit", "cpu", None, 9), 5, "Time limit exceeded", 0, 9),
    (result("time_limit", "wall", None, 9), 5, "Time limit exceeded (wall clock)", 0, 9),
    (result("memory_limit", "memory", None, 9), 11, "Exited with error status 137", 137, None),
    (result("runtime_error", "exit code 3", 3), 11, "Exited with error status 3", 3, None),
    (result("runtime_error", "signal", None, signal.SIGSEGV), 7, "Caught fatal signal 11", 0, 11),
    (result("runtime_error", "signal", None, signal.SIGFPE), 9, "Caught fatal signal 8", 0, 8),
    (result("runtime_error", "signal", None, signal.SIGABRT), 10, "Caught fatal signal 6", 0, 6),
    (result("runtime_error", "signal", None, signal.SIGXFSZ), 8, "Caught fatal signal 25", 0,
     25),
    (result("runtime_error", "signal", None, signal.SIGBUS), 12, "Caught fatal signal 7", 0, 7),
    (result("output_limit", "stdout", None, 9), 8, "Output limit exceeded (stdout)", 0, 25),
    (Result.sandbox_error("no container"), 13, "no container", None, None),
    (Result.without_run("cancelled", "killed"), 13, "killed", None, None),
])
def test_status_ids_from_verdicts(res: Result, status: int, message: str | None,
                                  code: int | None, sig: int | None) -> None:
    out = judge0.status_of(res)
    assert (out.status, out.message, out.exit_code, out.exit_signal) == (status, message,
                                                                         code, sig)


def test_a_failed_compile_is_status_6() -> None:
    failed = result("compile_error", "exit code 1", 1)
    assert judge0.status_of(failed, failed).status == 6


def test_status_table_is_judge0s() -> None:
    assert [i for i, _ in judge0.STATUSES] == list(range(1, 15))
    assert judge0.STATUS_NAMES[11] == "Runtime Error (NZEC)"


def test_language_names_carry_the_host_version() -> None:
    assert judge0.language_name("Python", "Python 3.11.2") == "Python (3.11.2)"
    assert judge0.language_name("C (GCC", "gcc (Debian 12.2.0-14) 12.2.0") == "C (GCC 12.2.0)"
    assert judge0.language_name("JavaScript (Node.js", "v20.1.0") == "JavaScript (Node.js 20.1.0)"


def available() -> dict[int, object]:
    return {i: PROFILES[name] for i, name, _ in judge0.LANGUAGES
            if name in PROFILES and not PROFILES[name].unavailable}


def parse(body: object, encoded: bool = False) -> tuple[object, dict[str, list[str]]]:
    return judge0.parse_submission(body, base64_encoded=encoded, available=available(),
                                   callback_allowed=lambda url: False)


def test_validation_answers_per_field_with_rails_messages() -> None:
    p, errors = parse({"source_code": "x"})
    assert p is None and errors == {"language_id": ["can't be blank"]}
    _, errors = parse({"source_code": "x", "language_id": 150000})
    assert errors == {"language_id": ["language with id 150000 doesn't exist"]}
    _, errors = parse({"source_code": "x", "language_id": 71, "wall_time_limit": 100000,
                       "memory_limit": "lots", "number_of_runs": 0, "cpu_time_limit": 16})
    assert errors == {"number_of_runs": ["must be greater than 0"],
                      "cpu_time_limit": ["must be less than or equal to 15.0"],
                      "wall_time_limit": ["must be less than or equal to 20.0"],
                      "memory_limit": ["is not a number"]}
    _, errors = parse({"source_code": "x", "language_id": 71, "compiler_options": "-O3",
                       "enable_network": True, "callback_url": "http://10.0.0.1/"})
    assert errors == {
        "compiler_options": ["setting compiler options is only allowed for compiled languages"],
        "callback_url": ["setting callback is not allowed"],
        "enable_network": ["enabling network is not allowed"]}
    _, errors = parse({"language_id": 71})
    assert errors == {"source_code": ["can't be blank"]}


def test_defaults_and_base64_input() -> None:
    p, errors = parse({"source_code": base64.b64encode(b"print(1)").decode(),
                       "language_id": "71", "stdin": "aGk=\n", "unknown": 1}, encoded=True)
    assert not errors and isinstance(p, judge0.Params)
    assert p.source_code == b"print(1)" and p.stdin == b"hi" and p.language_id == 71
    assert (p.cpu_time_limit, p.wall_time_limit, p.memory_limit, p.stack_limit,
            p.max_processes_and_or_threads, p.max_file_size, p.number_of_runs) == (
        5.0, 10.0, 128000, 64000, 60, 1024, 1)


class _Body(dict):  # type: ignore[type-arg]
    """A JSON object that is not exactly a dict: ``parse_submission``'s general checks."""


@pytest.mark.parametrize(("body", "encoded"), [
    ({"source_code": "print(1)", "language_id": 71}, False),
    ({"source_code": "x", "language_id": 71, "stdin": "1 2\n", "expected_output": "3"}, False),
    ({"source_code": "x", "language_id": 71, "stdin": "", "expected_output": None}, False),
    ({"source_code": "cHJpbnQoMSk=\n", "language_id": 71, "stdin": "aGk="}, True),
    ({"source_code": "!!!", "language_id": 71}, True),  # decodes to nothing: blank
    ({"source_code": "", "language_id": 71}, False),
    ({"source_code": "x", "language_id": True}, False),
    ({"source_code": "x", "language_id": 150000}, False),
    ({"source_code": "x", "language_id": "71"}, False),
    ({"source_code": "x", "language_id": 71, "stdin": 12}, False),
    ({"source_code": 7, "language_id": 71}, False),
    ({"source_code": "x", "language_id": 71, "cpu_time_limit": 2}, False),
])
def test_plain_submissions_parse_as_the_general_checks_parse_them(
        body: dict[str, object], encoded: bool) -> None:
    """The shortcut for plain submissions gives what the general checks give, errors too."""
    assert parse(dict(body), encoded) == parse(_Body(body), encoded)


def test_limits_are_remembered_per_shape_and_profile() -> None:
    """Two submissions of the same limits share one ``JobLimits``; another limit, whether a
    limit was asked for, or another profile's defaults give another."""
    a, _ = parse({"source_code": "x", "language_id": 71})
    b, _ = parse({"source_code": "y", "language_id": 71, "stdin": "1"})
    c, _ = parse({"source_code": "x", "language_id": 71, "memory_limit": 128000})
    d, _ = parse({"source_code": "x", "language_id": 71, "cpu_time_limit": 2})
    assert all(isinstance(p, judge0.Params) for p in (a, b, c, d))
    py, java = PROFILES["python3"], PROFILES["java"]
    assert judge0.job_limits(a, py) is judge0.job_limits(b, py)  # type: ignore[arg-type]
    for p, profile in ((a, py), (c, py), (d, py), (a, java), (c, java)):
        assert judge0.job_limits(p, profile) == judge0._job_limits(p, profile)  # type: ignore[arg-type]
    assert judge0.job_limits(a, java) != judge0.job_limits(c, java)  # type: ignore[arg-type]


def test_limits_in_sandboxd_units_and_a_jvm_keeps_its_memory_without_a_request() -> None:
    p, _ = parse({"source_code": "x", "language_id": 71, "memory_limit": 65536,
                  "cpu_time_limit": 2, "max_file_size": 10})
    assert isinstance(p, judge0.Params)
    lim = judge0.job_limits(p, PROFILES["python3"])
    assert lim.memory == 64 << 20 and lim.cpu_time == 2.0 and lim.output == 10240
    assert lim.stack == 64000 * 1024 and lim.wall_time == 10.0
    java = PROFILES["java"]
    p, _ = parse({"source_code": "x", "language_id": 71})
    assert isinstance(p, judge0.Params)
    assert judge0.job_limits(p, java).memory == java.limits.memory
    assert judge0.job_limits(p, java).pids == java.limits.pids


def test_batch_items_with_the_same_source_share_a_group() -> None:
    a, _ = parse({"source_code": "x", "language_id": 71, "stdin": "1"})
    b, _ = parse({"source_code": "x", "language_id": 71, "stdin": "2", "cpu_time_limit": 1})
    c, _ = parse({"source_code": "y", "language_id": 71})
    assert judge0.group_key(a) == judge0.group_key(b) != judge0.group_key(c)  # type: ignore[arg-type]


def test_fields() -> None:
    assert judge0.parse_fields(None) == list(judge0.DEFAULT_FIELDS)
    assert judge0.parse_fields("*") == list(judge0.ALL_FIELDS)
    assert judge0.EXTRA_FIELD not in judge0.parse_fields("*")
    assert judge0.parse_fields("stdout,status_id") == ["stdout", "status_id"]
    with pytest.raises(judge0.Invalid, match=r"invalid fields: \[foo, bar\]"):
        judge0.parse_fields("stdout,foo,bar")


def test_store_forgets_the_oldest_finished_first_and_never_an_unfinished_one() -> None:
    store = judge0.Store(max_count=2, ttl=60)
    p, _ = parse({"source_code": "x", "language_id": 71})
    assert isinstance(p, judge0.Params)
    subs = [judge0.Submission(token=str(i), params=p, language_name="Python") for i in range(4)]
    store.add(subs[0])
    store.add(subs[1])
    store.add(subs[2])  # none finished: all kept
    assert len(store.items) == 3
    subs[1].finish(result(), None, None, None)
    store.finished(subs[1], 0)
    assert store.get("1") is None and store.get("0") is not None
    subs[0].finish(result(), None, None, None)
    store.trim(now=subs[0].finished_at + 61)  # type: ignore[operator]
    assert store.get("0") is None


def test_a_submission_serializes_as_judge0_does() -> None:
    p, _ = parse({"source_code": "x", "language_id": 71, "redirect_stderr_to_stdout": True})
    assert isinstance(p, judge0.Params)
    sub = judge0.Submission(token="t", params=p, language_name="Python (3.11.2)")
    assert sub.serialize(["status", "stdout"], False) == {
        "status": {"id": 1, "description": "In Queue"}, "stdout": None}
    sub.finish(result("runtime_error", "exit code 1", 1, stdout=b"a", stderr=b"b"), None,
               None, b"ba")
    out = sub.serialize(list(judge0.DEFAULT_FIELDS), True)
    assert out["stdout"] == "YmE=\n" and out["stderr"] is None
    assert out["message"] == judge0.ruby_b64encode(b"Exited with error status 1")
    assert out["time"] == "0.25" and out["memory"] == 5120
    assert out["sandboxd"]["verdict"] == "runtime_error"
    sub.stdout = b"\xff"
    with pytest.raises(UnicodeDecodeError):
        sub.serialize(["stdout"], False)


# ------------------------------------------------------------------ Piston


@pytest.mark.parametrize(("version", "spec", "ok"), [
    ("3.11.2", "*", True), ("3.11.2", "x", True), ("3.11.2", "", True),
    ("3.11.2", "3", True), ("3.11.2", "3.x", True), ("3.11.2", "3.11", True),
    ("3.11.2", "3.11.2", True), ("3.11.2", "3.11.1", False), ("3.11.2", "3.10", False),
    ("3.11.2", "^3.8", True), ("3.11.2", "^3.12", False), ("3.11.2", "~3.11.0", True),
    ("3.11.2", "~3.10", False), ("3.11.2", ">=3.8 <4", True), ("3.11.2", ">= 3.12", False),
    ("3.11.2", "3.0.0 - 3.11.2", True), ("3.11.2", "2 || 3", True), ("3.11.2", "2 || 4", False),
    ("3.11.2", "latest", False), ("0.2.3", "^0.2", True), ("0.3.0", "^0.2", False),
    ("3.11.2", "<=3.11", True), ("3.11.2", ">3.11", False), ("3.11.2", "v3.11.2", True),
])
def test_semver_ranges(version: str, spec: str, ok: bool) -> None:
    assert piston.satisfies(version, spec) is ok


def test_versions_from_toolchains() -> None:
    assert piston.semver_of("Python 3.11.2") == "3.11.2"
    assert piston.semver_of("v20.20.2") == "20.20.2"
    assert piston.semver_of("openjdk version \"17.0.15\" 2025-04-15") == "17.0.15"
    assert piston.semver_of("go version go1.19 linux/amd64") == "1.19.0"


@pytest.mark.parametrize(("res", "status", "code", "sig", "message"), [
    (result(), None, 0, None, None),
    (result("runtime_error", "exit code 2", 2), "RE", 2, None, "Exited with error status 2"),
    (result("runtime_error", "signal", None, 11), "SG", None, "SIGSEGV",
     "Caught fatal signal 11"),
    (result("time_limit", "cpu", None, 9), "TO", None, "SIGKILL", "Time limit exceeded"),
    (result("time_limit", "wall", None, 9), "TO", None, "SIGKILL",
     "Time limit exceeded (wall clock)"),
    (result("output_limit", "stdout", None, 9), "OL", None, "SIGKILL", "stdout length exceeded"),
    (result("output_limit", "stderr", None, 9), "EL", None, "SIGKILL", "stderr length exceeded"),
    (result("memory_limit", "memory", None, 9), "SG", None, "SIGKILL", "Memory limit exceeded"),
    (Result.sandbox_error("broken"), "XX", None, None, "broken"),
    (result("compile_error", "exit code 1", 1), "RE", 1, None, "Exited with error status 1"),
    (result("compile_error", "time_limit (cpu)", None, 9), "TO", None, "SIGKILL",
     "Time limit exceeded"),
])
def test_stage_status(res: Result, status: str | None, code: int | None, sig: str | None,
                      message: str | None) -> None:
    st = piston.stage_status(res)
    assert (st.status, st.code, st.signal, st.message) == (status, code, sig, message)


def test_signal_names_as_piston_spells_them() -> None:
    assert piston.signal_name(9) == "SIGKILL"
    assert piston.signal_name(signal.SIGRTMIN) == "SIGRTMIN"
    assert piston.signal_name(signal.SIGRTMIN + 3) == "SIGRTMIN+3"
    assert piston.signal_name(signal.SIGRTMAX - 2) == "SIGRTMAX-2"
    assert piston.signal_name(signal.SIGRTMAX) == "SIGRTMAX"


def table() -> list[piston.Runtime]:
    return [piston.Runtime(lang, "1.2.3", aliases, rt, PROFILES[name])
            for name, (lang, aliases, rt) in piston.RUNTIMES.items() if name in PROFILES]


@pytest.mark.parametrize(("body", "message"), [
    ({}, "language is required as a string"),
    ({"language": "py"}, "version is required as a string"),
    ({"language": "py", "version": "*"}, "files is required as an array"),
    ({"language": "py", "version": "*", "files": [{}]}, "files[0].content is required as a string"),
    ({"language": "cobol", "version": "*", "files": []}, "cobol-* runtime is unknown"),
    ({"language": "py", "version": "9", "files": []}, "py-9 runtime is unknown"),
    ({"language": "py", "version": "*", "files": [{"content": "AA==", "encoding": "base64"}]},
     "files must include at least one utf8 encoded file"),
    ({"language": "py", "version": "*", "files": [{"content": ""}], "run_timeout": "1"},
     "If specified, run_timeout must be a number"),
    ({"language": "py", "version": "*", "files": [{"content": ""}], "run_timeout": 10 ** 9},
     "run_timeout cannot exceed the configured limit of 1200000"),
    ({"language": "py", "version": "*", "files": [{"content": ""}], "run_memory_limit": -5},
     "run_memory_limit must be non-negative"),
])
def test_piston_validation_messages(body: dict[str, object], message: str) -> None:
    with pytest.raises(piston.BadRequest) as e:
        piston.parse_execute(body, table())
    assert str(e.value) == message


def test_piston_files_limits_and_stdin() -> None:
    req = piston.parse_execute({
        "language": "python3", "version": "1.x", "stdin": "abc", "args": ["1", 2],
        "files": [{"name": "a.py", "content": "print(1)"},
                  {"name": "data.bin", "content": "AAEC", "encoding": "base64"},
                  {"name": "h", "content": "ff00zz", "encoding": "hex"}],
        "run_timeout": 1500, "run_memory_limit": -1, "compile_cpu_time": 0}, table())
    assert req.files == {"main.py": b"print(1)", "data.bin": b"\0\1\2", "h": b"\xff\0"}
    assert req.stdin == b"abc\n" and req.args == ["1", "2"]
    assert req.limits == {"run_timeout": 1500, "compile_timeout": 10000,
                          "compile_cpu_time": 10000, "run_cpu_time": 3000}
    assert piston.job_limits(req.limits, "run") == proto.JobLimits(wall_time=1.5, cpu_time=3.0)
    with pytest.raises(piston.BadRequest, match="escape"):
        piston.parse_execute({"language": "py", "version": "*",
                              "files": [{"content": ""}, {"name": "../x", "content": ""}]},
                             table())


@pytest.mark.parametrize("query", [
    b"", b"wait=true", b"base64_encoded=false&wait=true", b"base64_encoded=true&wait=false",
    b"wait=true&fields=*", b"fields=stdout%2Cstatus_id&wait=true", b"wait=false&wait=true",
    b"wait=TRUE", b"fields=",
])
def test_submission_options_per_query_string(query: bytes) -> None:
    """Remembered or not, the options are what the query string says (the last of a
    repeated key, as Starlette reads it)."""
    from starlette.datastructures import QueryParams

    q = QueryParams(query)
    want = (q.get("base64_encoded") == "true", q.get("wait") == "true",
            judge0.parse_fields(q.get("fields")))
    assert judge0.create_options(query) == want
    assert judge0.create_options(query) == want


def test_unknown_fields_are_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(judge0.Invalid, match="invalid fields: \\[colour\\]"):
            judge0.create_options(b"wait=true&fields=token,colour")
