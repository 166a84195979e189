"""The fleet's live streams, through the Redis the plans share: what the status page's events
show when ``[shared_state] redis_url`` is set.

Each worker of each instance posts its running streams (the rows the page shows) once per
sample interval while it has any, as one field of a hash, with its expiry in a sorted set; a
reader first drops the fields whose expiry passed (a worker that died, or has had no stream
for a while), then reads the rest. A post outlives ``STALE_AFTER_S``, as the instance's own
files do, so a worker that stops posting leaves the page within it. Both keys expire too: a
fleet that is gone leaves nothing behind.

Redis away, the page shows what this instance alone knows (its workers' files), and says so
(the event's ``fleet`` is false).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from mediaproxy.ops.status import HOST, STALE_AFTER_S, OtherStreams, StreamBoard
from mediaproxy.server.redis_client import RedisClient, RedisError, Script

# KEYS: posts (hash), their expiries (sorted set). ARGV: poster, rows (JSON), lifetime ms.
_POST = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS: posts, expiries. Returns the live posts as {poster, rows, poster, rows, ...}.
_READ = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)
if #gone > 0 then
  redis.call('HDEL', KEYS[1], unpack(gone))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
end
return redis.call('HGETALL', KEYS[1])
"""


class FleetStreams:
    """A ``StreamBoard`` on Redis, in front of the instance's own (``local``, None with one
    process), which it also keeps posting to and falls back on."""

    def __init__(
        self, redis_url: str, timeout_s: float, prefix: str, local: StreamBoard | None
    ) -> None:
        self.client = RedisClient(redis_url, timeout_s)
        self.local = local
        # Unique per gateway: two instances on one host, or one reloaded, never share a post.
        self.poster = f"{HOST}:{os.getpid()}:{os.urandom(4).hex()}"
        self._keys = [f"{prefix}live", f"{prefix}live:expiry"]
        self._post = Script(_POST)
        self._read = Script(_READ)
        self._lifetime_ms = math.ceil(STALE_AFTER_S * 1000)

    async def post(self, rows: list[dict[str, Any]]) -> None:
        if self.local is not None:
            await self.local.post(rows)
        try:
            await self.client.evalsha(
                self._post, self._keys, [self.poster, json.dumps(rows), self._lifetime_ms]
            )
        except RedisError:
            pass  # the page falls back on the instance's own view meanwhile

    async def others(self) -> OtherStreams:
        try:
            reply = await self.client.evalsha(self._read, self._keys, [])
        except RedisError:
            return OtherStreams([], False) if self.local is None else await self.local.others()
        assert isinstance(reply, list)
        rows: list[dict[str, Any]] = []
        poster = self.poster.encode()
        for name, posted in zip(reply[::2], reply[1::2]):
            if name != poster and isinstance(posted, bytes):
                rows += json.loads(posted)
        return OtherStreams(rows, True)

    async def close(self) -> None:
        await self.client.close()
