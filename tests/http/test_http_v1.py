"""``/v1`` end to end with ``httpx``: every endpoint, and every error it documents."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import pytest

from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello from C"); return 0; }\n'


def run(client: httpx.Client, job: dict[str, Any], status: int = 200, **params: Any) -> Any:
    r = client.post("/v1/jobs", json=job, params=params)
    assert r.status_code == status, r.text
    return r.json()


def wait_done(client: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        if r.json()["state"] in ("done", "failed"):
            return r.json()
        assert time.monotonic() < deadline, r.text
        time.sleep(0.05)


def wait_listed(client: httpx.Client, job_id: str) -> dict[str, Any]:
    for _ in range(600):
        found = [j for j in client.get("/v1/ps").json()["jobs"] if j["id"] == job_id]
        if found and found[0]["state"] == "running":
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran")


# ------------------------------------------------------------------ jobs


def test_python_hello(client: httpx.Client):
    res = run(client, {"profile": "python3", "files": {"main.py": "print('hi')"}})
    assert res["state"] == "done" and res["verdict"] == "ok" and res["compile"] is None
    (step,) = res["steps"]
    assert step["stdout"] == "hi\n" and step["exit_code"] == 0
    assert "stdout_b64" not in step
    assert {"cpu_time", "wall_time", "memory_peak", "oom_killed", "signal", "reason",
            "stdout_truncated", "repeat"} <= set(step)


def test_c_compiled_once_then_run(client: httpx.Client):
    res = run(client, {"profile": "c", "files": {"main.c": HELLO_C}})
    assert res["verdict"] == "ok", res
    assert res["compile"]["verdict"] == "ok"
    assert res["steps"][0]["stdout"] == "hello from C\n"


def test_compile_error(client: httpx.Client):
    res = run(client, {"profile": "c", "files": {"main.c": "int main( {"}})
    assert res["verdict"] == "compile_error"
    assert res["steps"] == [] and "error" in res["compile"]["stderr"]


def test_files_stdin_and_outputs_as_text_or_base64(client: httpx.Client):
    code = "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[::-1])"
    res = run(client, {"profile": "python3",
                       "files": {"main.py": {"base64": base64.b64encode(code.encode()).decode()}},
                       "stdin": {"base64": base64.b64encode(b"\x00\xff\xfeA").decode()}})
    step = res["steps"][0]
    assert base64.b64decode(step["stdout_b64"]) == b"A\xfe\xff\x00"
    assert step["stdout"] == "A\ufffd\ufffd\x00"
    res = run(client, {"profile": "python3", "stdin": {"text": "héllo"},
                       "files": {"main.py": {"text": "print(input()[::-1])"}}})
    assert res["steps"][0]["stdout"] == "olléh\n"


def test_argv_env_and_nested_files(client: httpx.Client):
    res = run(client, {"profile": "bash", "files": {"main.sh": "", "d/x.txt": "inner"},
                       "argv": ["/bin/bash", "-c", "echo $FOO $1; cat d/x.txt", "_", "arg"],
                       "env": {"FOO": "bar"}})
    assert res["steps"][0]["stdout"] == "bar arg\ninner"


def test_tests_expected_output_and_stop_on_failure(client: httpx.Client):
    job = {"profile": "python3", "files": {"main.py": "print(int(input()) * 2)"},
           "tests": [{"stdin": "1", "expected_output": "2"},
                     {"stdin": "2", "expected_output": "5"},
                     {"stdin": "3", "expected_output": "6", "repeat": 2}],
           "stop_on_failure": True}
    res = run(client, job)
    assert [s["verdict"] for s in res["steps"]] == ["ok", "wrong_answer", "cancelled"]
    assert res["verdict"] == "wrong_answer"
    job["stop_on_failure"] = False
    res = run(client, job)
    assert [s["verdict"] for s in res["steps"]] == ["ok", "wrong_answer", "ok"]
    assert res["steps"][2]["repeat"]["runs"] == 2


def test_time_limit_and_tokens_compare(client: httpx.Client):
    res = run(client, {"profile": "bash", "files": {"main.sh": "while :; do :; done"},
                       "limits": {"cpu_time": 0.3}})
    assert res["verdict"] == "time_limit"
    res = run(client, {"profile": "python3", "files": {"main.py": "print(0.30000001)"},
                       "expected_output": "0.3", "compare": "tokens", "float_tolerance": 1e-6})
    assert res["verdict"] == "ok"


def test_size_limits_take_strings(client: httpx.Client):
    res = run(client, {"profile": "python3", "files": {"main.py": "x = bytearray(200 << 20)"},
                       "limits": {"memory": "64M"}})
    assert res["verdict"] == "memory_limit"


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(("job", "code"), [
    ({"profile": "nope"}, "unknown_profile"),
    ({"profile": "python3", "limits": {"memory": "100G"}}, "limit_exceeded"),
    ({"profile": "python3", "limits": {"cpu_time": 10_000}}, "limit_exceeded"),
    ({"files": {}}, "invalid_field"),
    ({"profile": "python3", "colour": "red"}, "invalid_field"),
    ({"profile": "python3", "files": {"../x": "a"}}, "invalid_field"),
    ({"profile": "python3", "files": {"/etc/x": "a"}}, "invalid_field"),
    ({"profile": "python3", "files": {"a": "x", "a/b": "y"}}, "invalid_field"),
    ({"profile": "python3", "files": {"a": {"base64": "!!"}}}, "invalid_field"),
    ({"profile": "python3", "files": {"a": 3}}, "invalid_field"),
    ({"profile": "python3", "argv": []}, "invalid_field"),
    ({"profile": "python3", "argv": ["a\x00b"]}, "invalid_field"),
    ({"profile": "python3", "env": {"1X": "a"}}, "invalid_field"),
    ({"profile": "python3", "limits": {"memory": True}}, "invalid_field"),
    ({"profile": "python3", "limits": {"pids": "many"}}, "invalid_field"),
    ({"profile": "python3", "limits": {"bogus": 1}}, "invalid_field"),
    ({"profile": "python3", "compare": "fuzzy"}, "invalid_field"),
    ({"profile": "python3", "float_tolerance": 0.1}, "invalid_field"),
    ({"profile": "python3", "tests": []}, "invalid_job"),  # compile only: nothing to compile
    ({"profile": "python3", "stdin": "x", "tests": [{}]}, "invalid_field"),
    ({"profile": "python3", "tests": [{"repeat": 0}]}, "invalid_field"),
    ({"profile": "python3", "stop_on_failure": "yes"}, "invalid_field"),
    ([1, 2], "invalid_field"),
])
def test_bad_jobs_are_refused_with_the_protocols_codes(client: httpx.Client, job: Any,
                                                       code: str):
    r = client.post("/v1/jobs", json=job)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == code and r.json()["message"]


def test_malformed_json_and_bad_query(client: httpx.Client):
    r = client.post("/v1/jobs", content=b'{"profile": ')
    assert r.status_code == 400 and r.json()["error"] == "malformed"
    r = client.post("/v1/jobs", content=b"\xff\xfe")
    assert r.status_code == 400 and r.json()["error"] == "malformed"
    r = client.post("/v1/jobs", params={"wait": "maybe"}, json={"profile": "bash"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_field"


# ------------------------------------------------------------------ background jobs


def test_wait_false_then_poll(client: httpx.Client):
    r = client.post("/v1/jobs", params={"wait": "false"},
                    json={"profile": "python3", "files": {"main.py": "print('later')"}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.headers["location"] == f"/v1/jobs/{job_id}"
    res = wait_done(client, job_id)
    assert res["verdict"] == "ok" and res["steps"][0]["stdout"] == "later\n"
    # A finished result is kept; DELETE forgets it.
    assert client.get(f"/v1/jobs/{job_id}/").json() == res
    r = client.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 200 and r.json() == {"id": job_id, "cancelled": False}
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404


def test_delete_cancels_a_background_job(client: httpx.Client):
    r = client.post("/v1/jobs?wait=false", json={"profile": "bash",
                                                 "files": {"main.sh": "sleep 30"}})
    job_id = r.json()["id"]
    wait_listed(client, job_id)
    r = client.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 202 and r.json()["cancelled"] is True
    res = wait_done(client, job_id)
    assert res["verdict"] == "cancelled"
    assert res["steps"][0]["reason"] == "cancelled by the client"


def test_unknown_job_ids(client: httpx.Client):
    for r in (client.get("/v1/jobs/nope"), client.delete("/v1/jobs/nope"),
              client.post("/v1/kill/v1-0/nope")):
        assert r.status_code == 404 and r.json()["error"] == "unknown_job"


# ------------------------------------------------------------------ ps, kill, stats


def test_ps_and_kill_by_ref(client: httpx.Client):
    r = client.post("/v1/jobs?wait=false", json={"profile": "bash",
                                                 "files": {"main.sh": "sleep 30"}})
    job_id = r.json()["id"]
    listed = wait_listed(client, job_id)
    assert listed["profile"] == "bash" and listed["client"].startswith("http ")
    r = client.post(f"/v1/kill/{listed['ref']}")
    assert r.status_code == 200 and r.json() == {"job": listed["ref"], "found": True}
    res = wait_done(client, job_id)
    assert res["verdict"] == "cancelled" and "kill" in res["steps"][0]["reason"]


def test_a_client_that_goes_away_cancels_its_job(client: httpx.Client, base_url: str):
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}/v1/jobs", json={"profile": "bash",
                                                "files": {"main.sh": "sleep 30"}}, timeout=1.5)
    for _ in range(400):
        if not client.get("/v1/ps").json()["jobs"]:
            break
        time.sleep(0.05)
    assert client.get("/v1/ps").json()["jobs"] == []
    assert client.get("/v1/stats").json()["counters"].get("verdict_cancelled", 0) >= 1


def test_stats_profiles_health(client: httpx.Client, http_daemon: Daemon):
    st = client.get("/v1/stats").json()
    assert st["jobs_completed"] >= 1 and st["pools"] and "pool_hits" in st["counters"]
    profiles = {p["name"]: p for p in client.get("/v1/profiles").json()["profiles"]}
    assert profiles["c"]["compiled"] and not profiles["python3"]["compiled"]
    assert profiles["python3"]["default_limits"]["memory"] > 0
    assert profiles["python3"]["version"]
    assert client.get("/v1/health").json()["status"] == "ok"
