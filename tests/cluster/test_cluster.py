"""Several sandboxd nodes on this machine fed from one real Redis (docs/cluster.md).

Each node is a real daemon (its own instance name, socket and cgroups) started
with ``redis = URL``; jobs go in through the client's ``redis://`` address.
What is checked: jobs spread over the nodes; a node SIGKILLed with jobs in
flight loses none of them (each is answered once, with the right output, by
a live node after the claim time) and leaves no container after its
restart; a job handed out past ``redis_max_deliveries`` ends
``sandbox_error``; results expire; a restarted Redis (append-only file)
loses no accepted job.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from sandboxd_client import Client, ConnectError
from sandboxd_protocol import cluster
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Daemon
from sandboxd_testing.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.root, pytest.mark.slow]


def node(tmp: Path, redis: RedisServer, name: str, **config: object) -> Daemon:
    config = {"redis": redis.url, "node_id": name, "concurrency": 2, "pool_profiles": ["bash"],
              "redis_claim_idle": 2.0, **config}
    return Daemon(tmp, **config)


def cli(redis: RedisServer, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(redis.port), *args], capture_output=True,
                          text=True, check=True).stdout.strip()


def ran_on(d: Daemon) -> int:
    """Cluster jobs this node finished (its log's job lines)."""
    return d.log.read_text().count("client=cluster@")


def wait_until(cond, timeout: float = 30.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def job_source(i: int, sleep: float) -> dict[str, str]:
    return {"main.sh": f"sleep {sleep}; echo job-{i}"}


def test_jobs_spread_over_nodes_and_answer_like_a_daemon(tmp_path, redis_server):
    with node(tmp_path, redis_server, "n1", concurrency=1), \
            node(tmp_path, redis_server, "n2", concurrency=1) as b:
        a_log = next(p for p in tmp_path.glob("sandboxd-d-*/daemon.log")
                     if "node=n1" in p.read_text())
        with Client(redis_server.url) as c:
            assert "bash" in [p.name for p in c.profiles()]
            jobs = [c.submit("bash", job_source(i, 0.3)) for i in range(8)]
            results = [j.result() for j in jobs]
            assert [r.text for r in results] == [f"job-{i}\n" for i in range(8)]
            assert {r.verdict for r in results} == {"ok"}
            # The same refusals as a daemon's.
            with pytest.raises(Exception, match="profile"):
                c.run("no-such-profile", {"a": "b"})
            # Streaming output comes over the cluster too, in order.
            with c.stream("bash", {"main.sh": "for i in 1 2 3; do echo $i; sleep 0.05; done"}) as j:
                assert "".join(o.text for o in j) == "1\n2\n3\n"
                assert j.result().verdict == "ok"
            stats = c.stats()
            assert stats.counters["cluster_nodes"] == 2
        n1 = a_log.read_text().count("client=cluster@n1")
        n2 = ran_on(b)
        assert n1 > 0 and n2 > 0, (n1, n2)  # a node with no free slot takes nothing
        assert n1 + n2 >= 8
    assert cli(redis_server, "XLEN", cluster.JOBS) == "0"  # acknowledged and deleted


def test_a_killed_node_loses_no_job_and_leaves_nothing(tmp_path, redis_server):
    a = node(tmp_path, redis_server, "n1").start()
    try:
        with node(tmp_path, redis_server, "n2", concurrency=1) as b, \
                Client(redis_server.url) as c:
            jobs = [c.submit("bash", job_source(i, 1.5)) for i in range(6)]
            wait_until(lambda: any(j.id.startswith("n1/") for j in c.jobs()),
                       what="n1 running a job")
            ours = leftovers.descendants(a.proc.pid)  # zygote, inits, job processes
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            results = [j.result(timeout=120) for j in jobs]
            assert [r.text for r in results] == [f"job-{i}\n" for i in range(6)]
            assert {r.verdict for r in results} == {"ok"}
            assert "event=job_claimed" in b.log.read_text()
            # Exactly once: one stored answer per job, and no entry left pending.
            assert cli(redis_server, "XLEN", cluster.JOBS) == "0"
            assert cli(redis_server, "XPENDING", cluster.JOBS, cluster.GROUP) .startswith("0")
            wait_until(lambda: not leftovers.alive(ours), 10, "the killed node's processes")
            # Restarted, the node removes its stale cgroups and rejoins.
            a.start()
            assert "event=removed_stale" in a.log.read_text()
            again = [c.submit("bash", job_source(i, 0.2)) for i in range(4)]
            assert [j.result().text for j in again] == [f"job-{i}\n" for i in range(4)]
    finally:
        if a.proc is not None and a.proc.poll() is None:
            assert a.stop() == 0


def test_a_job_delivered_past_the_limit_ends_sandbox_error(tmp_path, redis_server):
    a = node(tmp_path, redis_server, "n1", redis_max_deliveries=1, redis_claim_idle=1.0).start()
    try:
        with Client(redis_server.url) as c:
            job = c.submit("bash", job_source(0, 30))
            wait_until(lambda: any(j.id.startswith("n1/") for j in c.jobs()), what="n1 running")
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait(10)
            with node(tmp_path, redis_server, "n2", redis_max_deliveries=1,
                      redis_claim_idle=1.0):
                r = job.result(timeout=60)
            assert r.verdict == "sandbox_error"
            assert "redis_max_deliveries=1" in r.steps[0].reason
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.stop()
        a.start()  # its stale cgroups go
        assert a.stop() == 0


def test_results_expire(tmp_path, redis_server):
    with node(tmp_path, redis_server, "n1", redis_result_ttl=1.0), \
            Client(redis_server.url) as c:
        job = c.submit("bash", {"main.sh": "echo x"})
        assert job.result().text == "x\n"
        keys = cli(redis_server, "KEYS", "sandboxd:result:*").split()
        assert len(keys) == 1
        wait_until(lambda: cli(redis_server, "EXISTS", keys[0]) == "0", 10, "the result to expire")


def test_a_cancelled_job_ends_cancelled(tmp_path, redis_server):
    with node(tmp_path, redis_server, "n1"), Client(redis_server.url) as c:
        job = c.submit("bash", job_source(0, 30))
        wait_until(lambda: bool(c.jobs()), what="the job running")
        job.cancel()
        assert job.result(timeout=30).verdict == "cancelled"


def test_redis_restarted_mid_run_loses_no_accepted_job(tmp_path, redis_server):
    with node(tmp_path, redis_server, "n1"), node(tmp_path, redis_server, "n2"), \
            Client(redis_server.url) as c:
        jobs = [c.submit("bash", job_source(i, 1.0)) for i in range(8)]
        redis_server.stop()
        time.sleep(0.5)
        redis_server.start()
        results = [j.result(timeout=120) for j in jobs]
        assert [r.text for r in results] == [f"job-{i}\n" for i in range(8)]


def test_a_job_submitted_while_redis_restarts_is_queued_once_it_is_back(tmp_path,
                                                                        redis_server):
    """A submit that meets a restarting Redis is sent again (same id) until Redis is
    back, not refused: a refused submit whose job Redis had queued all the same would
    run for nobody (seen in the cluster soak: one stored answer more than accepted)."""
    import threading

    with node(tmp_path, redis_server, "n1"), Client(redis_server.url) as c:
        assert c.run("bash", job_source(0, 0)).text == "job-0\n"
        redis_server.stop()
        back = threading.Timer(1.0, redis_server.start)
        back.start()
        try:
            jobs = [c.submit("bash", job_source(i, 0)) for i in range(1, 4)]  # Redis away
        finally:
            back.join()
        assert [j.result(timeout=120).text for j in jobs] == [f"job-{i}\n" for i in (1, 2, 3)]
        stored = cli(redis_server, "KEYS", f"{cluster.PREFIX}result:*").split()
        assert len(stored) == 4, stored  # one answer per job, the duplicates' included


def test_every_connection_killed_mid_run_loses_no_job(tmp_path, redis_server):
    """Redis drops every client (``CLIENT KILL``) while jobs run and wait: the submitter's
    job path (submits written with its reply stream's read) and the node's (answers
    written with its next read, or in batches) reconnect, and every job is answered
    once, right, with the streamed output in order."""
    with node(tmp_path, redis_server, "n1"), Client(redis_server.url) as c:
        jobs = [c.submit("bash", job_source(i, 0.5)) for i in range(6)]
        streamed = c.submit("bash", {"main.sh": "for i in 1 2 3; do echo $i; sleep 0.3; done"},
                            stream=True)
        wait_until(lambda: bool(c.jobs()), what="jobs running")
        assert int(cli(redis_server, "CLIENT", "KILL", "TYPE", "normal")) >= 3
        results = [j.result(timeout=120) for j in jobs]
        assert [r.text for r in results] == [f"job-{i}\n" for i in range(6)]
        assert streamed.result(timeout=120).text == "1\n2\n3\n"
        more = [c.submit("bash", job_source(i, 0)) for i in range(6, 9)]  # after: as ever
        assert [j.result(timeout=60).text for j in more] == [f"job-{i}\n" for i in range(6, 9)]


def test_unreachable_redis_is_a_clear_connect_error():
    with pytest.raises(ConnectError, match="Redis"):
        Client(f"redis://127.0.0.1:{free_port()}/0", timeout=5)


def test_a_node_given_sigterm_hands_its_jobs_back(tmp_path, redis_server):
    """SIGTERM with jobs running past the grace period and more queued: the node stops
    taking jobs, hands the ones it could not finish back at once (no wait for the claim
    time), and the other node answers them: every job once, none as cancelled."""
    claim_idle = 60.0  # far longer than the test: a job comes back only by the hand-back
    a = node(tmp_path, redis_server, "n1", grace_period=0.5, redis_claim_idle=claim_idle)
    a.start()
    try:
        with node(tmp_path, redis_server, "n2", redis_claim_idle=claim_idle) as b, \
                Client(redis_server.url) as c:
            jobs = [c.submit("bash", job_source(i, 3.0)) for i in range(6)]
            wait_until(lambda: sum(j.id.startswith("n1/") for j in c.jobs()) == 2,
                       what="n1 running two jobs")
            t0 = time.monotonic()
            assert a.stop(signal.SIGTERM) == 0
            assert time.monotonic() - t0 < 30  # the grace period, far below claim_idle
            log = a.log.read_text()
            assert "event=cluster_handed_back" in log and "jobs=2" in log
            results = [j.result(timeout=120) for j in jobs]
            assert [r.text for r in results] == [f"job-{i}\n" for i in range(6)]
            assert {r.verdict for r in results} == {"ok"}
            assert "event=job_claimed" not in b.log.read_text()  # handed back, not claimed
            # Nothing doubled: one stored answer per job, nothing left queued or pending.
            assert len(cli(redis_server, "KEYS", "sandboxd:result:*").split()) == 6
            assert cli(redis_server, "XLEN", cluster.JOBS) == "0"
            assert cli(redis_server, "XPENDING", cluster.JOBS, cluster.GROUP).startswith("0")
            assert ran_on(b) == 6  # n1's two were cut short and rerun on n2
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.stop()


def test_interactive_stdin_over_the_cluster(tmp_path, redis_server):
    """stdin goes as the client writes it, output comes back while the job runs."""
    echo_loop = 'while read line; do echo "got $line"; done; echo bye'
    with node(tmp_path, redis_server, "n1"), Client(redis_server.url) as c:
        with c.stream("bash", {"main.sh": echo_loop}, interactive_stdin=True) as job:
            for word in ("one", "two"):
                job.write(f"{word}\n")
                chunk = job.next_output(timeout=30)
                assert chunk is not None and chunk.text == f"got {word}\n"
                assert not job.done  # the reply came while the program still reads
            job.close_stdin()
            assert [o.text for o in job] == ["bye\n"]
            assert job.result().ok
        # Answered: its stdin stream is gone from Redis.
        wait_until(lambda: cli(redis_server, "KEYS", "sandboxd:stdin:*") == "", 10,
                   "the stdin stream deleted")
