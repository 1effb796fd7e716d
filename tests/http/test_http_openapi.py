"""``/v1/openapi.json`` is a valid OpenAPI 3.1 document, and real responses of every /v1
route (successes and errors) match what it says of their route, method and status."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from websockets.sync.client import connect

from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def spec(http_daemon: Daemon) -> dict[str, Any]:
    doc = httpx.get(f"http://{http_daemon.http_address}/v1/openapi.json", timeout=60).json()
    validate(doc)
    return doc


def check(spec: dict[str, Any], route: str, r: httpx.Response) -> None:
    """``r`` is documented: its status under its route and method, its body valid."""
    operation = spec["paths"][route][r.request.method.lower()]
    documented = operation["responses"]
    assert str(r.status_code) in documented, (route, r.status_code, r.text)
    content = documented[str(r.status_code)].get("content")
    if content is None:
        return
    schema = {**content["application/json"]["schema"], "components": spec["components"]}
    errors = sorted(OAS31Validator(schema).iter_errors(r.json()), key=str)
    assert not errors, (route, r.status_code, r.json(), [e.message for e in errors])


def test_the_document_covers_v1(spec: dict[str, Any]):
    assert spec["openapi"].startswith("3.1")
    assert {"/v1/jobs", "/v1/jobs/{id}", "/v1/ps", "/v1/kill/{ref}", "/v1/stats",
            "/v1/profiles", "/v1/health", "/v1/jobs/stream", "/v1/openapi.json"} <= set(
        spec["paths"])


def test_real_responses_match_the_document(spec: dict[str, Any], client: httpx.Client):
    check(spec, "/v1/health", client.get("/v1/health"))
    check(spec, "/v1/openapi.json", client.get("/v1/openapi.json"))
    check(spec, "/v1/profiles", client.get("/v1/profiles"))
    check(spec, "/v1/stats", client.get("/v1/stats"))
    jobs = [
        {"profile": "python3",
         "files": {"main.py": "import sys; sys.stdout.buffer.write(b'\\xff')"}},
        {"profile": "c", "files": {"main.c": "int main(void){return 0;}"},
         "tests": [{"stdin": "1", "expected_output": "", "repeat": 2}, {"stdin": "2"}]},
        {"profile": "c", "files": {"main.c": "oops"}},
        {"profile": "nope"},
        {"profile": "bash", "limits": {"memory": "1T"}},
        {"profile": "bash", "files": {"../x": ""}},
    ]
    for job in jobs:
        check(spec, "/v1/jobs", client.post("/v1/jobs", json=job))
    check(spec, "/v1/jobs", client.post("/v1/jobs", content=b"{"))
    r = client.post("/v1/jobs?wait=false", json={"profile": "bash",
                                                 "files": {"main.sh": "sleep 30"}})
    check(spec, "/v1/jobs", r)
    job_id = r.json()["id"]
    check(spec, "/v1/jobs/{id}", client.get(f"/v1/jobs/{job_id}"))
    for _ in range(600):
        listed = client.get("/v1/ps")
        if listed.json()["jobs"]:
            break
        time.sleep(0.05)
    check(spec, "/v1/ps", listed)
    ref = listed.json()["jobs"][0]["ref"]
    check(spec, "/v1/kill/{ref}", client.post(f"/v1/kill/{ref}"))
    check(spec, "/v1/kill/{ref}", client.post("/v1/kill/v1-0/none"))
    for _ in range(600):
        r = client.get(f"/v1/jobs/{job_id}")
        if r.json()["state"] == "done":
            break
        time.sleep(0.05)
    check(spec, "/v1/jobs/{id}", r)
    check(spec, "/v1/jobs/{id}", client.delete(f"/v1/jobs/{job_id}"))
    check(spec, "/v1/jobs/{id}", client.delete(f"/v1/jobs/{job_id}"))
    check(spec, "/v1/jobs/{id}", client.get(f"/v1/jobs/{job_id}"))


def test_a_judged_job_matches_the_document(spec: dict[str, Any], client: httpx.Client):
    """A checker (partial points), a generator and batches over /v1 (PROTOCOL.md 4.1)."""
    checker = ("import sys\n"
               "got = open(sys.argv[2]).read().split()\n"
               "want = open(sys.argv[1]).read().split()\n"
               "if got == want: sys.exit(0)\n"
               "print('points 0.5 half', file=sys.stderr); sys.exit(7)\n")
    job = {
        "profile": "bash", "files": {"main.sh": "read x; [ \"$x\" = 2 ] && echo no || "
                                                 "echo $x"},
        "checker": {"profile": "python3", "files": {"main.py": checker},
                    "limits": {"cpu_time": 2}},
        "generators": [{"profile": "bash", "files": {"main.sh": "echo $1"}}],
        "tests": [{"stdin": "1\n"}, {"generator": 0, "generator_args": ["2"]},
                  {"stdin": "3\n"}],
        "batches": [{"name": "a", "tests": [0, 1], "points": 10},
                    {"name": "b", "tests": [2], "points": 5, "depends": ["a"]}],
    }
    r = client.post("/v1/jobs", json=job)
    check(spec, "/v1/jobs", r)
    body = r.json()
    assert [s["verdict"] for s in body["steps"]] == ["ok", "wrong_answer", "skipped"], body
    assert [s["score"] for s in body["steps"]] == [1.0, 0.5, 0.0]
    assert body["steps"][1]["checker_message"] == "points 0.5 half"
    assert body["steps"][0]["checker"]["verdict"] == "ok"
    assert body["score"] == 5.0 and body["batches"] == [
        {"name": "a", "verdict": "wrong_answer", "score": 5.0, "points": 10.0},
        {"name": "b", "verdict": "skipped", "score": 0.0, "points": 5.0}]
    bad = client.post("/v1/jobs", json={**job, "batches": [{"name": "a", "tests": [0]}]})
    check(spec, "/v1/jobs", bad)
    assert bad.status_code == 422 and "test 1 is in none" in bad.json()["message"]


def test_websocket_result_matches_the_job_result_schema(spec: dict[str, Any],
                                                        http_daemon: Daemon):
    with connect(f"ws://{http_daemon.http_address}/v1/jobs/stream", open_timeout=30) as c:
        c.send(json.dumps({"profile": "bash", "files": {"main.sh": "echo hi"}}))
        while (m := json.loads(c.recv(timeout=60)))["type"] != "result":
            pass
    del m["type"]
    schema = {"$ref": "#/components/schemas/JobResult", "components": spec["components"]}
    assert not list(OAS31Validator(schema).iter_errors(m))
