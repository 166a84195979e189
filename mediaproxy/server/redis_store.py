"""Usage plans kept in Redis, so they hold across every instance that shares it.

Each check is one Lua script, run atomically by Redis (no other client's command runs between
its reads and writes), and each reads Redis' own clock (``TIME``), so instances whose clocks
differ still agree on a key's rate. The patterns are the well-known ones:

- rate: GCRA (``streaming.usage.gcra``, restated in Lua): one string per key, its TAT,
  expiring once it is in the past;
- quotas: a counter per key and calendar period (``INCRBY``), expiring after its period;
- stream cap: leased slots, a sorted set per key of lease ids scored by their expiry. Expired
  leases are dropped before counting, and this instance renews its own every third of
  ``lease_s`` while their streams run, so a crashed instance's slots come back within
  ``lease_s``.

The admission script checks the quotas, the cap and the rate and changes nothing unless all
pass; then it counts the rate and adds the lease.

Every Redis error (refused connection, reset, timeout, a script error) is a
``SharedStateError``; ``server.usage.PlanGuard`` applies the failure policy. redis-py's own
retries are off: the guard's timeout is the whole budget of a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from redis import asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from mediaproxy.config import SharedState
from mediaproxy.server.usage import PlanKey, SharedStateError
from mediaproxy.streaming.usage import Refusal, period_end_s, period_number

log = logging.getLogger("mediaproxy")

# KEYS: rate TAT, stream leases, then one counter per quota.
# ARGV: interval s, tolerance s (0 0: no rate), stream cap (0: none), lease id, lease ms,
#       bytes to reserve, then per quota its limit in bytes and its counter's lifetime in s.
# Returns {0} admitted, or {reason, wait}: 1 rate, 2 quota (wait: quota index), 3 streams.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_ms = math.floor(now * 1000)
for k = 3, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[k]) or '0')
  if used >= tonumber(ARGV[2 * k + 1]) then return {2, tostring(k - 3)} end
end
local cap = tonumber(ARGV[3])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[2]) >= cap then return {3, '0'} end
end
local interval = tonumber(ARGV[1])
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  local allowed_from = tat - tonumber(ARGV[2])
  if now < allowed_from then return {1, tostring(allowed_from - now)} end
  local new_tat = tat + interval
  redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
end
if cap > 0 then
  local lease_ms = tonumber(ARGV[5])
  redis.call('ZADD', KEYS[2], now_ms + lease_ms, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], lease_ms)
end
local reserve = tonumber(ARGV[6])
if reserve > 0 then
  for k = 3, #KEYS do
    redis.call('INCRBY', KEYS[k], reserve)
    redis.call('EXPIRE', KEYS[k], ARGV[2 * k + 2])
  end
end
return {0}
"""

# KEYS: quota counters. ARGV: amount, then each counter's lifetime in seconds.
_CHARGE = """
local counts = {}
for i = 1, #KEYS do
  local count = redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[i + 1])
  counts[i] = count
end
return counts
"""

# KEYS: stream leases, then the quota counters to refund. ARGV: lease id ('' none), refund.
_END = """
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local refund = tonumber(ARGV[2])
if refund > 0 then
  for k = 2, #KEYS do
    if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('DECRBY', KEYS[k], refund) end
  end
end
return 1
"""

# KEYS: stream leases. ARGV: lease ms, then the lease ids this instance still holds.
_RENEW = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], until_ms, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

_REFUSALS = {1: "rate", 3: "streams"}
# How long the unsent bytes of ended streams wait to be given back together: they stay counted
# that much longer, the safe side of a quota.
SETTLE_S = 0.05
# A counter outlives its period by a day, so a refund arriving late finds it.
_QUOTA_SLACK_S = 86400


