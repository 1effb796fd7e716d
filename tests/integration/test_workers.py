"""``workers = 2``: one daemon of two supervisor processes (sandboxd/workers.py), end to end.

Which worker accepts a connection is the kernel's choice (both wait on the
shared listening socket), so each test opens connections until it has jobs
on both workers (a job's reference carries its worker: ``w<k>-<conn>/<id>``),
and then checks what a client must see: ps lists every worker's jobs from any
connection, kill reaches a job on either worker, stats sum the workers, SIGTERM
drains both, a killed worker is restarted while the other serves on, and a
killed daemon takes its workers with it. The autouse fixture then proves no
process, cgroup or mount is left. Nothing here is timed.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import threading
import time

import pytest

import sandboxd_protocol as proto
from sandboxd.config import ConfigError, load
from sandboxd_testing import leftovers
from sandboxd_testing.daemon import Client, Daemon

SLEEPER = {"main.sh": b"echo started; sleep 30; echo never"}
SHORT = {"main.sh": b"echo started; sleep 2; echo finished"}
MAX_CONNECTIONS = 24  # to land on both workers: all on one is a 2^-23 chance if fair


def ps(d: Daemon) -> dict[str, proto.JobInfo]:
    """The daemon's ps from a fresh connection, by the job's own id (after the '/')."""
    c = d.connect()
    try:
        c.send(proto.JobListRequest())
        ev = c.next()
        assert isinstance(ev, proto.JobList), ev
        return {j.id.split("/", 1)[1]: j for j in ev.jobs}
    finally:
        c.close()


def worker_of(ref: str) -> int:
    m = re.match(r"w(\d+)-\d+/", ref)
    assert m, f"a job reference without its worker: {ref}"
    return int(m.group(1))


def wait_for_output(c: Client, job_id: str) -> None:
    while True:
        ev = c.next()
        if isinstance(ev, proto.OutputChunk) and ev.id == job_id:
            return


def jobs_on_both(d: Daemon, files: dict[str, bytes],
                 want: tuple[int, ...] = (0, 1)) -> dict[str, tuple[Client, int]]:
    """Connections, one job each (named after the connection), until the jobs are on
    every worker of ``want``: {job id: (its connection, its worker)}."""
    out: dict[str, tuple[Client, int]] = {}
    for i in range(MAX_CONNECTIONS):
        c = d.connect()
        c.submit(f"j{i}", files=files, stream=True)
        ev = c.next()
        assert isinstance(ev, proto.JobAcceptance), ev
        out[f"j{i}"] = (c, worker_of(ps(d)[f"j{i}"].id))
        if set(want) <= {w for _c, w in out.values()}:
            return out
    raise AssertionError(f"{MAX_CONNECTIONS} connections, all on one worker")


def log_events(d: Daemon, name: str) -> list[str]:
    return [line for line in d.log.read_text().splitlines() if f"event={name} " in line]


def worker_pids(d: Daemon) -> dict[int, int]:
    """{worker index: pid} of the live workers, from the log and the process tree."""
    children = {c for c, p in leftovers.parents().items() if p == d.pid}
    found: dict[int, int] = {}
    for line in log_events(d, "worker_ready"):
        m = re.search(r" worker=(\d+) pid=(\d+)", line)
        if m and int(m.group(2)) in children:
            found[int(m.group(1))] = int(m.group(2))
    return found


# ------------------------------------------------------------ configuration


def test_workers_configuration_is_checked():
    assert load(env={}).workers == 1
    assert load(env={"SANDBOXD_WORKERS": "2", "SANDBOXD_CONCURRENCY": "4"}).workers == 2
    with pytest.raises(ConfigError, match="workers must be 1 to"):
        load(env={}, workers=0)
    with pytest.raises(ConfigError, match="must not exceed concurrency"):
        load(env={}, workers=3, concurrency=2)
    with pytest.raises(ConfigError, match=r"node_id .* is too long"):
        load(env={}, workers=2, concurrency=2, node_id="n" * 126)
    with pytest.raises(ConfigError, match=r"instance .* is too long"):
        load(env={}, workers=2, concurrency=2, instance="i" * 62)


def test_shares_add_up():
    from sandboxd.workers import share, worker_cpus

    for total in range(0, 9):
        for n in range(1, 5):
            assert sum(share(total, k, n) for k in range(n)) == total
    assert [worker_cpus([0, 1, 2, 3], k, 2) for k in range(2)] == [[0, 2], [1, 3]]
    assert [worker_cpus([5], k, 2) for k in range(2)] == [[5], [5]]


# ------------------------------------------------------------ the daemon


@pytest.mark.root
def test_ps_stats_kill_see_every_worker(tmp_path):
    with Daemon(tmp_path, workers=2, concurrency=4, pool_profiles=["bash"]) as d:
        jobs = jobs_on_both(d, SLEEPER)
        for job_id, (c, _w) in jobs.items():
            if ps(d)[job_id].state == "running":
                wait_for_output(c, job_id)
        # ps, from a connection of its own (on either worker): every job, both workers.
        listed = ps(d)
        assert set(jobs) <= set(listed)
        assert {worker_of(listed[j].id) for j in jobs} == {0, 1}
        assert {worker_of(listed[j].id) for j in jobs} == {w for _c, w in jobs.values()}
        # stats: the sums of the workers', and each worker's own figures.
        st = d.stats()
        assert st.counters["workers"] == 2 and st.counters["workers_answering"] == 2
        assert st.jobs_running + st.jobs_queued == len(jobs)
        assert st.jobs_running == st.counters["w0_jobs_running"] + st.counters["w1_jobs_running"]
        assert st.counters["w0_jobs_running"] >= 1 and st.counters["w1_jobs_running"] >= 1
        # kill, from one connection, a job on each worker (whichever it landed on).
        killer = d.connect()
        for job_id in jobs:
            killer.send(proto.KillRequest(job=listed[job_id].id))
            ev = killer.next()
            assert isinstance(ev, proto.KillResult) and ev.found, ev
        killer.send(proto.KillRequest(job="w1-999/nope"))
        ev = killer.next()
        assert isinstance(ev, proto.KillResult) and not ev.found
        for job_id, (c, _w) in jobs.items():
            res, _ = c.result(job_id)
            assert isinstance(res, proto.JobResult), res
            assert res.steps[0].verdict == "cancelled", res.steps[0]
        assert not (set(jobs) & set(ps(d)))
        # Many short jobs at once from the same connections (so on both workers).
        errors: list[BaseException] = []

        def loop(c: Client, name: str) -> None:
            try:
                for k in range(8):
                    r = c.run(f"{name}-{k}", files={"main.sh": b"echo hi"})
                    assert r.steps[0].stdout == b"hi\n"
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=loop, args=(c, name))
                   for name, (c, _w) in jobs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        st = d.stats()
        assert st.jobs_completed == len(jobs) * 9
        per = [st.counters["w0_jobs_completed"], st.counters["w1_jobs_completed"]]
        assert sum(per) == st.jobs_completed and min(per) >= 9
        # Cancel is the connection's own, on its own worker.
        c, w = next(iter(jobs.values()))
        c.submit("cancel-me", files=SLEEPER, stream=True)
        wait_for_output(c, "cancel-me")
        assert worker_of(ps(d)["cancel-me"].id) == w
        c.send(proto.Cancellation(id="cancel-me"))
        res, _ = c.result("cancel-me")
        assert isinstance(res, proto.JobResult) and res.steps[0].verdict == "cancelled"
        for c, _w in jobs.values():
            c.close()


@pytest.mark.root
def test_sigterm_drains_jobs_on_both_workers(tmp_path):
    d = Daemon(tmp_path, workers=2, concurrency=2, pool_profiles=["bash"]).start()
    try:
        jobs = jobs_on_both(d, SHORT)
        for job_id, (c, _w) in jobs.items():
            if ps(d)[job_id].state == "running":
                wait_for_output(c, job_id)
        running = {j for j, info in ps(d).items() if info.state == "running"}
        assert {w for j, (_c, w) in jobs.items() if j in running} == {0, 1}
        d.proc.send_signal(signal.SIGTERM)
        for job_id in running:
            res, _ = jobs[job_id][0].result(job_id)
            assert isinstance(res, proto.JobResult), res
            assert res.steps[0].verdict == "ok" and res.steps[0].stdout.endswith(b"finished\n")
        assert d.proc.wait(60) == 0
        assert not os.path.exists(d.socket)
        state = d.config["state_dir"]
        assert not [n for n in os.listdir(state) if n.startswith("sandboxd-worker-")]
        assert len(log_events(d, "worker_stopped")) == 2
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)


@pytest.mark.root
def test_a_killed_worker_is_restarted_and_the_daemon_serves_on(tmp_path):
    with Daemon(tmp_path, workers=2, concurrency=2, pool_profiles=["bash"]) as d:
        jobs = jobs_on_both(d, SLEEPER)
        victim_job = next(j for j, (_c, w) in jobs.items() if w == 1)
        survivor_job = next(j for j, (_c, w) in jobs.items() if w == 0)
        pids = worker_pids(d)
        assert set(pids) == {0, 1}
        doomed = leftovers.descendants(pids[1]) | {pids[1]}  # its zygote, its containers
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises((ConnectionError, OSError)):
            jobs[victim_job][0].result(victim_job)
        deadline = time.monotonic() + 10
        while leftovers.alive(doomed) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers.alive(doomed) == set()
        while time.monotonic() < deadline + 20 and set(worker_pids(d)) != {0, 1}:
            time.sleep(0.05)
        assert set(worker_pids(d)) == {0, 1} and worker_pids(d)[1] != pids[1]
        assert log_events(d, "worker_died") and log_events(d, "worker_restarted")
        assert [ln for ln in log_events(d, "removed_stale") if " worker=1 " in ln]
        # The other worker's job never noticed; the restarted one takes jobs again.
        assert ps(d)[survivor_job].state in ("running", "queued")
        # Jobs that last (as every other here): an instant one could end before `ps`
        # lists it, and its worker would be unknown (seen once in a clean-clone CI run).
        again = jobs_on_both(d, {"main.sh": b"sleep 2; echo again"}, want=(1,))
        for job_id, (c, _w) in again.items():
            res, _ = c.result(job_id)
            assert isinstance(res, proto.JobResult) and res.steps[0].stdout == b"again\n"
            c.close()
        assert d.stats().counters["workers_answering"] == 2
        for c, _w in jobs.values():
            c.close()


@pytest.mark.root
def test_a_killed_daemon_takes_its_workers_and_the_restart_cleans_up(tmp_path):
    d = Daemon(tmp_path, workers=2, concurrency=2, pool_profiles=["bash"]).start()
    try:
        jobs = jobs_on_both(d, SLEEPER)
        ours = leftovers.descendants(d.pid)  # workers, zygotes, fork servers, containers
        assert len(ours) >= 10
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        deadline = time.monotonic() + 10
        while leftovers.alive(ours) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers.alive(ours) == set()
        for c, _w in jobs.values():
            c.close()
        d.start()  # the same instance: the workers' stale cgroups go first
        assert log_events(d, "removed_stale_workers")
        r = d.connect().run("after", files={"main.sh": b"echo back"})
        assert r.steps[0].stdout == b"back\n"
    finally:
        if d.proc is not None and d.proc.poll() is None:
            assert d.stop() == 0


def owner_of(ident: str) -> int:
    """The worker (of 2) that minted an HTTP id (sandboxd/front/http/_route.py)."""
    return int(ident[:8], 16) % 2


@pytest.mark.root
def test_http_is_served_by_every_worker(tmp_path):
    """Every worker serves HTTP; what HTTP keeps (a Judge0 submission, a background job,
    an uploaded workspace) is reachable through whichever worker a request lands on."""
    import io
    import tarfile

    import httpx

    def fresh(d: Daemon) -> httpx.Client:  # a new connection: it lands on either worker
        return httpx.Client(base_url=f"http://{d.http_address}", timeout=60,
                            limits=httpx.Limits(max_keepalive_connections=0))

    with Daemon(tmp_path, ("--http", "127.0.0.1:0"), workers=2, concurrency=4,
                pool_profiles=["bash"], http_loopback_open=True) as d, fresh(d) as http:
        ready = {re.search(r" worker=(\d+) ", ln).group(1): ln  # type: ignore[union-attr]
                 for ln in log_events(d, "worker_ready")}
        assert all(f" http={d.http_address} " in ready[k] for k in ("0", "1")), ready
        bash = next(x["id"] for x in http.get("/languages").json()
                    if x["name"].startswith("Bash"))
        # Judge0: submissions land on both workers (their tokens say which made them).
        made: dict[str, str] = {}
        for n in range(60):
            r = http.post("/submissions?base64_encoded=false",
                          json={"language_id": bash, "source_code": f"echo sub-{n}"})
            assert r.status_code == 201, r.text
            made[r.json()["token"]] = f"sub-{n}\n"
            if len(made) >= 8 and {owner_of(t) for t in made} == {0, 1}:
                break
        assert {owner_of(t) for t in made} == {0, 1}, "every submission landed on one worker"
        for token, out in made.items():  # each read lands anywhere, and finds its result
            deadline = time.monotonic() + 60
            while True:
                r = http.get(f"/submissions/{token}?fields=stdout,status_id")
                assert r.status_code == 200, r.text
                if r.json()["status_id"] > 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert r.json() == {"stdout": out, "status_id": 3}, (token, r.text)
        tokens = list(made)
        r = http.get("/submissions/batch", params={"tokens": ",".join(tokens),
                                                   "fields": "token,stdout"})
        assert r.status_code == 200, r.text
        assert r.json()["submissions"] == [{"token": t, "stdout": made[t]} for t in tokens]
        r = http.get("/submissions/batch", headers={"tokens": ",".join(tokens)},
                     params={"base64_encoded": "true", "fields": "stdout"})
        assert [base64.b64decode(x["stdout"]) for x in r.json()["submissions"]] == \
            [made[t].encode() for t in tokens]
        unknown = "00000001-0000-4000-8000-000000000000"  # worker 1's by its first bits
        assert http.get(f"/submissions/{unknown}").status_code == 404
        # /v1: background jobs, polled, logged and cancelled through either worker.
        ids: list[str] = []
        while {owner_of(i) for i in ids} != {0, 1} and len(ids) < 60:
            r = http.post("/v1/jobs?wait=false", json={
                "profile": "bash", "files": {"main.sh": f"echo bg-{len(ids)}; sleep 0.2"}})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        assert {owner_of(i) for i in ids} == {0, 1}
        for n, job_id in enumerate(ids):
            deadline = time.monotonic() + 60
            while (view := http.get(f"/v1/jobs/{job_id}").json())["state"] != "done":
                assert time.monotonic() < deadline, view
                time.sleep(0.05)
            assert view["steps"][0]["stdout"] == f"bg-{n}\n", view
            for follow in ("false", "true"):  # a followed log is streamed back
                r = http.get(f"/v1/jobs/{job_id}/log", params={"follow": follow})
                assert r.status_code == 200 and r.content == f"bg-{n}\n".encode(), r.text
            assert http.delete(f"/v1/jobs/{job_id}").json() == {"id": job_id,
                                                                 "cancelled": False}
            assert http.get(f"/v1/jobs/{job_id}").json()["error"] == "unknown_job"
        # An HTTP job's ref names its worker: kill through any worker finds it.
        killed: set[int] = set()
        for _ in range(40):
            job_id = http.post("/v1/jobs?wait=false", json={
                "profile": "bash", "files": {"main.sh": "sleep 60"}}).json()["id"]
            deadline = time.monotonic() + 30
            while not (refs := [j["ref"] for j in http.get("/v1/ps").json()["jobs"]
                                if j["id"] == job_id]):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert refs[0].startswith(f"w{owner_of(job_id)}-v1-"), refs
            r = http.post(f"/v1/kill/{refs[0]}")
            assert r.status_code == 200 and r.json()["found"] is True, r.text
            deadline = time.monotonic() + 30
            while (view := http.get(f"/v1/jobs/{job_id}").json())["state"] != "done":
                assert time.monotonic() < deadline, view
                time.sleep(0.05)
            assert view["steps"][0]["verdict"] == "cancelled", view
            killed.add(owner_of(job_id))
            if killed == {0, 1}:
                break
        assert killed == {0, 1}
        # Workspaces: an upload on one worker, its job submitted through any.
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo("data.txt")
            info.size = 6
            t.addfile(info, io.BytesIO(b"alpha\n"))
        seen: set[int] = set()
        for _ in range(40):
            w = http.post("/v1/workspaces", content=buf.getvalue()).json()["workspace"]
            seen.add(owner_of(w))
            r = http.post("/v1/jobs", json={"profile": "bash", "workspace": w,
                                            "files": {"main.sh": "cat data.txt"}})
            assert r.status_code == 200 and r.json()["steps"][0]["stdout"] == "alpha\n", \
                r.text
            if seen == {0, 1}:
                break
        assert seen == {0, 1}
        # Every worker answered requests: /metrics sums them (whichever worker answers).
        text = http.get("/metrics").text
        created = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("sandboxd_http_requests_total{")
                      and 'route="/submissions"' in line and 'method="POST"' in line
                      and 'status="201"' in line)
        assert created == len(made), text
        assert d.connect().run("m", files={"main.sh": b"echo msgpack"}).steps[0].stdout \
            == b"msgpack\n"


@pytest.mark.root
def test_http_connections_spread_over_the_workers(tmp_path):
    """Eight HTTP clients connecting at once land four and four (give or take one): a
    worker with more connections lets its sibling accept first, as on the msgpack
    socket, so a few long-lived clients do not leave a worker's slots idle."""
    import httpx

    with Daemon(tmp_path, ("--http", "127.0.0.1:0"), workers=2, concurrency=4,
                pool_profiles=["bash"], http_loopback_open=True) as d:
        for _ in range(3):
            owners: list[int] = []
            clients = [httpx.Client(base_url=f"http://{d.http_address}", timeout=60)
                       for _ in range(8)]
            start = threading.Barrier(8)

            def one(http: httpx.Client, start: threading.Barrier, owners: list[int]) -> None:
                start.wait()
                assert http.get("/v1/health").status_code == 200  # its connection, now
                start.wait()  # every connection made before any job: none has ended
                r = http.post("/v1/jobs?wait=false",
                              json={"profile": "bash", "files": {"main.sh": "true"}})
                assert r.status_code == 202, r.text
                owners.append(owner_of(r.json()["id"]))

            threads = [threading.Thread(target=one, args=(c, start, owners)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            for c in clients:
                c.close()
            assert len(owners) == 8 and 3 <= owners.count(0) <= 5, owners


@pytest.mark.root
def test_http_ids_of_a_killed_worker_answer_unknown(tmp_path):
    """A worker's stored HTTP results die with it: a read of one of its tokens gets
    Judge0's 404 through the other worker, while it is down and after its restart, never
    an error of the relay; and the relay reaches the restarted worker again."""
    import httpx

    with Daemon(tmp_path, ("--http", "127.0.0.1:0"), workers=2, concurrency=2,
                pool_profiles=["bash"], http_loopback_open=True) as d:
        def fresh() -> httpx.Client:
            return httpx.Client(base_url=f"http://{d.http_address}", timeout=60,
                                limits=httpx.Limits(max_keepalive_connections=0))

        def submit(want: int) -> str:
            with fresh() as http:
                bash = next(x["id"] for x in http.get("/languages").json()
                            if x["name"].startswith("Bash"))
                for _ in range(80):
                    token = http.post("/submissions?wait=true", json={
                        "language_id": bash, "source_code": "echo kept"}).json()["token"]
                    if owner_of(token) == want:
                        return token
            raise AssertionError(f"no submission landed on worker {want}")

        lost, kept = submit(1), submit(0)
        with fresh() as http:  # both readable through either worker (keeps relays open)
            for _ in range(6):
                assert http.get(f"/submissions/{lost}").status_code == 200
        pids = worker_pids(d)
        os.kill(pids[1], signal.SIGKILL)
        deadline = time.monotonic() + 30
        answers: set[int] = set()
        while worker_pids(d).get(1) in (None, pids[1]):
            assert time.monotonic() < deadline, "worker 1 was not restarted"
            with fresh() as http:  # down: only worker 0 accepts, and relays in vain
                answers.add(http.get(f"/submissions/{lost}").status_code)
                assert http.get(f"/submissions/{kept}?fields=stdout").json() == \
                    {"stdout": "kept\n"}
            time.sleep(0.02)
        with fresh() as http:
            for _ in range(6):  # restarted: relayed to the new worker 1, which never had it
                answers.add(http.get(f"/submissions/{lost}").status_code)
                assert http.get(f"/submissions/{kept}?fields=stdout").json() == \
                    {"stdout": "kept\n"}
        assert answers == {404}, answers


@pytest.mark.root
def test_a_draining_daemon_refuses_new_connections(tmp_path):
    d = Daemon(tmp_path, workers=2, concurrency=2, pool_profiles=["bash"],
               grace_period=120.0).start()  # every admitted job finishes, queued ones too
    try:
        jobs = jobs_on_both(d, SHORT)
        d.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                c = Client(d.socket, hello=False, timeout=5)
            except (ConnectionRefusedError, FileNotFoundError):
                refused = True
            else:
                c.close()
                time.sleep(0.05)
        assert refused, "a draining daemon's socket still took connections"
        for job_id, (c, _w) in jobs.items():  # the admitted jobs still finish
            res, _ = c.result(job_id)
            assert isinstance(res, proto.JobResult) and res.steps[0].verdict == "ok", res
        assert d.proc.wait(60) == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)


@pytest.mark.root
def test_workers_never_share_a_uid_slot(tmp_path):
    """Each worker locks its slots through its own descriptor (slots.py): two workers'
    containers, running and warm, never run under the same host uid. (Each process's
    allocator starts at a random slot, so a shared descriptor would show here only when
    the two ranges met; the locks' own rules are tests/integration/test_slots.py's.)"""
    from sandboxd.isolation import identity

    with Daemon(tmp_path, workers=2, concurrency=4, pool_size=3,
                pool_profiles=["bash"]) as d:
        jobs = jobs_on_both(d, SLEEPER)
        d.wait_warm()
        pids = worker_pids(d)
        inits: dict[int, set[int]] = {}
        for k, pid in pids.items():
            mine = leftovers.descendants(pid)
            inits[k] = {uid for p, uid, _name in leftovers.container_processes()
                        if p in mine and uid < identity.JOB_BASE}
        assert len(inits[0]) >= 3 and len(inits[1]) >= 3, inits
        assert not inits[0] & inits[1], inits
        for c, _w in jobs.values():
            c.close()


@pytest.mark.root
def test_http_ps_kill_stats_metrics_see_every_worker(tmp_path):
    """HTTP's ps, kill, stats and /metrics are the whole daemon's, whichever worker answers:
    a job on worker 1 (submitted through the msgpack socket) shows, dies and counts there."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    def scrape(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        r = http.get("/metrics")
        assert r.status_code == 200, r.text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(r.text) for s in f.samples}

    with Daemon(tmp_path, ("--http", "127.0.0.1:0"), workers=2, concurrency=4,
                pool_profiles=["bash"], http_loopback_open=True) as d, \
            httpx.Client(base_url=f"http://{d.http_address}", timeout=60) as http:
        jobs = jobs_on_both(d, SLEEPER, want=(1,))
        on1 = next(j for j, (_c, w) in jobs.items() if w == 1)
        c1 = jobs[on1][0]
        # Every started job's step has its container (worker 0's extra jobs stay queued:
        # nothing there ends), so the pool counters stand still from here on.
        for job_id, (c, _w) in jobs.items():
            if ps(d)[job_id].state == "running":
                wait_for_output(c, job_id)
        # ps: worker 1's job, by the reference that names its worker.
        listed = {j["id"]: j for j in http.get("/v1/ps").json()["jobs"]}
        assert set(jobs) <= set(listed)
        ref = listed[on1]["ref"]
        assert worker_of(ref) == 1 and listed[on1]["state"] == "running"
        # stats: both workers answer; worker 1's running job is in the sums.
        st = http.get("/v1/stats").json()
        assert st["counters"]["workers"] == 2 and st["counters"]["workers_answering"] == 2
        assert st["counters"]["w1_jobs_running"] >= 1
        assert st["jobs_running"] + st["jobs_queued"] == len(jobs)
        assert st["jobs_completed"] == 0
        m = scrape(http)
        assert m["sandboxd_jobs_running", ()] + m["sandboxd_jobs_queued", ()] == len(jobs)
        assert m["sandboxd_workers_answering", ()] == 2
        # kill through HTTP: the job on worker 1 ends cancelled for its msgpack client.
        r = http.post(f"/v1/kill/{ref}")
        assert r.status_code == 200 and r.json() == {"job": ref, "found": True}, r.text
        res, _ = c1.result(on1)
        assert isinstance(res, proto.JobResult) and res.steps[0].verdict == "cancelled", res
        r = http.post("/v1/kill/w1-999/nope")
        assert r.status_code == 404 and r.json()["error"] == "unknown_job", r.text
        # A job that burns some CPU, on worker 1 too: the only jobs the daemon finished
        # are worker 1's, so every finished-job figure HTTP shows comes from there.
        burn = {"main.sh": b"i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo done"}
        assert c1.run("burn", files=burn).steps[0].stdout == b"done\n"
        st = http.get("/v1/stats").json()
        assert st["jobs_completed"] == 2 and st["counters"]["w1_jobs_completed"] == 2
        assert st["counters"]["w0_jobs_completed"] == 0
        m = scrape(http)
        bash = (("profile", "bash"),)
        assert m["sandboxd_jobs_total", (*bash, ("verdict", "cancelled"))] == 1
        assert m["sandboxd_jobs_total", (*bash, ("verdict", "ok"))] == 1
        assert m["sandboxd_steps_total", (("verdict", "cancelled"),)] == 1
        assert m["sandboxd_job_cpu_seconds_total", bash] > 0
        assert m["sandboxd_job_run_seconds_count", ()] == 2
        assert m["sandboxd_job_run_seconds_bucket", (("le", "+Inf"),)] == 2
        assert m["sandboxd_queue_wait_seconds_count", ()] == 2
        # Pool and container counters: the sums the msgpack socket's stats give (no step
        # starts meanwhile), worker 1's two steps included.
        summed = d.stats().counters
        took = m["sandboxd_pool_hits_total", ()] + m["sandboxd_pool_misses_total", ()]
        assert took == summed["pool_hits"] + summed["pool_misses"] >= 2
        assert m["sandboxd_containers_created_total", ()] >= 2
        for c, _w in jobs.values():
            c.close()
        # Every job gone: HTTP's ps is empty (worker 0's jobs were killed with their
        # connections), and the msgpack socket's stats still hide the metric counters.
        deadline = time.monotonic() + 30
        while http.get("/v1/ps").json()["jobs"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert http.get("/v1/ps").json()["jobs"] == []
        assert not [k for k in d.stats().counters if k.startswith("m.")]
