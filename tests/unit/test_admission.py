"""Stream slots: the caps refuse newcomers, and every release gives exactly one slot back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mediaproxy.config import Access, Limits, Route
from mediaproxy.errors import ServiceUnavailable
from mediaproxy.server.admission import RETRY_AFTER_S, Admission, StreamSlots, route_name
from mediaproxy.server.shared_table import SharedTable

TABLES: list[SharedTable] = []


@pytest.fixture(autouse=True)
def close_tables() -> Iterator[None]:
    yield
    while TABLES:
        TABLES.pop().close()


def slots_of(total_cap: int) -> StreamSlots:
    TABLES.append(SharedTable(columns=1, entries=64))
    return StreamSlots(total_cap, TABLES[-1])


def test_the_route_cap_refuses_with_retry_after_and_a_release_admits_again() -> None:
    slots = slots_of(0)
    first = slots.acquire("/a", route_cap=2)
    slots.acquire("/a", route_cap=2)
    with pytest.raises(ServiceUnavailable) as caught:
        slots.acquire("/a", route_cap=2)
    assert caught.value.headers == {"Retry-After": str(RETRY_AFTER_S)}
    slots.acquire("/b", route_cap=2)  # another route is not affected
    first.release()
    slots.acquire("/a", route_cap=2)
    assert slots.total == 3
    assert [slots.table.running(route_name(p)) for p in ("/a", "/b")] == [2, 1]


def test_the_gateway_cap_counts_every_route() -> None:
    slots = slots_of(2)
    slots.acquire("/a", route_cap=0)
    slots.acquire("/b", route_cap=0)
    with pytest.raises(ServiceUnavailable):
        slots.acquire("/c", route_cap=0)


def test_release_is_idempotent() -> None:
    slots = slots_of(1)
    slot = slots.acquire("/a", route_cap=0)
    slot.release()
    slot.release()
    assert slots.total == 0 and not slots.table.running(route_name("/a"))
    slots.acquire("/a", route_cap=0)
    with pytest.raises(ServiceUnavailable):
        slots.acquire("/a", route_cap=0)


def route(access: Access) -> Route:
    return Route(
        prefix="/p", integration="file", limits=Limits(), settings=None, index=0, access=access
    )


@pytest.mark.parametrize(
    "query, forwarded",
    [
        ("", ""),
        ("download&expires=1&signature=abc", "download"),
        ("a=1&expires=1&b=2&signature=abc", "a=1&b=2"),
        ("expires=1&expires=2", "expires=1&expires=2"),  # not ours to repair
    ],
)
def test_a_signing_route_keeps_its_parameters_from_the_integration(
    query: str, forwarded: str
) -> None:
    signing_route = route(Access(signing_secret=b"0123456789abcdef"))
    assert Admission(signing_route, slots_of(0)).forwarded_query(query) == forwarded
    assert Admission(route(Access()), slots_of(0)).forwarded_query(query) == query
