"""Usage plans at admission and while a stream runs: per-key rate, byte quotas and stream cap.

A request admitted by an API key that is on a plan asks the store, in one atomic step, whether
a quota is spent, the key's stream cap is full or its rate exceeded (``streaming.usage`` has the
arithmetic), and if not counts the request and leases a stream slot. Refused: 429 with
Retry-After (and, for a quota, the reset time in ``X-Quota-Reset``).

Bytes are counted as they stream (``Meter``): before a piece is sent, the key's quotas are
charged a step (``quota_step_bytes``) ahead, so one long download overruns a quota by at most
one step; when the stream ends the unused part of the last step is given back.

The store is the instance's shared table (``LocalStore``: every worker of this instance) or
Redis (``server.redis_store``: every instance sharing it). A store that fails (Redis down, slow,
unreachable) raises ``SharedStateError``; then ``on_shared_state_error`` decides: "allow" admits
without counting, "deny" answers 503. Either way one line is logged when the outage begins and
one when it ends (never one per request), the metrics count it, and for ``RETRY_S`` the store
is not asked at all, so no request waits on a dead server. A running stream is never cut for
the store's sake: its bytes go uncounted while the store is away.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from mediaproxy.config import Plan, SharedState
from mediaproxy.errors import ServiceUnavailable, TooManyRequests
from mediaproxy.ops.metrics import Metrics
from mediaproxy.server.shared_table import SharedTable, TableFull, key_streams
from mediaproxy.streaming.usage import (
    Quota,
    Rate,
    Refusal,
    http_date,
    period_end_s,
    period_number,
    retry_after,
)

log = logging.getLogger("mediaproxy")

# After a failure the store is left alone this long: requests meanwhile get the policy at once.
RETRY_S = 1.0
# What the first connection may take, at start-up (a reachable server answers in milliseconds).
OPEN_S = 5.0

T = TypeVar("T")


class SharedStateError(Exception):
    """The store could not answer (unreachable, timed out, refused the command)."""


class QuotaExhausted(TooManyRequests):
    """A running stream's key has no bytes left in a quota."""


@dataclass(frozen=True)
class PlanKey:
    """One key on one plan, as the store knows it: by a digest, never the key itself."""

    plan: Plan
    key_id: str
    rate: Rate | None
    quotas: tuple[Quota, ...]


class UsageStore(Protocol):
    """Every call answers, or raises SharedStateError, within ``timeout_s``: the guard adds no
    timer of its own (one per request would cost more than a check in memory)."""

    async def open(self) -> None:
        """Connect and prepare, ahead of the first request."""

    async def admit(
        self, key: PlanKey, lease_id: str, now_s: float, reserve_bytes: int
    ) -> Refusal | None:
        """Check and count one request of ``key``; admitted, lease it a stream slot (if the
        plan caps streams) and charge ``reserve_bytes`` to each quota, all in one step."""

    async def charge(self, key: PlanKey, periods: tuple[int, ...], amount: int) -> tuple[int, ...]:
        """Add ``amount`` bytes to each quota of ``key`` (in the given period numbers);
        every count after it."""

    def end(
        self, key: PlanKey, lease_id: str | None, periods: tuple[int, ...], refund_bytes: int
    ) -> None:
        """A stream is over: drop its lease and give back what it reserved and did not send.
        Never waits and never raises: what it cannot do is lost on the safe side (a lease
        expires on its own, an unsent refund over-counts by less than a step)."""

    async def close(self) -> None: ...


class LocalStore:
    """The instance's shared table: plans hold across its workers. It cannot fail, except
    by filling up (``TableFull``), which is reported as any store failure."""

    def __init__(self, table: SharedTable) -> None:
        self.table = table

    async def open(self) -> None:
        pass  # the table is in memory already

    async def admit(
        self, key: PlanKey, lease_id: str, now_s: float, reserve_bytes: int
    ) -> Refusal | None:
        try:
            return self.table.admit_key(
                key.key_id,
                key.rate,
                key.quotas,
                key.plan.max_concurrent_streams,
                now_s,
                reserve_bytes,
            )
        except TableFull as error:
            raise SharedStateError(str(error)) from error

    async def charge(self, key: PlanKey, periods: tuple[int, ...], amount: int) -> tuple[int, ...]:
        try:
            return tuple(
                self.table.charge(f"{quota.period} {key.key_id}", number, amount)
                for quota, number in zip(key.quotas, periods)
            )
        except TableFull as error:
            raise SharedStateError(str(error)) from error

    def end(
        self, key: PlanKey, lease_id: str | None, periods: tuple[int, ...], refund_bytes: int
    ) -> None:
        if refund_bytes:
            for quota, number in zip(key.quotas, periods):
                try:
                    self.table.charge(f"{quota.period} {key.key_id}", number, -refund_bytes)
                except TableFull:
                    pass  # a full table counts nothing new; a refund it cannot take is lost
        if lease_id is not None:
            self.table.release([key_streams(key.key_id)])

    async def close(self) -> None:
        pass  # the table belongs to the gateway (or the workers' parent)


