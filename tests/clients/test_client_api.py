"""The clients against a real daemon: the same results blocking or async, many jobs on one
connection, streaming in order, stdin as you go, cancel, disconnect, kill and ps."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import trio
from client_helpers import SLEEPER, run_async, shape

import sandboxd_client as sc
from sandboxd_testing.daemon import Daemon

pytestmark = pytest.mark.root

C_SUM = r"""
#include <stdio.h>
int main(void) { long a, b; scanf("%ld %ld", &a, &b); printf("%ld\n", a + b); return 0; }
"""

# (profile, files, options): a bit of everything a job can carry and every common verdict.
JOBS: list[tuple[str, dict[str, str], dict[str, object]]] = [
    ("bash", {"main.sh": "echo out; echo err >&2; exit 3"}, {}),
    ("python3", {"main.py": "print(input()[::-1])"}, {"stdin": "stressed\n"}),
    ("bash", {"main.sh": "kill -SEGV $$"}, {}),
    ("bash", {"main.sh": "while :; do :; done"}, {"limits": {"cpu_time": 0.2}}),
    ("python3", {"main.py": "print('x' * 5000)"}, {"limits": {"output": "1K"}}),
    ("bash", {"main.sh": 'echo "$GREETING"'}, {"env": {"GREETING": "hi"}}),
    ("bash", {"lib.sh": "echo from lib"}, {"argv": ["bash", "lib.sh"]}),
    (
        "c",
        {"main.c": C_SUM},
        {
            "tests": [
                sc.Test(stdin="1 2", expected_output="3"),
                {"stdin": "2 2", "expected_output": "5"},
                sc.Test(stdin="7 -7", expected_output="0", limits={"cpu_time": 1}),
            ]
        },
    ),
    ("c", {"main.c": "int main( {"}, {}),
    (
        "python3",
        {"main.py": "print(1.0000001, 2)"},
        {"expected_output": "1 2", "compare": "tokens", "float_tolerance": 1e-3},
    ),
]


def test_blocking_and_async_clients_give_the_same_results(tmp_path: Path) -> None:
    with Daemon(tmp_path, pool_profiles=["bash", "python3"]) as d:
        with sc.Client(d.socket) as client:
            blocking = [client.run(p, f, **kw) for p, f, kw in JOBS]  # type: ignore[arg-type]

        async def run_all() -> list[sc.JobResult]:
            async with sc.AsyncClient(d.socket) as client:
                return [await client.run(p, f, **kw) for p, f, kw in JOBS]  # type: ignore[arg-type]

        for library in ("asyncio", "trio"):
            assert [shape(r) for r in run_async(library, run_all)] == [shape(r) for r in blocking]
    verdicts = [r.verdict for r in blocking]
    assert verdicts == [
        "runtime_error",
        "ok",
        "runtime_error",
        "time_limit",
        "output_limit",
        "ok",
        "ok",
        "wrong_answer",
        "compile_error",
        "ok",
    ]
    out, rev, segv, tl, ol, env, argv, batch, cerr, tokens = blocking
    assert (out.final.exit_code, out.stdout, out.stderr, out.exit_status) == (
        3,
        b"out\n",
        b"err\n",
        3,
    )
    assert rev.text == "desserts\n" and rev.final.cpu_time > 0 and rev.final.memory_peak > 0
    assert segv.final.signal == 11 and segv.exit_status == 139
    assert tl.final.reason == "cpu" and tl.exit_status == 124
    assert ol.final.stdout_truncated and len(ol.stdout) <= 1024 and ol.exit_status == 153
    assert env.text == "hi\n" and argv.text == "from lib\n"
    assert batch.compile is not None and batch.compile.ok
    assert [s.verdict for s in batch.steps] == ["ok", "wrong_answer", "ok"]
    assert cerr.compile is not None and not cerr.steps and b"error" in cerr.stderr
    assert cerr.final is cerr.compile and cerr.exit_status == 1
    assert tokens.ok


def _echo(i: int) -> dict[str, str]:
    return {"main.sh": f"echo job {i}; echo err {i} >&2"}


@pytest.mark.parametrize("library", ["asyncio", "trio"])
def test_100_concurrent_jobs_over_one_async_connection(tmp_path: Path, library: str) -> None:
    n = 100

    async def main() -> list[sc.JobResult]:
        async with sc.AsyncClient(d.socket) as client:
            if library == "asyncio":
                return list(await asyncio.gather(*(client.run("bash", _echo(i)) for i in range(n))))
            results: list[sc.JobResult | None] = [None] * n

            async def one(i: int) -> None:
                results[i] = await client.run("bash", _echo(i))

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i)
            return [r for r in results if r is not None]

    with Daemon(tmp_path, pool_profiles=["bash"], pool_size=2, queue_length=2 * n) as d:
        start = time.monotonic()
        results = run_async(library, main)
        elapsed = time.monotonic() - start
        assert len(results) == n
        for i, r in enumerate(results):
            assert (r.verdict, r.stdout, r.stderr) == (
                "ok",
                f"job {i}\n".encode(),
                f"err {i}\n".encode(),
            )
        assert len({r.id for r in results}) == n
        assert d.stats().jobs_completed == n
    assert elapsed < 30


def test_many_jobs_over_one_blocking_connection(tmp_path: Path) -> None:
    with Daemon(tmp_path, pool_profiles=["bash"]) as d, sc.Client(d.socket) as client:
        handles = [client.submit("bash", _echo(i)) for i in range(20)]
        for i, handle in reversed(list(enumerate(handles))):  # any order of collecting
            assert handle.result().text == f"job {i}\n"


# The pauses after each mark let the daemon read (and stream) what came before it, however
# loaded the host: without them a fast run could end before the first read, in one chunk.
STREAMER = r"""
import sys, time
for i in range(3000):
    print(f"line {i:05d}", flush=(i % 7 == 0))
    if i % 500 == 0:
        print(f"mark {i}", file=sys.stderr, flush=True)
        time.sleep(0.02)
