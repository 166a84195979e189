"""Upstream URLs: request targets passed on byte for byte, and Location mapped back."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaproxy.http.upstreams import PublicUrl, Upstream, public_base

ORIGIN = Upstream.parse("http://origin.internal:8000/base/")
GATEWAY = public_base("https", "gw.example", "/media")


@pytest.mark.parametrize(
    "url, parsed",
    [
        ("http://origin:8000/base/", Upstream("http", "origin", 8000, "/base/")),
        ("http://origin:8000/base", Upstream("http", "origin", 8000, "/base/")),
        ("http://origin", Upstream("http", "origin", 80, "/")),
        ("HTTP://Origin:81/", Upstream("http", "origin", 81, "/")),
        ("http://[::1]:8000/a/b/", Upstream("http", "::1", 8000, "/a/b/")),
    ],
)
def test_parse(url: str, parsed: Upstream) -> None:
    assert Upstream.parse(url) == parsed


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://origin/", "must be an http:// URL"),
        ("ftp://origin/", "must be an http:// URL"),
        ("origin:8000/", "must be an http:// URL"),
        ("http:///x/", "names no host"),
        ("http://user:pw@origin/", "credentials"),
        ("http://origin/?q=1", "query or fragment"),
        ("http://origin/#f", "query or fragment"),
        ("http://origin/?", "query or fragment"),
        ("http://origin:99999/", "not a valid URL"),
        ("http://origin:x/", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
        ("http://or igin/", "plain ASCII"),
        ("http://bad..name/", "not a valid host name"),
    ],
)
def test_parse_refuses(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Upstream.parse(url)


@pytest.mark.parametrize(
    "upstream, authority",
    [
        ("http://origin/", "origin"),
        ("http://origin:80/", "origin"),
        ("http://origin:8000/", "origin:8000"),
        ("http://[::1]:8000/", "[::1]:8000"),
    ],
)
def test_authority(upstream: str, authority: str) -> None:
    assert Upstream.parse(upstream).authority == authority


@pytest.mark.parametrize(
    "path, query, target",
    [
        ("", "", "/base/"),
        ("/", "", "/base/"),
        ("/a/b", "q=1", "/base/a/b?q=1"),
        ("/a%2Fb//c;p=1/%25", "r=%20+x&&s", "/base/a%2Fb//c;p=1/%25?r=%20+x&&s"),
        ("//double", "", "/base//double"),
        ("/caf\xe9", "q=\xe9", "/base/caf%E9?q=%E9"),  # Tornado's Latin-1 for a raw byte
        ("/\u20ac", "", "/base/%E2%82%AC"),
        ("/a b\x7f", "", "/base/a%20b%7F"),
    ],
)
def test_target(path: str, query: str, target: str) -> None:
    assert ORIGIN.target(path, query) == target


@pytest.mark.parametrize(
    "location, rewritten",
    [
        ("http://origin.internal:8000/base/x?y=1#z", "https://gw.example/media/x?y=1#z"),
        ("HTTP://ORIGIN.internal:8000/base/", "https://gw.example/media/"),
        ("http://origin.internal:8000/base", "https://gw.example/media/"),
        ("http://origin.internal:8000/base?x", "https://gw.example/media/?x"),
        ("//origin.internal:8000/base/x", "https://gw.example/media/x"),
        ("/base/x", "/media/x"),
        ("/base", "/media/"),
        # Not below the upstream's base, or not the upstream at all: left alone.
        ("http://origin.internal:8000/other/x", "http://origin.internal:8000/other/x"),
        ("http://origin.internal:8000/basement", "http://origin.internal:8000/basement"),
        ("http://origin.internal/base/x", "http://origin.internal/base/x"),
        ("http://origin.internal:9000/base/x", "http://origin.internal:9000/base/x"),
        ("https://origin.internal:8000/base/x", "https://origin.internal:8000/base/x"),
        ("http://elsewhere/base/x", "http://elsewhere/base/x"),
        ("http://u@origin.internal:8000/base/x", "http://u@origin.internal:8000/base/x"),
        ("/other", "/other"),
        ("/basement", "/basement"),
        ("next", "next"),
        ("../up", "../up"),
        ("http://[::1/x", "http://[::1/x"),
        ("", ""),
    ],
)
def test_rewrite_location(location: str, rewritten: str) -> None:
    assert ORIGIN.rewrite_location(location, GATEWAY) == rewritten


def test_rewrite_location_at_the_root() -> None:
    root = Upstream.parse("http://origin:8000/")
    assert (
        root.rewrite_location("http://origin:8000/a", public_base("http", "gw", "/"))
        == "http://gw/a"
    )
    assert root.rewrite_location("/a", public_base("http", "gw", "/")) == "/a"


@pytest.mark.parametrize(
    "location, rewritten",
    [
        ("/base//evil.example/x", "/evil.example/x"),
        ("/base/\\evil.example", "/evil.example"),
        ("/base/\\/evil.example", "/evil.example"),
        ("/base/\t/evil.example", "/evil.example"),
        ("/base/\n\\evil.example", "/evil.example"),
        ("/base//", "/"),
        ("/base/ok//x", "/ok//x"),
        ("http://origin:8000/base//evil.example/x", "http://gw//evil.example/x"),  # host: gw
    ],
)
def test_a_rewritten_location_never_names_another_host(location: str, rewritten: str) -> None:
    root = public_base("http", "gw", "/")
    assert Upstream.parse("http://origin:8000/base/").rewrite_location(location, root) == rewritten


def _host_a_browser_reads(location: str) -> str | None:
    """WHATWG URL parsing, as far as it decides the host of a reference against http://gw/:
    tab and newlines removed anywhere, backslashes read as slashes."""
    text = location.strip(
        "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f"
        "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d"
        "\x1e\x1f "
    )
    text = "".join(char for char in text if char not in "\t\n\r").replace("\\", "/")
    return urlsplit(text).hostname if text.startswith("//") else None


@given(st.lists(st.sampled_from(["/", "\\", "\t", "\n", "\r", " ", "evil", ".", ":"])).map("".join))
def test_rewritten_locations_on_a_root_route_stay_on_the_gateway(rest: str) -> None:
    root = public_base("http", "gw", "/")
    rewritten = Upstream.parse("http://origin:8000/base/").rewrite_location("/base/" + rest, root)
    assert _host_a_browser_reads(rewritten) is None, rewritten


@pytest.mark.parametrize(
    "url, parsed",
    [
        ("https://Media.Example.com/gw/", PublicUrl("https", "media.example.com", "/gw")),
        ("http://gw:8080", PublicUrl("http", "gw:8080", "")),
        ("https://gw/", PublicUrl("https", "gw", "")),
        ("https://[::1]:8443/a/b", PublicUrl("https", "[::1]:8443", "/a/b")),
    ],
)
def test_public_url(url: str, parsed: PublicUrl) -> None:
    assert PublicUrl.parse(url) == parsed


@pytest.mark.parametrize(
    "url, reason",
    [
        ("gw.example", "http:// or https://"),
        ("ftp://gw/", "http:// or https://"),
        ("https://gw:99999/", "not a valid URL"),
        ("https://u:p@gw/", "no credentials"),
        ("https:///x", "must name a host"),
        ("https://gw/?x", "query or fragment"),
        ("https://gw/#", "query or fragment"),
        ("https://gw/a/../b", "plain and normalised"),
        ("https://gw//a", "plain and normalised"),
        ("https://gw/%61", "plain and normalised"),
        ("https://g w/", "plain ASCII"),
    ],
)
def test_public_url_refuses(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        PublicUrl.parse(url)


@given(st.text())
def test_rewrite_location_never_raises(location: str) -> None:
    assert isinstance(ORIGIN.rewrite_location(location, GATEWAY), str)


@given(st.text(), st.text())
def test_targets_stay_below_the_base_and_printable(path: str, query: str) -> None:
    target = ORIGIN.target(path, query)
    assert target.startswith("/base/")
    assert all("!" <= char <= "~" for char in target)


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E)))
def test_printable_ascii_targets_pass_unchanged(path: str) -> None:
    path = path.replace("?", "")
    assert ORIGIN.target("/" + path, "") == "/base/" + path
