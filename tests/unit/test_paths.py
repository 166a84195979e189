"""Request paths: every way out of the root is refused before the file system is asked."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from mediaproxy.errors import NotFound, RequestError
from mediaproxy.http.paths import decode_path_segments


@pytest.mark.parametrize("raw, segments", [
    ("/a.mp4", ("a.mp4",)),
    ("/video/a%20b.mp4", ("video", "a b.mp4")),
    ("/data/r%C3%A9sum%C3%A9.txt", ("data", "résumé.txt")),
    ("/%252e%252e/x", ("%2e%2e", "x")),  # decoded once: a literal name, not a parent
])
def test_decodes_once(raw: str, segments: tuple[str, ...]) -> None:
    assert decode_path_segments(raw) == segments


@pytest.mark.parametrize("raw", [
    "/../etc/passwd", "/a/../../etc", "/%2e%2e/etc/passwd", "/%2E%2E/x", "/.%2e/x",
    "/./a", "/a//b", "/a%00b", "/a\\..\\b", "/a%5c..%5cb", "/%zz", "/%4", "/%C3",
    "/%ff",
])
def test_escapes_are_client_errors(raw: str) -> None:
    with pytest.raises(RequestError):
        decode_path_segments(raw)


@pytest.mark.parametrize("raw", ["/.env", "/a/.git/config", "/%2eenv", "/", "", "/dir/"])
def test_dotfiles_and_directories_are_not_found(raw: str) -> None:
    with pytest.raises(NotFound):
        decode_path_segments(raw)


def test_dotfiles_when_allowed() -> None:
    assert decode_path_segments("/.well-known/x", serve_dotfiles=True) == (".well-known", "x")


@given(st.text())
def test_never_escapes_and_never_raises_foreign_errors(raw: str) -> None:
    try:
        segments = decode_path_segments(raw)
    except RequestError:
        return
    assert all(s not in ("", ".", "..") and "/" not in s and "\x00" not in s
               and "\\" not in s for s in segments)
