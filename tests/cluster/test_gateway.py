"""``sandboxd gateway``: the HTTP front door over a cluster, running nothing itself.

A real redis-server, one real node (which also serves HTTP itself: the local
daemon the gateway is held equal to) and a gateway process, all on loopback.
The same /v1, Judge0 and Piston requests go to both; their answers must match
but for timings and ids. Then ``ps``, ``stats``, cancel and kill through the
gateway, streaming over its WebSocket, and what it refuses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from sandboxd.front._cluster_service import FIRST_CONTACT
from sandboxd_testing.daemon import Daemon
from sandboxd_testing.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.root, pytest.mark.slow]

# What differs between two runs of one job: timings, memory, ids, timestamps.
VOLATILE = re.compile(r"(time|memory|_at$|^id$|^token$|^ref$|elapsed|wall|cpu|exit_signal)")


class Gateway:
    """``python -m sandboxd gateway`` as our child, its log and its HTTP address."""

    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.dir = tmp / "sandboxd-gateway"
        self.dir.mkdir()
        self.log = self.dir / "gateway.log"
        self.port = free_port()
        (self.dir / "gateway.toml").write_text(
            f'redis = "{redis_url}"\nhttp = "127.0.0.1:{self.port}"\n'
            "http_loopback_open = true\ngrace_period = 5.0\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandboxd", "gateway", "--config",
                 str(self.dir / "gateway.toml")], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while "event=ready" not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("sandboxd-gw")
    redis = RedisServer(tmp).start()
    node = Daemon(tmp, args=("--http", "127.0.0.1:0"), redis=redis.url, node_id="gw-n1",
                  concurrency=2, pool_profiles=["bash", "python3"], http_loopback_open=True)
    gw = Gateway(tmp, redis.url)
    try:
        node.start()
        gw.start()
        with httpx.Client(base_url=gw.url, timeout=120) as g, \
                httpx.Client(base_url=f"http://{node.http_address}", timeout=120) as local:
            wait_for(lambda: any(p["name"] == "bash" and p["available"] and p["version"]
                                 for p in g.get("/v1/profiles").json()["profiles"]),
                     "the node's profiles at the gateway")
            yield {"gw": g, "local": local, "gateway": gw, "node": node, "redis": redis}
    finally:  # everything stopped first, then the exit codes checked
        codes = {}
        try:
            if gw.proc is not None:
                codes["gateway"] = gw.stop()
            if node.proc is not None and node.proc.poll() is None:
                codes["node"] = node.stop()
        finally:
            redis.stop()
        assert set(codes.values()) <= {0}, (codes, gw.log.read_text()[-3000:])


def wait_for(cond: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stable(x: Any) -> Any:
    """``x`` without what differs between two runs of one job."""
    if isinstance(x, dict):
        return {k: stable(v) for k, v in x.items() if not VOLATILE.search(k)}
    if isinstance(x, list):
        return [stable(v) for v in x]
    return x


def both(cluster: dict[str, Any], method: str, path: str, body: Any = None
         ) -> tuple[httpx.Response, httpx.Response]:
    return (cluster["gw"].request(method, path, json=body),
            cluster["local"].request(method, path, json=body))


JOBS = [
    {"profile": "bash", "files": {"main.sh": "echo out; echo err >&2; exit 3"}},
    {"profile": "python3", "files": {"main.py": "print(input()[::-1])"}, "stdin": "abc\n"},
    {"profile": "bash", "files": {"main.sh": "read a b; echo $((a + b))"},
     "tests": [{"stdin": "1 2\n", "expected_output": "3\n"},
               {"stdin": "2 2\n", "expected_output": "5\n"}]},
    {"profile": "bash", "files": {"main.sh": "while :; do :; done"},
     "limits": {"cpu_time": 0.3}},
    {"profile": "python3", "files": {"main.py": "x = ' ' * (400 << 20)"},
     "limits": {"memory": 64 << 20}},
    # A judge's job (issue 17): its checker, batches and memory mode reach the node.
    {"profile": "python3", "files": {"main.py": "print(int(input()) * 2)"},
     "memory_mode": "address_space",
     "tests": [{"stdin": "2\n", "expected_output": "4\n"},
               {"stdin": "3\n", "expected_output": "7\n"}],
     "checker": {"profile": "python3", "files": {"main.py": (
         "import sys\nout, ans = (open(f).read().split() for f in sys.argv[2:4])\n"
         "print('compared', out, ans, file=sys.stderr)\nsys.exit(0 if out == ans else 1)\n")}},
     "batches": [{"name": "a", "tests": [0], "points": 40},
                 {"name": "b", "tests": [1], "points": 60}]},
]


@pytest.mark.parametrize("job", JOBS, ids=["exit", "stdin", "judged", "tle", "mle",
                                           "checker-batches"])
def test_v1_through_the_gateway_answers_as_the_daemon(cluster, job):
    gw, local = both(cluster, "POST", "/v1/jobs", job)
    assert gw.status_code == local.status_code == 200, (gw.text, local.text)
    assert stable(gw.json()) == stable(local.json())
    assert gw.json()["verdict"] == local.json()["verdict"]
    if "batches" in job:  # not a plain job's answer by mistake: the checker ran
        assert gw.json()["score"] == 40.0, gw.json()
        assert gw.json()["steps"][1]["checker_message"] == "compared ['6'] ['7']"


def test_v1_refusals_through_the_gateway_are_the_daemons(cluster):
    for body in ({"profile": "no-such", "files": {"a": "b"}},
                 {"profile": "bash", "files": {"main.sh": "true"}, "limits": {"cpu_time": 1e6}},
                 {"profile": "bash", "files": 3}):
        gw, local = both(cluster, "POST", "/v1/jobs", body)
        assert gw.status_code == local.status_code == 422 or gw.status_code == \
            local.status_code == 400, (body, gw.text, local.text)
        assert gw.json() == local.json()


def test_judge0_through_the_gateway_answers_as_the_daemon(cluster):
    for body in ({"source_code": "echo hi; exit 1", "language_id": 46},
                 {"source_code": "print(int(input()) * 2)", "language_id": 71, "stdin": "21",
                  "expected_output": "42"},
                 {"source_code": "print(1)", "language_id": 71, "expected_output": "2"}):
        gw, local = both(cluster, "POST", "/submissions?wait=true&base64_encoded=false", body)
        assert gw.status_code == local.status_code == 201, (gw.text, local.text)
        assert stable(gw.json()) == stable(local.json())


def test_piston_through_the_gateway_answers_as_the_daemon(cluster):
    for body in ({"language": "bash", "version": "*",
                  "files": [{"content": "echo hi; echo no >&2; exit 2"}]},
                 {"language": "python", "version": "*", "stdin": "5",
                  "files": [{"name": "main.py", "content": "print(int(input()) + 1)"}]}):
        gw, local = both(cluster, "POST", "/api/v2/execute", body)
        assert gw.status_code == local.status_code == 200, (gw.text, local.text)
        g, loc = stable(gw.json()), stable(local.json())
        # `output` is stdout and stderr in arrival order: two pipes race, either way.
        go, lo = g["run"].pop("output"), loc["run"].pop("output")
        assert sorted(go.splitlines()) == sorted(lo.splitlines())
        assert g == loc
    gw, local = both(cluster, "GET", "/api/v2/runtimes")
    assert gw.json() == local.json()


def test_ps_stats_and_kill_through_the_gateway(cluster):
    g = cluster["gw"]
    # Nodes announce their jobs every ~2 s, so an earlier test's job may still be listed as
    # running (a CI run killed that one by its ref, and this job ran to its time limit):
    # wait for the list to drop them, so the one bash job listed next is this one.
    wait_for(lambda: not [j for j in g.get("/v1/ps").json()["jobs"] if "/cluster/" in j["ref"]],
             "earlier tests' jobs to leave the gateway's ps")
    r = g.post("/v1/jobs?wait=false", json={"profile": "bash",
                                            "files": {"main.sh": "echo started; sleep 60"}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    listed: list[dict[str, Any]] = []

    def running() -> bool:
        # (not the node's own jobs)
        listed[:] = [j for j in g.get("/v1/ps").json()["jobs"]
                     if j["state"] == "running" and "/cluster/" in j["ref"]
                     and j["profile"] == "bash"]
        return bool(listed)

    wait_for(running, "the job in the gateway's ps")
    assert listed[0]["ref"].startswith("gw-n1/cluster/") and listed[0]["profile"] == "bash"
    stats = g.get("/v1/stats").json()
    assert stats["jobs_running"] >= 1 and stats["counters"]["cluster_nodes"] == 1
    assert stats["counters"]["gateway_jobs_in_flight"] >= 1
    metrics = g.get("/metrics")
    # (which jobs it counts depends on the module's earlier tests: the family is there)
    assert metrics.status_code == 200 and "# TYPE sandboxd_jobs_total" in metrics.text
    assert g.post(f"/v1/kill/{listed[0]['ref']}").json()["found"] is True
    wait_for(lambda: g.get(f"/v1/jobs/{job_id}").json()["state"] == "done", "the killed job")
    assert g.get(f"/v1/jobs/{job_id}").json()["verdict"] == "cancelled"
    assert g.post("/v1/kill/gw-n1/cluster/nonesuch").status_code == 404


def test_cancel_through_the_gateway(cluster):
    g = cluster["gw"]
    r = g.post("/v1/jobs?wait=false", json={"profile": "bash",
                                            "files": {"main.sh": "sleep 60"}})
    job_id = r.json()["id"]
    wait_for(lambda: any(j["state"] == "running" and "/cluster/" in j["ref"]
                         for j in g.get("/v1/ps").json()["jobs"]), "the job running")
    t0 = time.monotonic()
    assert g.delete(f"/v1/jobs/{job_id}").status_code in (200, 202)
    wait_for(lambda: g.get(f"/v1/jobs/{job_id}").json()["state"] == "done", "the cancel")
    assert g.get(f"/v1/jobs/{job_id}").json()["verdict"] == "cancelled"
    # The node stops it too: nothing of it stays listed, well before its 60 s.
    wait_for(lambda: not [j for j in g.get("/v1/ps").json()["jobs"] if "/cluster/" in j["ref"]],
             "the node to drop the job")
    assert time.monotonic() - t0 < 50


def test_websocket_streams_through_the_gateway_in_order(cluster):
    url = cluster["gateway"].url.replace("http://", "ws://") + "/v1/jobs/stream"
    with connect(url, open_timeout=30, close_timeout=30) as c:
        c.send(json.dumps({"profile": "bash", "interactive": False, "files": {
            "main.sh": "for i in 1 2 3 4 5; do echo $i; sleep 0.05; done"}}))
        seen = []
        while True:
            m = json.loads(c.recv(timeout=60))
            if m["type"] == "result":
                break
            seen.append(m)
    assert seen[0]["type"] == "accepted"
    assert "".join(m["data"] for m in seen if m["type"] == "output") == "1\n2\n3\n4\n5\n"
    assert m["verdict"] == "ok"


def test_interactive_stdin_through_the_gateway(cluster):
    """A playground's terminal through the gateway: type a line, read its echo."""
    url = cluster["gateway"].url.replace("http://", "ws://") + "/v1/jobs/stream"
    with connect(url, open_timeout=30, close_timeout=30) as c:
        c.send(json.dumps({"profile": "bash", "files": {
            "main.sh": 'while read l; do echo "echo: $l"; done; echo bye'}}))
        assert json.loads(c.recv(timeout=60))["type"] == "accepted"
        for word in ("first", "second"):
            c.send(json.dumps({"stdin": f"{word}\n"}))
            m = json.loads(c.recv(timeout=60))
            assert m["type"] == "output" and m["data"] == f"echo: {word}\n", m
        c.send(json.dumps({"eof": True}))
        rest = []
        while (m := json.loads(c.recv(timeout=60)))["type"] != "result":
            rest.append(m)
    assert "".join(x["data"] for x in rest) == "bye\n"
    assert m["verdict"] == "ok"


