"""The node's lean Redis connection (sandboxd/front/_resp.py) against a real redis-server:
passwords and ACL users, the database in the URL, the script cache lost, a connection
killed by the server or cut mid-command, and the URLs it leaves to coredis."""

from __future__ import annotations

import pytest
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import ResponseError

from sandboxd.front._resp import LeanRedis, open_lean
from sandboxd_testing.redis_server import RedisServer

pytestmark = [pytest.mark.root]

SCRIPT = "return {KEYS[1], ARGV[1]}"


def lean(url: str) -> LeanRedis:
    conn = open_lean(url)
    assert conn is not None, url
    return conn


def test_passwords_users_and_the_database_in_the_url(redis_server: RedisServer) -> None:
    port = redis_server.port

    async def main() -> None:
        admin = lean(f"redis://127.0.0.1:{port}/0")
        assert await admin.execute("ACL", "SETUSER", "sbx", "on", ">pw", "~*", "+@all") == b"OK"
        assert await admin.execute("CONFIG", "SET", "requirepass", "s3cret") == b"OK"
        await admin.aclose()
        nobody = lean(f"redis://127.0.0.1:{port}/0")
        with pytest.raises(ResponseError, match="NOAUTH"):
            await nobody.execute("GET", "k")
        await nobody.aclose()
        wrong = lean(f"redis://:nope@127.0.0.1:{port}/0")
        with pytest.raises(ResponseError, match=r"WRONGPASS|invalid"):
            await wrong.execute("PING")
        await wrong.aclose()
        default = lean(f"redis://:s3cret@127.0.0.1:{port}/2")
        assert await default.execute("SET", "k", b"v\r\n\x00") == b"OK"
        user = lean(f"redis://sbx:pw@127.0.0.1:{port}/2")
        assert await user.execute("GET", "k") == b"v\r\n\x00"
        other_db = lean(f"redis://sbx:pw@127.0.0.1:{port}/0")
        assert await other_db.execute("GET", "k") is None
        for c in (default, user, other_db):
            await c.aclose()

    trio.run(main)


def test_scripts_survive_a_flushed_cache_and_errors_keep_the_connection(
        redis_server: RedisServer) -> None:
    async def main() -> None:
        c = lean(redis_server.url)
        assert await c.script(SCRIPT, ["a"], ["1"]) == [b"a", b"1"]  # EVAL: not cached yet
        assert await c.script(SCRIPT, ["b"], ["2"]) == [b"b", b"2"]  # EVALSHA
        assert await c.execute("SCRIPT", "FLUSH") == b"OK"  # as a restarted Redis
        assert await c.script(SCRIPT, ["c"], [3]) == [b"c", b"3"]
        with pytest.raises(ResponseError, match="ERR"):
            await c.execute("NOSUCHCOMMAND")
        assert await c.execute("PING") == b"PONG"  # the same connection, still in step
        await c.aclose()

    trio.run(main)


def test_a_killed_or_cut_connection_reconnects(redis_server: RedisServer) -> None:
    async def main() -> None:
        c = lean(redis_server.url)
        other = lean(redis_server.url)
        cid = await c.execute("CLIENT", "ID")
        assert await other.execute("CLIENT", "KILL", "ID", cid) == 1
        with pytest.raises(RedisConnectionError):
            await c.execute("PING")
        assert await c.execute("PING") == b"PONG"  # connected again
        with trio.move_on_after(0.2) as cut:  # a blocked read cut midway (a node stopping)
            await c.execute("XREAD", "BLOCK", 5000, "STREAMS", "sandboxd:test-empty", "$")
        assert cut.cancelled_caught
        assert await c.execute("PING") == b"PONG"  # not the XREAD's late reply
        await c.aclose()
        await other.aclose()
        redis_server.stop()
        with pytest.raises(RedisConnectionError):
            await c.execute("PING")

    trio.run(main)


@pytest.mark.parametrize("url", ["rediss://127.0.0.1:6379/0",
                                 "redis://127.0.0.1:6379/0?ssl_cert_reqs=none",
                                 "redis://127.0.0.1:6379/x", "unix://"])
def test_urls_it_leaves_to_coredis(url: str) -> None:
    assert open_lean(url) is None


def test_urls_it_takes() -> None:
    assert open_lean("redis://127.0.0.1:6379") is not None
    assert open_lean("redis://u:p%40ss@127.0.0.1:6379/3") is not None
    assert open_lean("unix:///run/redis/redis.sock?db=1") is not None
