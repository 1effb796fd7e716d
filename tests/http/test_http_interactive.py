"""``POST /v1/jobs`` with an ``interactor`` (issue 17): the guessing game of
examples/problems/guess/ through the HTTP front door, its step fields (``score``,
``checker_message``, ``interactor``) and its refusals; the OpenAPI document lists
them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import wait_idle

from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

GUESS = Path(__file__).resolve().parents[2] / "examples" / "problems" / "guess"
INTERACTOR = {"profile": "c", "files": {"main.c": (GUESS / "interactor.c").read_text()},
              "limits": {"cpu_time": 2}}


@pytest.fixture
def leftovers_view(http_daemon: Daemon) -> Iterator[leftovers.View | None]:
    """The module daemon's view once it is idle: an interactive test takes four containers
    of shapes the pool then refills, and refills still being built are not leftovers."""
    assert http_daemon.proc is not None
    wait_idle(http_daemon)
    inner = leftovers.daemon_view(http_daemon.proc.pid, http_daemon.config["instance"])

    def view(snap: leftovers.Snapshot) -> leftovers.Snapshot:
        wait_idle(http_daemon)
        return inner(snap)

    yield view


def job(solution: str, tests: list[str], **extra: Any) -> dict[str, Any]:
    return {"profile": "python3", "files": {"main.py": solution},
            "limits": {"cpu_time": 2, "wall_time": 10},
            "tests": [{"stdin": t} for t in tests], "interactor": INTERACTOR, **extra}


def test_the_guessing_game_over_http(client: httpx.Client) -> None:
    correct = (GUESS / "solutions" / "correct.py").read_text()
    r = client.post("/v1/jobs", json=job(correct, ["10 7\n", "1000 1\n"]))
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["verdict"] == "ok", res
    for step in res["steps"]:
        assert step["score"] == 1.0 and step["checker_message"].startswith("found in")
        assert step["interactor"]["exit_code"] == 0 and step["interactor"]["verdict"] == "ok"
    wrong = (GUESS / "solutions" / "wrong.py").read_text()
    res = client.post("/v1/jobs", json=job(wrong, ["10 7\n"])).json()
    assert res["verdict"] == "wrong_answer", res
    assert res["steps"][0]["checker_message"] == "wrong guess 1"


def test_subtasks_checker_and_compile_only_over_http(client: httpx.Client) -> None:
    """The merged /v1 paths of issue 17: an interactive problem with batches, a checker
    job, a compile-only job whose run limits are not checked."""
    linear = (GUESS / "solutions" / "linear.py").read_text()
    body = job(linear, ["8 3\n", "10 7\n", "100 100\n", "8 5\n"],
               batches=[{"name": "a", "tests": [0, 1], "points": 30},
                        {"name": "b", "tests": [2, 3], "points": 70, "stop_on_failure": True}])
    res = client.post("/v1/jobs", json=body).json()
    assert [s["verdict"] for s in res["steps"]] == ["ok", "wrong_answer", "wrong_answer",
                                                    "skipped"], res
    assert res["score"] == 15.0 and [b["score"] for b in res["batches"]] == [15.0, 0.0]
    checker = {"profile": "python3", "files": {"main.py": (
        "import sys\nout = open(sys.argv[2]).read().split()\n"
        "sys.exit(0 if out == ['42'] else 1)\n")}}
    res = client.post("/v1/jobs", json={
        "profile": "python3", "files": {"main.py": "print(6 * 7)"}, "checker": checker,
        "tests": [{"stdin": ""}]}).json()
    assert res["verdict"] == "ok" and res["score"] == 1.0, res
    assert res["steps"][0]["checker"]["exit_code"] == 0, res
    res = client.post("/v1/jobs", json={
        "profile": "c", "files": {"main.c": "int main(void) { return 0; }"}, "tests": [],
        "limits": {"memory": "1K"}}).json()
    assert res["compile"]["verdict"] == "ok" and res["steps"] == [], res


def test_bad_interactors_are_refused(client: httpx.Client) -> None:
    r = client.post("/v1/jobs", json=job("", ["1 1\n"], interactor={"files": {}}))
    assert r.status_code == 422 and "interactor.profile" in r.text, r.text
    r = client.post("/v1/jobs", json=job("", ["1 1\n"], interactor={"profile": "nope"}))
    assert r.status_code in (400, 404, 422) and "nope" in r.text, r.text
    r = client.post("/v1/jobs", json=job("", ["1 1\n"],
                                         interactor={"profile": "c", "extra": 1}))
    assert r.status_code == 422 and "extra" in r.text, r.text


def test_openapi_lists_the_interactor(client: httpx.Client) -> None:
    doc = client.get("/v1/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "interactor" in schemas["Job"]["properties"]
    assert set(schemas["Program"]["properties"]) == {"profile", "files", "argv", "limits"}
    assert {"score", "checker_message", "interactor"} <= set(schemas["StepResult"]["properties"])
    assert "judge_error" in schemas["StepResult"]["properties"]["verdict"]["enum"]