def test_the_gateway_runs_nothing_itself(cluster):
    """Every job the gateway answered ran on the node (its job lines say cluster@gw-n1)."""
    log = cluster["gateway"].log.read_text()
    assert "via=cluster" in log
    ran = cluster["node"].log.read_text().count("client=cluster@gw-n1")
    assert ran >= log.count("via=cluster") - log.count("verdict=cancelled")


def test_a_job_posted_while_redis_restarts_is_answered_once_it_is_back(cluster):
    """The gateway sends a submit that meets a restarting Redis again (same id) until
    Redis is back, as the cluster client does, rather than answering internal_error: a
    refused submit whose job Redis had queued all the same would run for nobody."""
    import threading

    redis = cluster["redis"]
    redis.stop()
    back = threading.Timer(1.0, redis.start)
    back.start()
    try:
        r = cluster["gw"].post("/v1/jobs", json={
            "profile": "bash", "files": {"main.sh": "echo back"}})
    finally:
        back.join()
    assert r.status_code == 200, r.text
    assert r.json()["steps"][0]["stdout"] == "back\n", r.json()


def _gateway_alone(tmp_path: Path, port: int) -> tuple[subprocess.CompletedProcess[str],
                                                        float]:
    gw = Gateway(tmp_path, f"redis://127.0.0.1:{port}/0")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sandboxd", "gateway", "--config",
                           str(gw.dir / "gateway.toml")], capture_output=True, text=True,
                          timeout=60)
    return proc, time.monotonic() - start


def test_unreachable_redis_fails_the_gateway_clearly(tmp_path):
    """The port is ours, bound and not listening, for the test's length: a free port
    that some other program takes meanwhile would test that program instead."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        proc, _ = _gateway_alone(tmp_path, held.getsockname()[1])
    assert proc.returncode == 1 and "cannot reach Redis" in proc.stderr, proc.stderr


def test_a_server_that_never_answers_fails_the_gateway_within_its_deadline(tmp_path):
    """Something that accepts the connection and says nothing (not Redis, or a Redis
    stopped with SIGSTOP): the gateway's first PING has a deadline, so it exits
    saying so rather than hanging for ever (CI once saw the hang: 60 s and killed)."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()  # the kernel completes the handshake; nobody ever answers
        proc, took = _gateway_alone(tmp_path, mute.getsockname()[1])
    assert proc.returncode == 1, proc.stderr
    assert "cannot reach Redis" in proc.stderr and "no answer to PING" in proc.stderr
    assert took >= FIRST_CONTACT, took
