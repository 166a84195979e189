"""Object keys from the request's decoded segments: never out of the prefix, folders apart."""

from __future__ import annotations

import pytest

from mediaproxy.errors import RequestError
from mediaproxy.integrations.s3.integration import key_segments


@pytest.mark.parametrize(
    "segments, parts, folder",
    [
        ((), (), True),
        (("",), (), True),
        (("a", "b c.mp4"), ("a", "b c.mp4"), False),
        (("a", "b", ""), ("a", "b"), True),
        (("ü", "+x"), ("ü", "+x"), False),
    ],
)
def test_keys_and_folders(segments: tuple[str, ...], parts: tuple[str, ...], folder: bool) -> None:
    assert key_segments(segments) == (parts, folder)


@pytest.mark.parametrize(
    "segments",
    [
        ("..", "secret"),
        ("a", ".", "b"),
        ("a", "", "b"),
        ("a/../b",),
        ("\udcff",),
    ],
)
def test_what_could_leave_the_prefix_is_refused(segments: tuple[str, ...]) -> None:
    with pytest.raises(RequestError):
        key_segments(segments)
