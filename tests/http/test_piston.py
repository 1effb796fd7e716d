"""Piston v2 compatibility, proved with Piston's own Python clients, unchanged:
``ultra-piston`` and ``aiopyston`` (which send their key as a bare ``Authorization``);
``pistonapi`` posts a form-encoded body, which Piston itself refuses with 415, and so do
we. Plus ``httpx`` for each endpoint and error, and the ``/connect`` WebSocket.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pistonapi
import pyston
import pytest
from http_helpers import wait_idle
from pistonapi.exceptions import PistonError
from ultra_piston import File, PistonClient
from ultra_piston.errors import BadRequestError, UnexpectedStatusError
from websockets.sync.client import connect

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

TOKEN = "sandboxd-piston-token"
DAEMON_CONFIG = {"http_tokens": [TOKEN], "pool_profiles": ["python3", "c"]}

HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello, C"); return 0; }\n'


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{base_url}/api/v2", timeout=60,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


@pytest.fixture
def ultra(base_url: str) -> PistonClient:
    return PistonClient(base_url=f"{base_url}/api/v2/piston/", api_key=TOKEN, rate_limit=0)


# ------------------------------------------------------------------ ultra-piston


def test_ultra_piston_hello_world_in_python_and_c(ultra: PistonClient) -> None:
    langs = {rt.language: rt for rt in ultra.get_runtimes()}
    assert {"python", "c", "bash"}.issubset(langs)
    out = ultra.post_execute("python", "3.x", File(content="print('hello, Python')"))
    assert out.run.stdout == "hello, Python\n" and out.run.code == 0 and out.compile is None
    out = ultra.post_execute("c", "*", File(name="hello.c", content=HELLO_C))
    assert out.run.stdout == "hello, C\n" and out.compile is not None
    assert out.compile.code == 0 and out.language == "c"


def test_ultra_piston_compile_error_time_limit_and_stdin(ultra: PistonClient) -> None:
    out = ultra.post_execute("c", "*", File(content="int main(void) { return x; }"))
    assert out.compile is not None and out.compile.code == 1
    assert "undeclared" in out.compile.stderr
    assert out.run.model_dump() == out.compile.model_dump()  # as Piston: run is compile
    out = ultra.post_execute("py", "*", File(content="while True: pass"), run_timeout=500)
    assert out.run.signal == "SIGKILL" and out.run.code is None
    out = ultra.post_execute("py", "*", File(content="print(input()[::-1])"), stdin="abc")
    assert out.run.stdout == "cba\n"
    out = ultra.post_execute("py", "*", File(content="import sys; sys.exit(4)"))
    assert out.run.code == 4


def test_ultra_piston_refused_without_the_key(base_url: str) -> None:
    anonymous = PistonClient(base_url=f"{base_url}/api/v2/piston/", rate_limit=0)
    with pytest.raises(UnexpectedStatusError):
        anonymous.get_runtimes()
    with pytest.raises(BadRequestError):
        PistonClient(base_url=f"{base_url}/api/v2/piston/", api_key=TOKEN,
                     rate_limit=0).post_execute("cobol", "*", File(content="x"))


# ------------------------------------------------------------------ aiopyston (asyncio)


def test_aiopyston(base_url: str) -> None:
    async def main() -> None:
        client = pyston.PystonClient(api_key=TOKEN, base_url=f"{base_url}/api/v2/piston/")
        try:
            assert "python" in await client.languages()
            out = await client.execute("python", [pyston.File("print('hello, pyston')")])
            assert out.run_stage.stdout == "hello, pyston\n" and out.success
            out = await client.execute("c", [pyston.File(HELLO_C, "main.c")])
            assert out.run_stage.stdout == "hello, C\n" and out.compile_stage.code == 0
            out = await client.execute("c", [pyston.File("int main(void) { return x; }")])
            assert out.compile_stage.code == 1 and not out.success
            out = await client.execute("python", [pyston.File("while True: pass")],
                                       run_timeout=500)
            assert out.run_stage.signal == "SIGKILL"
        finally:
            await client.close_session()
        anonymous = pyston.PystonClient(base_url=f"{base_url}/api/v2/piston/")
        try:
            with pytest.raises(pyston.exceptions.UnexpectedError):
                await anonymous.runtimes()
        finally:
            await anonymous.close_session()

    asyncio.run(main())


# ------------------------------------------------------------------ pistonapi


def test_pistonapi_form_body_is_refused_as_piston_does(base_url: str) -> None:
    # pistonapi has no key: the token rides in the query of its endpoint, to which it
    # appends "/execute" (which lands in the query, harmlessly).
    endpoint = f"{base_url}/api/v2/piston/execute?X-Auth-Token={TOKEN}&_="
    client = pistonapi.PistonAPI(endpoint=endpoint)
    with pytest.raises(PistonError, match="requests must be of type application/json"):
        client.execute("python", "*", "print(1)")


# ------------------------------------------------------------------ every endpoint, httpx


def execute(api: httpx.Client, **body: Any) -> dict[str, Any]:
    r = api.post("/execute", json={"language": "python", "version": "*", **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_runtimes_and_packages(api: httpx.Client) -> None:
    rts = api.get("/runtimes").json()
    py = next(rt for rt in rts if rt["language"] == "python")
    assert "py" in py["aliases"] and py["version"].count(".") == 2 and "runtime" not in py
    c = next(rt for rt in rts if rt["language"] == "c")
    assert c["runtime"] == "gcc"
    assert api.get("/piston/runtimes/").json() == rts
    assert api.get("/packages").json()[0]["installed"] is True
    assert api.post("/packages", json={"language": "x", "version": "1"}).status_code == 404


def test_execute_stage_fields_and_output_order(api: httpx.Client) -> None:
    # Two pipes: their order is the order the supervisor read them, hence the pauses.
    code = ("import sys, time\nprint('a', flush=True)\ntime.sleep(0.3)\n"
            "print('b', file=sys.stderr, flush=True)\ntime.sleep(0.3)\n"
            "print('c', flush=True)\nsys.exit(2)")
    out = execute(api, files=[{"content": code}])
    run = out["run"]
    assert run["stdout"] == "a\nc\n" and run["stderr"] == "b\n" and run["output"] == "a\nb\nc\n"
    assert (run["code"], run["signal"], run["status"]) == (2, None, "RE")
    assert run["message"] == "Exited with error status 2"
    assert run["memory"] > 0 and run["cpu_time"] >= 0 and run["wall_time"] >= 0
    exact = run["sandboxd"]  # the same figures in seconds, unrounded
    assert exact["verdict"] == "runtime_error" and exact["wall_time"] >= 0.6
    assert round(exact["wall_time"] * 1000) == run["wall_time"]
    assert round(exact["cpu_time"] * 1000) == run["cpu_time"]
    assert out["language"] == "python" and "compile" not in out
    seg = execute(api, files=[{"content": "import os; os.kill(os.getpid(), 11)"}])["run"]
    assert (seg["status"], seg["signal"], seg["code"]) == ("SG", "SIGSEGV", None)
    big = execute(api, files=[{"content": "x = bytearray(200 << 20)"}],
                  run_memory_limit=64 << 20)["run"]
    assert big["signal"] == "SIGKILL" and big["message"] == "Memory limit exceeded"
    cpu = execute(api, files=[{"content": "while True: pass"}], run_cpu_time=300)["run"]
    assert cpu["status"] == "TO" and cpu["message"] == "Time limit exceeded"


def test_execute_files_encodings_args_and_binary_output(api: httpx.Client) -> None:
    code = ("import sys\nprint(sys.argv[1:])\nprint(open('data.bin','rb').read())\n"
            "print(open('h.txt').read())")
    out = execute(api, args=["x", "y z"], files=[
        {"name": "prog.py", "content": code},
        {"name": "data.bin", "content": base64.b64encode(b"\0\1").decode(), "encoding": "base64"},
        {"name": "h.txt", "content": b"hex!".hex(), "encoding": "hex"}])
    assert out["run"]["stdout"] == "['x', 'y z']\nb'\\x00\\x01'\nhex!\n"
    raw = execute(api, files=[{"content": "import sys; sys.stdout.buffer.write(b'\\xff')"}])
    assert raw["run"]["stdout"] == "\ufffd"  # Piston's stages are text


def test_execute_errors(api: httpx.Client) -> None:
    assert api.post("/execute", content="language=python",
                    headers={"Content-Type": "application/x-www-form-urlencoded"}).json() == {
        "message": "requests must be of type application/json"}
    r = api.post("/execute", json={"language": "python", "version": "99", "files": []})
    assert r.status_code == 400 and r.json() == {"message": "python-99 runtime is unknown"}
    r = api.post("/execute", json={"language": "python"})
    assert r.json() == {"message": "version is required as a string"}
    r = api.post("/execute", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_refused_without_the_token(base_url: str) -> None:
    assert httpx.get(f"{base_url}/api/v2/runtimes").status_code == 401
    assert httpx.get(f"{base_url}/api/v2/runtimes",
                     headers={"Authorization": TOKEN}).status_code == 200


# ------------------------------------------------------------------ /connect


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + f"/api/v2/connect?token={TOKEN}"


def read_line(ws: Any) -> str:
    """stdout up to a line's end: the program's writes may come in more than one chunk."""
    text = ""
    while not text.endswith("\n"):
        msg = json.loads(ws.recv(10))
        assert msg["type"] == "data" and msg["stream"] == "stdout", msg
        text += msg["data"]
    return text


def test_connect_interactive_echo(base_url: str) -> None:
    code = "while True:\n    line = input()\n    print('echo:' + line, flush=True)\n" \
           "    if line == 'bye': break\n"
    with connect(ws_url(base_url), open_timeout=10, close_timeout=10) as ws:
        ws.send(json.dumps({"type": "init", "language": "python", "version": "*",
                            "files": [{"content": code}]}))
        assert json.loads(ws.recv(10))["type"] == "runtime"
        assert json.loads(ws.recv(10)) == {"type": "stage", "stage": "run"}
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "hello\n"}))
        assert read_line(ws) == "echo:hello\n"
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "bye\n"}))
        assert read_line(ws) == "echo:bye\n"
        assert json.loads(ws.recv(10)) == {"type": "exit", "stage": "run", "code": 0,
                                           "signal": None}
        with pytest.raises(Exception) as closed:
            ws.recv(10)
        assert "4999" in str(closed.value)


def test_connect_close_codes(base_url: str) -> None:
    with connect(ws_url(base_url), open_timeout=10) as ws:
        ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "x"}))
        with pytest.raises(Exception, match="4003"):
            ws.recv(10)
    with connect(ws_url(base_url), open_timeout=10) as ws, \
            pytest.raises(Exception, match="4001"):
        ws.recv(10)
    with connect(ws_url(base_url), open_timeout=10) as ws:
        ws.send(json.dumps({"type": "init", "language": "cobol", "version": "*", "files": []}))
        assert json.loads(ws.recv(10)) == {"type": "error",
                                           "message": "cobol-* runtime is unknown"}
        with pytest.raises(Exception, match="4002"):
            ws.recv(10)


# A job that says which start it got: the bootstrap's source is on a warm interpreter's
# command line (tests/integration/test_warm_runtime.py checks the same way), and the
# rlimits it runs under.
SAYS_START = ("import resource\n"
              "warm = b'_sandboxd_warm' in open('/proc/self/cmdline', 'rb').read()\n"
              "print('WARM' if warm else 'PLAIN', resource.getrlimit(resource.RLIMIT_CPU)[0],"
              " resource.getrlimit(resource.RLIMIT_FSIZE)[0])\n")


@pytest.mark.parametrize(("extra", "expected"), [
    # Piston's defaults (run_cpu_time 3000): the warm start, its RLIMIT_CPU lowered to
    # the very value a plain start with them gets (ceil(3 s) + 1)
    ({}, "WARM 4 67108864"),
    ({"run_cpu_time": 1500, "run_timeout": 2000}, "WARM 3 67108864"),
    ({"run_memory_limit": 100_000_000}, "WARM 4 67108864"),
    # args are the job's own argv: the plain start
    ({"args": ["x"]}, "PLAIN 4 67108864"),
])
def test_execute_with_piston_defaults_gets_the_warm_start(
        http_daemon: Any, api: httpx.Client, extra: dict[str, Any], expected: str) -> None:
    wait_idle(http_daemon)  # a pool miss would start the job plainly
    r = api.post("/execute", json={"language": "python", "version": "*",
                                   "files": [{"content": SAYS_START}], **extra})
    assert r.status_code == 200, r.text
    assert r.json()["run"]["stdout"] == expected + "\n", r.json()


SAYS_START_JS = ("console.log(require('fs').readFileSync('/proc/self/cmdline')"
                 ".includes('_sandboxd_warm') ? 'WARM' : 'PLAIN')\n")


def test_node_with_piston_defaults_gets_the_warm_start(http_daemon: Any,
                                                       api: httpx.Client) -> None:
    """node cannot lower its own rlimits: Piston's default CPU time is left to the
    profile's (the wall limit bounds a thread first); one the request gives stays exact,
    and so starts plainly."""
    def start(**extra: Any) -> str:
        wait_idle(http_daemon)
        r = api.post("/execute", json={"language": "javascript", "version": "*",
                                       "files": [{"content": SAYS_START_JS}], **extra})
        assert r.status_code == 200, r.text
        return str(r.json()["run"]["stdout"]).strip()

    start()  # the first asks for the pool: a miss, then the warm pool is kept
    assert start() == "WARM"
    assert start(run_cpu_time=3000) == "PLAIN"