def key_id(key: str) -> str:
    """What the store calls a key: a digest, so no key is ever written to memory or Redis."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:32]


def plan_keys(plans: Iterable[Plan]) -> dict[str, PlanKey]:
    """API key -> its plan, for the plans of a config."""
    found: dict[str, PlanKey] = {}
    for plan in plans:
        rate = Rate(plan.requests_per_second, plan.burst) if plan.requests_per_second else None
        quotas = tuple(
            Quota(period, limit)
            for period, limit in (("day", plan.bytes_per_day), ("month", plan.bytes_per_month))
            if limit
        )
        for key in plan.keys:
            found[key] = PlanKey(plan, key_id(key), rate, quotas)
    return found


class PlanGuard:
    """Usage plans for one gateway: admission of a key's request and its byte meter."""

    def __init__(
        self,
        settings: SharedState,
        plans: Iterable[Plan],
        store: UsageStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self._keys = plan_keys(plans)
        self._down_since: float | None = None  # monotonic time of the outage's first failure
        self._retry_at = 0.0
        # Lease ids, unique across processes and instances without a random draw per request.
        self._lease_ids = (f"{os.getpid()}.{os.urandom(6).hex()}.{n}" for n in itertools.count())
        # Connecting and loading scripts takes several round trips: not on a request's time.
        self._opening = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        try:
            await asyncio.wait_for(self.store.open(), max(self.settings.timeout_s, OPEN_S))
        except (SharedStateError, asyncio.TimeoutError) as error:
            self._failed(error)

    @property
    def away(self) -> bool:
        """The store failed and has not answered since."""
        return self._down_since is not None

    def plan_for(self, api_key: str | None) -> PlanKey | None:
        return None if api_key is None else self._keys.get(api_key)

    async def admit(self, key: PlanKey) -> KeyUsage:
        """Admit a request of ``key`` or raise TooManyRequests (or 503 under "deny")."""
        now_s = self.clock()
        lease_id = next(self._lease_ids)
        # The first step of bytes is reserved with the admission: one round trip, and a
        # response smaller than a step needs no other before it is sent.
        reserve_bytes = self.settings.quota_step_bytes if key.quotas else 0
        try:
            refusal = await self._ask(self.store.admit(key, lease_id, now_s, reserve_bytes))
        except SharedStateError:
            if self.settings.on_shared_state_error == "deny":
                raise ServiceUnavailable(
                    'shared state unreachable (on_shared_state_error = "deny")',
                    headers={"Retry-After": "5"},
                ) from None
            return KeyUsage(self, key, None, 0, ())
        if refusal is not None:
            self.metrics.plan_refused(key.plan.name, refusal.reason)
            raise _refusal_error(key, refusal, now_s)
        periods = tuple(period_number(quota.period, now_s) for quota in key.quotas)
        return KeyUsage(self, key, lease_id, reserve_bytes, periods)

    async def _ask(self, operation: Awaitable[T]) -> T:
        """The store's answer, or SharedStateError (at once while it is known to be away)."""
        if self._down_since is not None and time.monotonic() < self._retry_at:
            if asyncio.iscoroutine(operation):
                operation.close()  # never started: nothing to clean up
            raise SharedStateError("still away")
        try:
            answer = await operation
        except SharedStateError as error:
            self._failed(error)
            raise SharedStateError(str(error)) from error
        if self._down_since is not None:
            log.warning(
                "shared state reachable again after %.1f s; plans enforced again",
                time.monotonic() - self._down_since,
            )
            self._down_since = None
            self.metrics.shared_state_answers(True)
        return answer

    def _failed(self, error: BaseException) -> None:
        self.metrics.shared_state_failed()
        now = time.monotonic()
        self._retry_at = now + RETRY_S
        if self._down_since is None:
            self._down_since = now
            self.metrics.shared_state_answers(False)
            log.error(
                "shared state unreachable (%s: %s); on_shared_state_error = %r: new "
                "requests on a plan are %s until it is back",
                type(error).__name__,
                str(error) or "timed out",
                self.settings.on_shared_state_error,
                "admitted uncounted"
                if self.settings.on_shared_state_error == "allow"
                else "refused with 503",
            )

    async def close(self) -> None:
        self._opening.cancel()
        await self.store.close()


def _refusal_error(key: PlanKey, refusal: Refusal, now_s: float) -> TooManyRequests:
    plan = key.plan.name
    if refusal.reason == "rate":
        return TooManyRequests(
            f"plan {plan}: over {key.plan.requests_per_second:g} requests/s",
            headers={"Retry-After": retry_after(refusal.wait_s)},
        )
    if refusal.reason == "streams":
        return TooManyRequests(
            f"plan {plan}: the key runs {key.plan.max_concurrent_streams} streams (its cap)",
            headers={"Retry-After": str(STREAMS_RETRY_AFTER_S)},
        )
    return _quota_error(plan, refusal.reason, now_s + refusal.wait_s, now_s)


def _quota_error(plan: str, period: str, reset_s: float, now_s: float) -> QuotaExhausted:
    return QuotaExhausted(
        f"plan {plan}: the key's bytes for this {period} are spent",
        headers={"Retry-After": retry_after(reset_s - now_s), "X-Quota-Reset": http_date(reset_s)},
    )


# As for the gateway's own cap (admission.RETRY_AFTER_S): a stream takes a while to end.
STREAMS_RETRY_AFTER_S = 5


class KeyUsage:
    """One admitted request of a plan's key: its leased stream slot and its byte meter.

    ``lease_id`` is None when the store was away at admission: nothing to give back.
    """

    def __init__(
        self,
        guard: PlanGuard,
        key: PlanKey,
        lease_id: str | None,
        reserved_bytes: int,
        periods: tuple[int, ...],
    ) -> None:
        self._guard = guard
        self.key = key
        self._lease_id = lease_id
        self.step_bytes = guard.settings.quota_step_bytes
        self._reserved = reserved_bytes  # charged to the quotas, not yet sent
        self._periods = periods  # the period numbers the reservation went to
        self._ended = False

    @property
    def metered(self) -> bool:
        return bool(self.key.quotas)

    async def cover(self, length: int) -> None:
        """Make sure ``length`` more bytes are charged to the key's quotas before they go out;
        QuotaExhausted when a quota had nothing left."""
        if length <= self._reserved:
            self._reserved -= length
            return
        if self._guard.away:
            # Uncounted meanwhile: a running stream never waits on a store that is away (new
            # requests are the ones that find out when it is back).
            self._reserved = 0
            return
        step = max(self.step_bytes, length - self._reserved)
        now_s = self._guard.clock()
        periods = tuple(period_number(quota.period, now_s) for quota in self.key.quotas)
        try:
            counts = await self._guard._ask(self._guard.store.charge(self.key, periods, step))
        except SharedStateError:
            self._reserved = 0  # uncounted while the store is away; the stream goes on
            return
        self._periods = periods
        for quota, count in zip(self.key.quotas, counts):
            if count - step >= quota.limit_bytes:  # nothing was left before this step
                self._reserved = step
                self._guard.metrics.plan_refused(self.key.plan.name, quota.period)
                raise _quota_error(
                    self.key.plan.name, quota.period, period_end_s(quota.period, now_s), now_s
                )
        self._reserved += step - length

    def give_back(self, length: int) -> None:
        """``length`` bytes covered were not sent after all (a full socket)."""
        self._reserved += length

    def end(self) -> None:
        """The stream is over: give back the slot and the unsent part of the last step."""
        if not self._ended:
            self._ended = True
            refund = self._reserved if self._periods else 0
            if self._lease_id is not None or refund:
                self._guard.store.end(self.key, self._lease_id, self._periods, refund)
