"""Which file-system refusals are the client's doing: the file integration's errno table."""

from __future__ import annotations

import errno

import pytest

from mediaproxy.integrations.file import refusal


@pytest.mark.parametrize(
    ("number", "status"),
    [
        (errno.ENAMETOOLONG, 404),
        (errno.ELOOP, 404),
        (errno.EINVAL, 400),
        (errno.EIO, None),  # the disk failing is the gateway's 500, logged with its traceback
        (errno.EMFILE, None),
        (None, None),
    ],
)
def test_refusal(number: int | None, status: int | None) -> None:
    error = OSError(number, "why") if number is not None else OSError("no errno")
    refused = refusal(error, "/root/name")
    assert (refused.status if refused is not None else None) == status
    if refused is not None:
        assert str(refused) == "/root/name: why"