"""


def test_streaming_order_is_preserved(tmp_path: Path) -> None:
    with Daemon(tmp_path, pool_profiles=["python3"]) as d:
        with sc.Client(d.socket) as client, client.stream("python3", {"main.py": STREAMER}) as job:
            chunks = list(job)
            result = job.result()

        async def collect() -> tuple[list[sc.Output], sc.JobResult]:
            async with (
                sc.AsyncClient(d.socket) as client,
                await client.stream("python3", {"main.py": STREAMER}) as job,
            ):
                got = [chunk async for chunk in job]
                return got, await job.result()

        for got, res in [
            (chunks, result),
            *(run_async(lib, collect) for lib in ("asyncio", "trio")),
        ]:
            out = b"".join(c.data for c in got if c.stream == "stdout")
            err = b"".join(c.data for c in got if c.stream == "stderr")
            assert out == res.stdout and err == res.stderr  # every byte, in order
            lines = out.decode().splitlines()
            assert lines == [f"line {i:05d}" for i in range(3000)]
            assert err.decode().splitlines() == [f"mark {i}" for i in range(0, 3000, 500)]
            assert all(c.step == 0 and not c.compile for c in got)
            assert len(got) > 2


def test_output_arrives_while_the_job_runs_and_stdin_goes_as_you_go(tmp_path: Path) -> None:
    echo_loop = 'while read line; do echo "got $line"; done; echo bye'
    with Daemon(tmp_path, pool_profiles=["bash"]) as d, sc.Client(d.socket) as client:
        with client.stream("bash", {"main.sh": echo_loop}, interactive_stdin=True) as job:
            for word in ("one", "two"):
                job.write(f"{word}\n")
                chunk = job.next_output(timeout=10)
                assert chunk is not None and chunk.text == f"got {word}\n"
                assert not job.done  # streamed while the program still runs
            job.close_stdin()
            assert [c.text for c in job] == ["bye\n"]
            assert job.result().ok
        with pytest.raises(ValueError, match="interactive_stdin"):
            client.submit("bash", {"main.sh": ""}).write("x")

        async def interactive() -> list[str]:
            async with sc.AsyncClient(d.socket) as client:
                job = await client.stream("bash", {"main.sh": echo_loop}, interactive_stdin=True)
                async with job:
                    await job.write(b"three\n")
                    first = await job.__anext__()
                    await job.close_stdin()
                    return [first.text] + [c.text async for c in job]

        assert run_async("trio", interactive) == ["got three\n", "bye\n"]


def test_cancel(tmp_path: Path) -> None:
    with Daemon(tmp_path, pool_profiles=["bash"]) as d:
        with sc.Client(d.socket) as client:
            with client.stream("bash", SLEEPER) as job:
                assert job.next_output(timeout=10).text == "started\n"  # type: ignore[union-attr]
                job.cancel()
                r = job.result(timeout=10)
            assert r.verdict == "cancelled" and r.final.reason == "cancelled by the client"
            assert r.exit_status == sc.EXIT_SANDBOX
            # leaving the block early cancels too, and the connection goes on
            with client.stream("bash", SLEEPER) as job:
                next(iter(job))
            assert job.done and job.result().verdict == "cancelled"
            assert client.jobs() == []

        async def cancelled_caller(library: str) -> None:
            async with sc.AsyncClient(d.socket) as client:
                if library == "asyncio":
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(client.run("bash", SLEEPER), 0.5)
                else:
                    with trio.move_on_after(0.5):
                        await client.run("bash", SLEEPER)
                # the abandoned job is cancelled on the daemon, by a task of the client
                for _ in range(100):
                    if not await client.jobs():
                        break
                    await (asyncio.sleep(0.05) if library == "asyncio" else trio.sleep(0.05))
                assert await client.jobs() == []
                assert (await client.run("bash", {"main.sh": "echo alive"})).text == "alive\n"

        for library in ("asyncio", "trio"):
            run_async(library, lambda library=library: cancelled_caller(library))


def test_disconnect_cancels_the_connections_jobs(tmp_path: Path) -> None:
    with Daemon(tmp_path, pool_profiles=["bash"]) as d, sc.Client(d.socket) as watcher:
        client = sc.Client(d.socket)
        job = client.stream("bash", SLEEPER)
        assert job.next_output(timeout=10) is not None
        assert [j.state for j in watcher.jobs()] == ["running"]
        client.close()  # mid-job
        deadline = time.monotonic() + 10
        while watcher.jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.jobs() == []
        with pytest.raises(sc.SandboxdError):
            client.ping()


def test_ps_and_kill_from_another_connection(tmp_path: Path) -> None:
    with Daemon(tmp_path, pool_profiles=["bash"]) as d:
        owner = sc.Client(d.socket, name="judge/7")
        with owner, sc.Client(d.socket) as admin:
            job = owner.stream("bash", {"main.sh": "echo started; while :; do :; done"})
            assert job.next_output(timeout=10) is not None
            time.sleep(0.2)
            (info,) = admin.jobs()
            assert info.id.endswith(f"/{job.id}") and info.state == "running"
            assert info.profile == "bash" and info.client == "judge/7" and info.elapsed > 0
            assert info.cpu_time is not None and info.cpu_time > 0.05
            assert info.memory is not None and info.memory > 0
            assert admin.kill("nope/1") is False
            assert admin.kill(info.id) is True
            r = job.result(timeout=10)
            assert r.verdict == "cancelled" and r.final.reason == "killed by sandboxctl kill"
            assert admin.jobs() == [] and admin.kill(info.id) is False

            async def async_kill() -> bool:
                async with sc.AsyncClient(d.socket) as client:
                    return await client.kill("9/none")

            assert run_async("asyncio", async_kill) is False


def test_requests_and_the_welcome(tmp_path: Path) -> None:
    with Daemon(tmp_path, pool_profiles=["bash"]) as d, sc.Client(d.socket) as client:
        assert client.server.startswith("sandboxd/") and client.version == 1
        names = {p.name for p in client.profiles()}
        assert {"bash", "python3", "c"} <= names
        assert 0 < client.ping() < 5
        stats = client.stats()
        assert stats.connections >= 1 and any(p.profile == "bash" for p in stats.pools)

        async def both() -> tuple[float, list[str], int]:
            async with sc.AsyncClient(d.socket) as client:
                rtt = await client.ping()
                return rtt, [p.name for p in client.profiles()], (await client.stats()).connections

        rtt, async_names, conns = run_async("trio", both)
        assert set(async_names) == names and conns >= 2 and rtt > 0


def test_blocking_client_reads_while_it_writes_and_is_thread_safe(tmp_path: Path) -> None:
    """Big submissions while big results come back, from one thread: a client that only
    wrote would wait on a daemon that only writes. Then six threads share one client."""
    blob = b"x" * (12 << 20)
    two_mib = {"main.sh": "head -c 2000000 /dev/zero | tr '\\0' y"}
    with (
        Daemon(tmp_path, pool_profiles=["bash"], pool_size=2, queue_length=100) as d,
        sc.Client(d.socket) as client,
    ):
        handles = [client.submit("bash", {**two_mib, "blob": blob}) for _ in range(12)]
        for h in handles:
            r = h.result(timeout=60)
            assert r.ok and r.stdout == b"y" * 2000000

        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                for i in range(10):
                    assert client.run("bash", {"main.sh": f"echo {k}-{i}"}).text == f"{k}-{i}\n"
                client.jobs()
                client.ping()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and not any(t.is_alive() for t in threads)
