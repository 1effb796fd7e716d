"""Judge0 CE 1.13.1 compatibility, proved with clients nobody here wrote, unchanged: the
official SDK (``judge0`` 0.0.8), ``judge0api`` and the async ``judge0-client``; plus
``httpx`` for each endpoint and error. One daemon for the module, with a token.

The official SDK polls for ever: every client here gets a bounded retry strategy,
and every test a timeout.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import judge0
import judge0_client
import judge0api
import pytest
import requests
from http_helpers import wait_idle
from judge0api import submission as j0api_submission

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

TOKEN = "sandboxd-judge0-token"
DAEMON_CONFIG = {"http_tokens": [TOKEN], "pool_profiles": ["python3", "c"],
                 "judge0_batch_size": 5, "judge0_callbacks": ["127.0.0.1"]}

HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello, C"); return 0; }\n'
ECHO_DOUBLE = "print(int(input()) * 2)\n"


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60,
                      headers={"X-Auth-Token": TOKEN}) as c:
        yield c


@pytest.fixture
def sdk(base_url: str) -> judge0.Client:
    return judge0.Client(base_url, headers={"X-Auth-Token": TOKEN},
                         retry_strategy=judge0.MaxWaitTime(60))


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


def poll(api: httpx.Client, token: str, **params: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        got = api.get(f"/submissions/{token}", params=params).json()
        if got["status"]["id"] > 2 or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


# ------------------------------------------------------------------ the official SDK


def test_sdk_hello_world_in_python_and_c(sdk: judge0.Client) -> None:
    py = judge0.run(client=sdk, source_code="print('hello, Python')", language=judge0.PYTHON)
    assert py.status == judge0.Status.ACCEPTED and py.stdout == "hello, Python\n"
    assert py.time is not None and py.memory and py.token is not None
    c = judge0.run(client=sdk, source_code=HELLO_C, language=judge0.C)
    assert c.status == judge0.Status.ACCEPTED and c.stdout == "hello, C\n"
    assert c.language == 50 or c.language == judge0.C


def test_sdk_compile_error(sdk: judge0.Client) -> None:
    s = judge0.run(client=sdk, source_code="int main(void) { return x; }", language=judge0.C)
    assert s.status == judge0.Status.COMPILATION_ERROR
    assert "undeclared" in (s.compile_output or "") and s.stdout is None


def test_sdk_time_limit(sdk: judge0.Client) -> None:
    s = judge0.run(client=sdk, source_code="while True: pass", language=judge0.PYTHON,
                   cpu_time_limit=0.5)
    assert s.status == judge0.Status.TIME_LIMIT_EXCEEDED
    # Judge0 sends ``message`` in base64 too when asked for base64; the SDK leaves it so.
    assert unb64(s.message) == "Time limit exceeded" and s.time is not None and s.time >= 0.5


def test_sdk_memory_limit_as_judge0_users_detect_it(sdk: judge0.Client) -> None:
    s = judge0.run(client=sdk, source_code="x = bytearray(300 << 20)\nprint(len(x))",
                   language=judge0.PYTHON, memory_limit=64000)
    assert s.status == judge0.Status.RUNTIME_ERROR_NZEC
    assert unb64(s.message) == "Exited with error status 137" and s.exit_code == 137


def test_sdk_runtime_error_wrong_answer_and_stdin(sdk: judge0.Client) -> None:
    s = judge0.run(client=sdk, source_code="import sys; sys.exit(3)", language=judge0.PYTHON)
    assert s.status == judge0.Status.RUNTIME_ERROR_NZEC and s.exit_code == 3
    assert unb64(s.message) == "Exited with error status 3"
    s = judge0.run(client=sdk, source_code=ECHO_DOUBLE, language=judge0.PYTHON, stdin="21",
                   expected_output="42")
    assert s.status == judge0.Status.ACCEPTED and s.stdout == "42\n"
    s = judge0.run(client=sdk, source_code=ECHO_DOUBLE, language=judge0.PYTHON, stdin="2",
                   expected_output="5")
    assert s.status == judge0.Status.WRONG_ANSWER


def test_sdk_segfault_is_sigsegv(sdk: judge0.Client) -> None:
    s = judge0.run(client=sdk, source_code="int main(void) { return *(volatile int *)0; }",
                   language=judge0.C)
    assert s.status == judge0.Status.RUNTIME_ERROR_SIGSEGV and s.exit_signal == 11


def test_sdk_test_cases_are_one_batch_compiled_once(http_daemon: Any, sdk: judge0.Client
                                                     ) -> None:
    source = "#include <stdio.h>\nint main(void){int a; scanf(\"%d\",&a); printf(\"%d\\n\",a*a);}"
    before = http_daemon.stats().counters["compiles"]
    cases = [(str(i), str(i * i if i != 3 else 0)) for i in range(1, 5)]
    results = judge0.run(client=sdk, source_code=source, language=judge0.C,
                         test_cases=cases)
    assert [r.status for r in results] == [judge0.Status.ACCEPTED] * 2 + [
        judge0.Status.WRONG_ANSWER, judge0.Status.ACCEPTED]
    assert [r.stdout for r in results] == ["1\n", "4\n", "9\n", "16\n"]
    assert http_daemon.stats().counters["compiles"] == before + 1


def test_sdk_refused_without_the_token(base_url: str) -> None:
    with pytest.raises(RuntimeError, match="Authentication failed"):
        judge0.Client(base_url, retry_strategy=judge0.MaxRetries(3))


# ------------------------------------------------------------------ judge0api


@pytest.fixture
def j0api(base_url: str) -> judge0api.Client:
    return judge0api.Client(base_url, auth_token=TOKEN)


def test_judge0api_hello_world_compile_error_and_stdin(j0api: judge0api.Client) -> None:
    s = j0api_submission.submit(j0api, b"print('hello, Python')", 71)
    assert s.status["id"] == 3 and s.stdout == b"hello, Python\n"
    s = j0api_submission.submit(j0api, HELLO_C.encode(), 50)
    assert s.status["id"] == 3 and s.stdout == b"hello, C\n"
    s = j0api_submission.submit(j0api, b"int main(void) { return x; }", 50)
    assert s.status["id"] == 6 and b"undeclared" in s.compile_output
    s = j0api_submission.submit(j0api, ECHO_DOUBLE.encode(), 71, stdin=b"4",
                                expected_output=b"8")
    assert s.status["id"] == 3 and s.stdout == b"8\n"
    again = j0api_submission.get(j0api, s.token)
    assert again.stdout == b"8\n" and again.status["id"] == 3


def test_judge0api_time_limit_and_binary_output(j0api: judge0api.Client) -> None:
    s = j0api_submission.submit(j0api, b"while True: pass", 71, cpu_time_limit=0.5)
    assert s.status["id"] == 5
    data = bytes(range(256))
    code = f"import sys; sys.stdout.buffer.write({data!r})".encode()
    s = j0api_submission.submit(j0api, code, 71)
    assert s.status["id"] == 3 and s.stdout == data


def test_judge0api_refused_without_the_token(base_url: str) -> None:
    with pytest.raises(requests.HTTPError):
        judge0api.Client(base_url, auth_token="wrong")


# ------------------------------------------------------------------ judge0-client (async)


async def wait_for(client: judge0_client.Judge0Client, token: str
                   ) -> judge0_client.SubmissionDetail:
    import trio

    with trio.fail_after(60):
        while True:
            detail = await client.get_submission(token)
            if int(detail.status.id) > 2:
                return detail
            await trio.sleep(0.05)


async def test_judge0_client_async(base_url: str) -> None:
    async with judge0_client.Judge0Client(base_url, auth_token=TOKEN) as client:
        about = await client.get_about()
        assert about.version == "1.13.1"
        workers = await client.get_workers()
        assert workers[0].available >= 1
        made = await client.create_submission(judge0_client.SingleFileSubmission(
            source_code="print('hello, async')", language_id=71))
        detail = await wait_for(client, made.token)
        assert int(detail.status.id) == 3 and detail.stdout == "hello, async\n"
        made = await client.create_submission(judge0_client.SingleFileSubmission(
            source_code="int main(void) { return x; }", language_id=50))
        detail = await wait_for(client, made.token)
        assert int(detail.status.id) == 6 and "undeclared" in (detail.compile_output or "")
        made = await client.create_submission(judge0_client.SingleFileSubmission(
            source_code="while True: pass", language_id=71, cpu_time_limit=0.5))
        detail = await wait_for(client, made.token)
        assert int(detail.status.id) == 5
    async with judge0_client.Judge0Client(base_url) as anonymous:
        with pytest.raises(judge0_client.Judge0Error):
            await anonymous.get_about()


# ------------------------------------------------------------------ every endpoint, httpx


def test_informational_endpoints(api: httpx.Client) -> None:
    assert api.get("/about").json()["version"] == "1.13.1"
    assert api.get("/version").text == "1.13.1"
    assert api.get("/statuses/").json()[10] == {"id": 11, "description": "Runtime Error (NZEC)"}
    config = api.get("/config_info").json()
    assert config["max_submission_batch_size"] == 5 and config["cpu_time_limit"] == 5.0
    assert config["memory_limit"] == 128000 and config["enable_wait_result"] is True
    assert set(config) == set(judge0.base_types.Config.model_fields)  # Judge0's 39 keys
    assert "Architecture" in api.get("/system_info").json()
    assert api.get("/workers").json()[0]["queue"] == "1.13.1"
    langs = api.get("/languages").json()
    ids = {x["id"] for x in langs}
    assert {71, 50, 54, 52, 46}.issubset(ids) and all(set(x) == {"id", "name"} for x in langs)
    one = api.get("/languages/71").json()
    assert one["source_file"] == "main.py" and one["is_archived"] is False
    assert api.get("/languages/73000").status_code == 404
    assert api.get("/languages/all").json()[0]["is_archived"] is False
    assert api.post("/authenticate").status_code == 200
    assert api.post("/authorize").status_code == 403
    assert api.get("/isolate").status_code == 200 and api.get("/license").status_code == 200


def test_submission_fields_base64_and_errors(api: httpx.Client) -> None:
    r = api.post("/submissions", params={"wait": "true", "fields": "*"},
                 json={"source_code": "print('x')", "language_id": "71"})
    assert r.status_code == 201
    body = r.json()
    assert list(body) == [f for f in body]  # Judge0's order, exactly its attributes
    assert "sandboxd" not in body and body["status_id"] == 3 and body["time"].count(".") == 1
    assert body["created_at"].endswith("Z") and len(body["created_at"]) == 24
    got = api.get(f"/submissions/{body['token']}/",
                  params={"base64_encoded": "true", "fields": "stdout,sandboxd"}).json()
    assert got == {"stdout": "eAo=\n", "sandboxd": got["sandboxd"]}
    assert got["sandboxd"]["verdict"] == "ok"
    assert api.get(f"/submissions/{body['token']}", params={"fields": "nope"}).json() == {
        "error": "invalid fields: [nope]"}
    assert api.get("/submissions/0000").status_code == 404
    r = api.post("/submissions", json={"source_code": "x"})
    assert r.status_code == 422 and r.json() == {"language_id": ["can't be blank"]}
    r = api.post("/submissions", json={"source_code": "x", "language_id": 71,
                                       "memory_limit": 10 ** 9})
    assert r.json() == {"memory_limit": ["must be less than or equal to 512000"]}
    raw = "import sys; sys.stdout.buffer.write(bytes([255, 0, 1]))"
    r = api.post("/submissions?wait=true", json={"source_code": raw, "language_id": 71})
    assert r.status_code == 201 and "cannot be converted to UTF-8" in r.json()["error"]
    token = r.json()["token"]
    assert api.get(f"/submissions/{token}").status_code == 400
    out = api.get(f"/submissions/{token}?base64_encoded=true").json()["stdout"]
    assert base64.b64decode(out) == b"\xff\0\1"
    assert api.get("/submissions").status_code == 403
    assert api.delete(f"/submissions/{token}").status_code == 403


def test_wait_false_then_poll_and_redirect_stderr(api: httpx.Client) -> None:
    # Two pipes: their order is the order the supervisor read them, hence the pause.
    code = ("import sys, time; print('a', flush=True); time.sleep(0.3); "
            "print('b', file=sys.stderr, flush=True)")
    r = api.post("/submissions", json={"source_code": code, "language_id": 71,
                                       "redirect_stderr_to_stdout": True})
    assert r.status_code == 201 and set(r.json()) == {"token"}
    got = poll(api, r.json()["token"], fields="stdout,stderr,status")
    assert got["stdout"] == "a\nb\n" and got["stderr"] is None


def test_redirected_output_past_its_limit_is_cut_at_the_limit(api: httpx.Client) -> None:
    # The merged stream is recorded as the supervisor reads each chunk (inline, in its
    # one-task watch): the chunk that crosses the limit counts only up to it, as the
    # step's own stdout does.
    code = "import sys; sys.stdout.write('x' * 300000); sys.stdout.flush()"
    r = api.post("/submissions?wait=true&fields=stdout,stderr,status,sandboxd", json={
        "source_code": code, "language_id": 71, "redirect_stderr_to_stdout": True,
        "max_file_size": 50})
    got = r.json()
    assert got["status"]["id"] == 8, got["status"]
    assert got["sandboxd"]["stdout_truncated"] is True
    assert got["stdout"] == "x" * 50 * 1024 and got["stderr"] is None


def test_command_line_arguments_and_compiler_options(api: httpx.Client) -> None:
    r = api.post("/submissions?wait=true", json={
        "source_code": "import sys; print(sys.argv[1:])", "language_id": 71,
        "command_line_arguments": "one 'two three'"})
    assert r.json()["stdout"] == "['one', 'two three']\n"
    r = api.post("/submissions?wait=true", json={
        "source_code": "#include <stdio.h>\nint main(void){printf(\"%d\\n\", X);}",
        "language_id": 50, "compiler_options": "-DX=42"})
    body = r.json()
    assert body["stdout"] == "42\n"
    # The compile's own verdict and cost ride in the extra attribute (Judge0 has none);
    # a run of an interpreted language has no compile record.
    comp = body["sandboxd"]["compile"]
    assert comp["verdict"] == "ok" and comp["exit_code"] == 0
    assert comp["cpu_time"] > 0 and comp["wall_time"] > 0 and comp["memory_peak"] > 0
    assert "compile" not in api.post("/submissions?wait=true", json={
        "source_code": "print(1)", "language_id": 71}).json()["sandboxd"]


def test_batches(api: httpx.Client) -> None:
    items = [{"source_code": ECHO_DOUBLE, "language_id": 71, "stdin": str(i)} for i in range(3)]
    items.append({"source_code": "x", "language_id": 123456789})
    r = api.post("/submissions/batch", json={"submissions": items})
    assert r.status_code == 201
    answers = r.json()
    assert answers[3] == {"language_id": ["language with id 123456789 doesn't exist"]}
    tokens = [a["token"] for a in answers[:3]]
    deadline = time.monotonic() + 60
    while True:
        got = api.get("/submissions/batch", params={"tokens": ",".join([*tokens, "nope"]),
                                                     "fields": "stdout,status_id"}).json()
        done = [s for s in got["submissions"][:3] if s["status_id"] > 2]
        if len(done) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [s["stdout"] for s in got["submissions"][:3]] == ["0\n", "2\n", "4\n"]
    assert got["submissions"][3] is None
    too_many = {"submissions": [items[0]] * 6}
    assert api.post("/submissions/batch", json=too_many).json() == {
        "error": "number of submissions in a batch should be less than or equal to 5"}
    assert api.post("/submissions/batch", json={"submissions": []}).status_code == 400
    assert api.get("/submissions/batch").status_code == 400


def test_refused_without_the_token(base_url: str) -> None:
    for headers, params in (({}, {}), ({"X-Auth-Token": "wrong"}, {}),
                            ({}, {"X-Auth-Token": "wrong"})):
        r = httpx.post(f"{base_url}/submissions", params=params, headers=headers,
                       json={"source_code": "print(1)", "language_id": 71})
        assert r.status_code == 401
    r = httpx.get(f"{base_url}/about", params={"X-Auth-Token": TOKEN})
    assert r.status_code == 200


def test_callback_put_to_an_allowed_address_only(api: httpx.Client) -> None:
    import http.server
    import threading

    got: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            got.append((self.command, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/done"
        r = api.post("/submissions", json={"source_code": "print(7)", "language_id": 71,
                                           "callback_url": url})
        token = r.json()["token"]
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got and got[0][0] == "PUT"
        body = json.loads(got[0][1])
        assert body["token"] == token and base64.b64decode(body["stdout"]) == b"7\n"
        assert body["status"]["id"] == 3
    finally:
        server.shutdown()
    r = api.post("/submissions", json={"source_code": "print(7)", "language_id": 71,
                                       "callback_url": "http://10.1.2.3/x"})
    assert r.status_code == 422 and r.json() == {
        "callback_url": ["setting callback is not allowed"]}


# Which start a submission got (the bootstrap is on a warm interpreter's command line),
# and the rlimits it runs under: Judge0's defaults (stack 64000 KB, files 1024 KB) are
# lowered to at the hand-over, exactly.
SAYS_START = ("import resource\n"
              "warm = b'_sandboxd_warm' in open('/proc/self/cmdline', 'rb').read()\n"
              "print('WARM' if warm else 'PLAIN', resource.getrlimit(resource.RLIMIT_CPU)[0],"
              " resource.getrlimit(resource.RLIMIT_FSIZE)[0],"
              " resource.getrlimit(resource.RLIMIT_STACK)[0])\n")


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, "WARM 6 1048576 65536000"),
    ({"cpu_time_limit": 2, "max_file_size": 2048, "stack_limit": 32000},
     "WARM 3 2097152 32768000"),
    # higher than the pool's interpreter has: the plain start, with exactly those
    ({"cpu_time_limit": 8}, "PLAIN 9 1048576 65536000"),
    # judged (an expected output) or measured (several runs): the plain start
    ({"expected_output": "x"}, "PLAIN 6 1048576 65536000"),
    ({"number_of_runs": 2}, "PLAIN 6 1048576 65536000"),
])
def test_a_run_with_judge0_defaults_gets_the_warm_start(
        http_daemon: Any, api: httpx.Client, extra: dict[str, Any], expected: str) -> None:
    wait_idle(http_daemon)  # a pool miss would start the job plainly
    r = api.post("/submissions?wait=true", json={"source_code": SAYS_START,
                                                  "language_id": 71, **extra})
    assert r.status_code == 201, r.text
    assert r.json()["stdout"] == expected + "\n", r.json()
