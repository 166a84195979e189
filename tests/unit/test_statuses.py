"""Which statuses carry no body (RFC 9110 §6.4.1)."""

from __future__ import annotations

import pytest

from mediaproxy.http.statuses import is_bodyless


@pytest.mark.parametrize(
    "status, bodyless",
    [
        (100, True),
        (103, True),
        (199, True),
        (200, False),
        (201, False),
        (204, True),
        (205, False),
        (206, False),
        (304, True),
        (404, False),
        (502, False),
    ],
)
def test_is_bodyless(status: int, bodyless: bool) -> None:
    assert is_bodyless(status) is bodyless
