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

Round trips: a request on a plan makes one before it is answered (the admission script), and
none after: its end (lease released, unsent bytes given back) joins the other ends of the
moment, one ``ZREM`` per key's leases and one refund per key's quotas however many streams
ended, in one write: at once when a slot comes back (a player's next range request must find
it free), else after ``SETTLE_S``. Nothing waits for those replies.

Every Redis error (refused connection, reset, timeout, a script error) is a
``SharedStateError``; ``server.usage.PlanGuard`` applies the failure policy. The client
(``server.redis_client``) fails a call after ``timeout_s`` and never retries by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from mediaproxy.config import SharedState
from mediaproxy.server.redis_client import (
    Argument,
    RedisClient,
    RedisError,
    Reply,
    Script,
    missing_script,
)
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

# KEYS: quota counters. ARGV: bytes to give back (to a counter of this period only: one that
# expired, or was never made, is not created below zero).
_REFUND = """
for k = 1, #KEYS do
  if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('DECRBY', KEYS[k], ARGV[1]) end
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
    """The ``UsageStore`` on a Redis server."""

    def __init__(self, settings: SharedState) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.prefix = settings.key_prefix
        self.client = RedisClient(settings.redis_url, settings.timeout_s)
        self._admit = Script(_ADMIT)
        self._charge = Script(_CHARGE)
        self._renew = Script(_RENEW)
        self._refund = Script(_REFUND)
        self._lease_ms = math.ceil(settings.lease_s * 1000)
        self.leases: dict[str, dict[str, None]] = {}  # leases key -> lease ids held here
        # What ended streams give back, until it is sent: lease ids per leases key, and bytes
        # per set of quota counters (summed: one command for many streams of a key).
        self._releases: dict[str, list[str]] = {}
        self._refunds: dict[tuple[str, ...], int] = {}
        self._flush: asyncio.Handle | None = None  # a TimerHandle while the refunds settle
        self._sending: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        scripts = (self._admit, self._charge, self._renew, self._refund)
        try:
            outcomes = await self.client.pipeline([["SCRIPT", "LOAD", s.source] for s in scripts])
        except RedisError as error:
            raise SharedStateError(f"{type(error).__name__}: {error}") from error
        for outcome in outcomes:
            if isinstance(outcome, RedisError):
                raise SharedStateError(f"{type(outcome).__name__}: {outcome}")

    def _leases_key(self, key: PlanKey) -> str:
        return f"{self.prefix}streams:{key.key_id}"

    def _quota_keys(self, key: PlanKey, periods: tuple[int, ...]) -> list[str]:
        return [
            f"{self.prefix}{quota.period}:{number}:{key.key_id}"
            for quota, number in zip(key.quotas, periods)
        ]

    async def _run(self, script: Script, keys: list[str], args: list[Argument]) -> Reply:
        try:
            return await self.client.evalsha(script, keys, args)
        except RedisError as error:
            raise SharedStateError(f"{type(error).__name__}: {error}") from error

    async def admit(
        self, key: PlanKey, lease_id: str, now_s: float, reserve_bytes: int
    ) -> Refusal | None:
        periods = tuple(period_number(quota.period, now_s) for quota in key.quotas)
        args: list[Argument] = [
            key.rate.interval_s if key.rate else 0,
            key.rate.tolerance_s if key.rate else 0,
            key.plan.max_concurrent_streams,
            lease_id,
            self._lease_ms,
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
        assert isinstance(answer, list)
        code = _number(answer[0])
        if code == 0:
            if key.plan.max_concurrent_streams:
                self.leases.setdefault(self._leases_key(key), {})[lease_id] = None
                self._start_renewing()
            return None
        if code == 2:
            quota = key.quotas[_number(answer[1])]
            return Refusal(quota.period, period_end_s(quota.period, now_s) - now_s)
        wait = answer[1]
        assert isinstance(wait, bytes)
        return Refusal(_REFUSALS[code], float(wait))

    async def charge(self, key: PlanKey, periods: tuple[int, ...], amount: int) -> tuple[int, ...]:
        counts = await self._run(
            self._charge,
            self._quota_keys(key, periods),
            [amount, *self._lifetimes(key, time.time())],
        )
        assert isinstance(counts, list)
        return tuple(_number(count) for count in counts)

    @staticmethod
    def _lifetimes(key: PlanKey, now_s: float) -> list[int]:
        """Each quota counter lives until its period ends, and a day more (a late refund)."""
        return [
            math.ceil(period_end_s(quota.period, now_s) - now_s) + _QUOTA_SLACK_S
            for quota in key.quotas
        ]

    def end(
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
        if lease_id is not None:
            self._releases.setdefault(leases_key, []).append(lease_id)
        if refund_bytes:
            counters = tuple(self._quota_keys(key, periods))
            self._refunds[counters] = self._refunds.get(counters, 0) + refund_bytes
        loop = asyncio.get_running_loop()
        if self._flush is None:
            self._flush = (
                loop.call_later(SETTLE_S, self._send_endings)
                if lease_id is None
                else loop.call_soon(self._send_endings)
            )
        elif lease_id is not None and isinstance(self._flush, asyncio.TimerHandle):
            self._flush.cancel()  # a slot is waiting: it goes now, and the refunds with it
            self._flush = loop.call_soon(self._send_endings)

    def _send_endings(self) -> None:
        """The ends queued meanwhile, in one write. Their replies matter only as failures, and
        a failure loses nothing that matters: a lease expires on its own, and an unsent refund
        leaves a quota over-counted by less than one step per stream."""
        self._flush = None
        commands: list[list[Argument]] = [
            ["ZREM", leases_key, *ids] for leases_key, ids in self._releases.items()
        ]
        commands += [
            self._refund.command(list(counters), [amount])
            for counters, amount in self._refunds.items()
        ]
        self._releases, self._refunds = {}, {}
        if commands:
            task = asyncio.ensure_future(self._send(commands))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, commands: list[list[Argument]]) -> None:
        try:
            outcomes = await self.client.pipeline(commands)
            for command, outcome in zip(commands, outcomes):
                if missing_script(outcome):  # Redis restarted since the scripts were loaded
                    await self.client.call(*self._refund.whole(command))
        except RedisError:
            pass

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.ensure_future(self._renew_leases())

    async def _renew_leases(self) -> None:
        """Every third of the lease, push back the expiry of every lease this instance holds;
        a failed round is tried again at the next (a lease survives two missed rounds)."""
        while self.leases:
            await asyncio.sleep(self.settings.lease_s / 3)
            for leases_key, held in list(self.leases.items()):
                if not held:
                    continue
                try:
                    await self._run(self._renew, [leases_key], [self._lease_ms, *held])
                except SharedStateError:
                    break  # the guard logs outages from requests; the next round retries

    async def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
        self._send_endings()
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=self.settings.timeout_s * 2)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self.client.close()


def _number(reply: Reply) -> int:
    assert isinstance(reply, int | bytes)
    return int(reply)