class RedisStore:
    """The ``UsageStore`` on a Redis server, through redis-py's asyncio client."""

    def __init__(self, settings: SharedState) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.prefix = settings.key_prefix
        self.client = aioredis.from_url(
            settings.redis_url,
            socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._admit = self.client.register_script(_ADMIT)
        self._charge = self.client.register_script(_CHARGE)
        self._renew = self.client.register_script(_RENEW)
        self._end = self.client.register_script(_END)
        self.leases: dict[str, dict[str, None]] = {}  # leases key -> lease ids held here
        self._endings: list[tuple[list[str], list[Any]]] = []  # (keys, args) of _END, to send
        self._settling: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        try:
            for script in (self._admit, self._charge, self._renew, self._end):
                await self.client.script_load(script.script)
        except (RedisError, OSError) as error:
            raise SharedStateError(f"{type(error).__name__}: {error}") from error

    def _leases_key(self, key: PlanKey) -> str:
        return f"{self.prefix}streams:{key.key_id}"

    def _quota_keys(self, key: PlanKey, periods: tuple[int, ...]) -> list[str]:
        return [
            f"{self.prefix}{quota.period}:{number}:{key.key_id}"
            for quota, number in zip(key.quotas, periods)
        ]

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as error:
            raise SharedStateError(f"{type(error).__name__}: {error}") from error

    async def admit(
        self, key: PlanKey, lease_id: str, now_s: float, reserve_bytes: int
    ) -> Refusal | None:
        periods = tuple(period_number(quota.period, now_s) for quota in key.quotas)
        args: list[Any] = [
            key.rate.interval_s if key.rate else 0,
            key.rate.tolerance_s if key.rate else 0,
            key.plan.max_concurrent_streams,
            lease_id,
            math.ceil(self.settings.lease_s * 1000),
            reserve_bytes,
        ]
        for quota, lifetime in zip(key.quotas, self._lifetimes(key, now_s)):
            args += [quota.limit_bytes, lifetime]
        answer = await self._run(
            self._admit,
            [
                f"{self.prefix}rate:{key.key_id}",
                self._leases_key(key),
                *self._quota_keys(key, periods),
            ],
            args,
        )
        code = int(answer[0])
        if code == 0:
            if key.plan.max_concurrent_streams:
                self.leases.setdefault(self._leases_key(key), {})[lease_id] = None
                self._start_renewing()
            return None
        if code == 2:
            quota = key.quotas[int(answer[1])]
            return Refusal(quota.period, period_end_s(quota.period, now_s) - now_s)
        return Refusal(_REFUSALS[code], float(answer[1]))

    async def charge(self, key: PlanKey, periods: tuple[int, ...], amount: int) -> tuple[int, ...]:
        counts = await self._run(
            self._charge,
            self._quota_keys(key, periods),
            [amount, *self._lifetimes(key, time.time())],
        )
        return tuple(int(count) for count in counts)

    @staticmethod
    def _lifetimes(key: PlanKey, now_s: float) -> list[int]:
        """Each quota counter lives until its period ends, and a day more (a late refund)."""
        return [
            math.ceil(period_end_s(quota.period, now_s) - now_s) + _QUOTA_SLACK_S
            for quota in key.quotas
        ]

    async def end(
        self, key: PlanKey, lease_id: str | None, periods: tuple[int, ...], refund_bytes: int
    ) -> None:
        leases_key = self._leases_key(key)
        held = self.leases.get(leases_key)
        if held is not None and lease_id is not None:
            held.pop(lease_id, None)
            if not held:
                del self.leases[leases_key]
        if not key.plan.max_concurrent_streams:
            lease_id = None  # none was taken
        if lease_id is None and not refund_bytes:
            return
        keys = [leases_key, *self._quota_keys(key, periods)]
        if lease_id is not None:
            # A slot comes back at once: a player's next range request must find it free.
            await self._run(self._end, keys, [lease_id, refund_bytes])
            return
        self._endings.append((keys, ["", refund_bytes]))
        if self._settling is None:
            self._settling = asyncio.ensure_future(self._settle())
        await asyncio.shield(self._settling)

    async def _settle(self) -> None:
        """The unsent bytes of the streams that ended in the last ``SETTLE_S``, given back in
        one round trip: a script per response would compete with the next request's own."""
        await asyncio.sleep(SETTLE_S)
        endings, self._endings, self._settling = self._endings, [], None
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for keys, args in endings:
                    await self._end(keys=keys, args=args, client=pipe)
                await pipe.execute()
        except (RedisError, OSError) as error:
            raise SharedStateError(f"{type(error).__name__}: {error}") from error

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.ensure_future(self._renew_leases())

    async def _renew_leases(self) -> None:
        """Every third of the lease, push back the expiry of every lease this instance holds;
        a failed round is tried again at the next (a lease survives two missed rounds)."""
        lease_ms = math.ceil(self.settings.lease_s * 1000)
        while self.leases:
            await asyncio.sleep(self.settings.lease_s / 3)
            for leases_key, held in list(self.leases.items()):
                if not held:
                    continue
                try:
                    await asyncio.wait_for(
                        self._run(self._renew, [leases_key], [lease_ms, *held]),
                        self.settings.timeout_s,
                    )
                except (SharedStateError, asyncio.TimeoutError):
                    break  # the guard logs outages from requests; the next round retries

    async def close(self) -> None:
        if self._settling is not None:
            with contextlib.suppress(SharedStateError):
                await self._settling
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()
