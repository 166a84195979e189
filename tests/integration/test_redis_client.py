"""The plans' Redis client against a real redis-server: pipelined replies in step, a silent
server timed out, a restarted one reached again with its scripts sent anew."""

from __future__ import annotations

import asyncio
import socket
import time

from mediaproxy.server.redis_client import RedisClient, RedisError, Script
from testbed.redisserver import RedisServer


def test_replies_stay_in_step_with_their_commands(redis_url: str) -> None:
    async def check() -> None:
        client = RedisClient(redis_url, 2.0)
        counts = await asyncio.gather(*(client.call("INCR", "n") for _ in range(200)))
        assert sorted(counts) == list(range(1, 201))  # type: ignore[type-var]
        outcomes = await client.pipeline([["SET", "k", "v"], ["NOSUCH"], ["GET", "k"]])
        assert outcomes[0] == b"OK" and isinstance(outcomes[1], RedisError)
        assert outcomes[2] == b"v"
        await client.close()

    asyncio.run(check())


def test_a_cancelled_caller_does_not_shift_the_next_reply(redis_url: str) -> None:
    async def check() -> None:
        client = RedisClient(redis_url, 2.0)
        await client.call("SET", "a", "1")
        waiting = asyncio.ensure_future(client.call("BLPOP", "nothing", "0.2"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        assert await client.call("GET", "a") == b"1"  # not BLPOP's nil
        await client.close()

    asyncio.run(check())


def test_a_silent_server_fails_the_calls_within_the_timeout_and_the_next_call_reconnects() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(1)

        async def check() -> None:
            client = RedisClient(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", 0.2)
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(client.call("PING") for _ in range(3)), return_exceptions=True
            )
            assert all(isinstance(outcome, RedisError) for outcome in outcomes), outcomes
            assert time.monotonic() - started < 1.0
            outcomes = await asyncio.gather(client.call("PING"), return_exceptions=True)
            assert isinstance(outcomes[0], RedisError)
            await client.close()

        asyncio.run(check())
        for _ in range(2):  # one connection for the three calls, a second for the next
            silent.accept()[0].close()


def test_a_restarted_redis_is_reached_again_and_given_the_script(own_redis: RedisServer) -> None:
    async def check() -> None:
        client = RedisClient(own_redis.url, 1.0)
        script = Script("return redis.call('INCR', KEYS[1])")
        assert await client.evalsha(script, ["c"], []) == 1
        own_redis.kill()
        try:
            await client.call("PING")
        except RedisError:
            pass
        else:
            raise AssertionError("a killed Redis answered")
        own_redis.start()  # empty: no key, no script
        assert await client.evalsha(script, ["c"], []) == 1
        assert await client.evalsha(script, ["c"], []) == 2
        await client.close()

    asyncio.run(check())
