"""Request paths: one reading at the boundary; no spelling leaves a root or a base path."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaproxy.errors import NotFound, RequestError
from mediaproxy.http.paths import (
    below_prefix,
    decode_path_segments,
    lenient_segments,
    match_prefix,
    normalise_path,
    split_absolute_form,
)
from mediaproxy.http.upstreams import Upstream


@pytest.mark.parametrize(
    "raw, segments",
    [
        ("/a.mp4", ("a.mp4",)),
        ("/video/a%20b.mp4", ("video", "a b.mp4")),
        ("/data/r%C3%A9sum%C3%A9.txt", ("data", "résumé.txt")),
        ("/%252e%252e/x", ("%2e%2e", "x")),  # decoded once: a literal name, not a parent
    ],
)
def test_decodes_once(raw: str, segments: tuple[str, ...]) -> None:
    assert decode_path_segments(raw) == segments


@pytest.mark.parametrize(
    "raw",
    [
        "/../etc/passwd",
        "/a/../../etc",
        "/%2e%2e/etc/passwd",
        "/%2E%2E/x",
        "/.%2e/x",
        "/./a",
        "/a//b",
        "/a%00b",
        "/a\\..\\b",
        "/a%5c..%5cb",
        "/%zz",
        "/%4",
        "/%C3",
        "/%ff",
    ],
)
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
    assert all(
        s not in ("", ".", "..") and "/" not in s and "\x00" not in s and "\\" not in s
        for s in segments
    )


# --- the one normalisation at the boundary ---------------------------------------------------


@pytest.mark.parametrize(
    "raw, text",
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/", "/a/"),
        ("/%61%62c", "/abc"),  # unreserved escapes decoded
        ("/%7e%2D%2e%5F", "/~-._"),
        ("/a%2fb", "/a%2Fb"),  # reserved ones kept, hex upper-cased
        ("/a%20b%3f%23", "/a%20b%3F%23"),
        ("/caf\xe9", "/caf%E9"),  # a raw byte, as Tornado's Latin-1 hands it over
        ("/\u20ac", "/%E2%82%AC"),
        ("/a b\\", "/a%20b%5C"),
        ("/a;p=1,b+c!$&'()*=:@", "/a;p=1,b+c!$&'()*=:@"),
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/../../x", "/x"),  # nothing climbs above the root
        ("/a/%2e%2E/b", "/b"),
        ("/a//../b", "/a/b"),
    ],
)
def test_normal_form(raw: str, text: str) -> None:
    assert normalise_path(raw).text == text


@pytest.mark.parametrize(
    "target, split",
    [
        ("/a/b", (None, "/a/b")),
        ("http://gw:8080/a/b", ("gw:8080", "/a/b")),
        ("HTTPS://[::1]/a", ("[::1]", "/a")),
        ("http://gw", ("gw", "/")),
        ("ftp://gw/a", (None, "ftp://gw/a")),
        ("*", (None, "*")),
    ],
)
def test_split_absolute_form(target: str, split: tuple[str | None, str]) -> None:
    assert split_absolute_form(target) == split


@pytest.mark.parametrize("raw", ["", "*", "a/b", "http://h/a", "/%", "/%4", "/%zz", "/a%g0"])
def test_no_path_at_all_is_a_400(raw: str) -> None:
    with pytest.raises(RequestError):
        normalise_path(raw)


@pytest.mark.parametrize(
    "raw, refusal, raw_refusal",
    [
        ("/a/b.txt", None, None),
        ("/a/", None, None),
        ("/%61/b", None, None),
        ("/a/../b", "'.' or '..'", "'.' or '..'"),
        ("/a/%2e%2e/b", "'.' or '..'", "'.' or '..'"),
        ("/./a", "'.' or '..'", "'.' or '..'"),
        ("/a/..;x/b", "'.' or '..'", "'.' or '..'"),
        ("/a/..%2fb", "'.' or '..'", "'.' or '..'"),
        ("/a/..%5cb", "'.' or '..'", "'.' or '..'"),
        ("/a/..\\b", "'.' or '..'", "'.' or '..'"),
        ("/a%2fb", "encoded", None),
        ("/a%5Cb", "encoded", None),
        ("/a\\b", "encoded", None),
        ("/a%00b", "NUL", None),
        ("//a", "empty segment", None),
        ("/a//b", "empty segment", None),
        ("/a//", "empty segment", None),
        ("/...", None, None),  # a name, not a dot segment
        ("/a..b/.c", None, None),
    ],
)
def test_what_makes_a_path_ambiguous(
    raw: str, refusal: str | None, raw_refusal: str | None
) -> None:
    path = normalise_path(raw)
    assert path.refusal is None if refusal is None else refusal in (path.refusal or "")
    assert (path.raw_refusal is None) == (raw_refusal is None)


@pytest.mark.parametrize(
    "raw, prefix",
    [
        ("/admin/x", "/admin"),
        ("/%61dmin/x", "/admin"),
        ("//admin/x", "/admin"),
        ("/./admin/x", "/admin"),
        ("/x/../admin/x", "/admin"),
        ("/admin%2fx", "/admin"),
        ("/admin%5cx", "/admin"),
        ("/admin;x/y", "/admin"),
        ("/admin", "/admin"),
        ("/adminx/y", "/"),
        ("/media/private/a", "/media/private"),
        ("/media/privatex", "/media"),
        ("/Admin/x", "/"),  # paths are case-sensitive (RFC 3986 §6.2.2.1)
    ],
)
def test_routing_reads_leniently(raw: str, prefix: str) -> None:
    prefixes = ["/", "/admin", "/media", "/media/private"]
    assert match_prefix(normalise_path(raw), prefixes) == prefix
    assert match_prefix(normalise_path(raw), [p for p in prefixes if p != "/"]) == (
        None if prefix == "/" else prefix
    )


@pytest.mark.parametrize(
    "raw, prefix, raw_path, path, segments",
    [
        ("/api", "/api", False, "", ()),
        ("/api/", "/api", False, "/", ("",)),
        ("/api/a/b%20c", "/api", False, "/a/b%20c", ("a", "b c")),
        ("/%61pi/%7Ex", "/api", False, "/~x", ("~x",)),
        ("/a/b", "/", False, "/a/b", ("a", "b")),
        ("/api/a%2fb//c", "/api", True, "/a%2fb//c", ("a/b", "", "c")),
        ("/%61pi/%7ex", "/api", True, "/%7ex", ("~x",)),
        ("/caf%C3%A9/\xe9", "/", False, "/caf%C3%A9/%E9", ("café", "\udce9")),
    ],
)
def test_below_prefix(
    raw: str, prefix: str, raw_path: bool, path: str, segments: tuple[str, ...]
) -> None:
    below = below_prefix(normalise_path(raw), prefix, raw=raw_path)
    assert (below.path, below.segments) == (path, segments)


@pytest.mark.parametrize(
    "raw, prefix, raw_path",
    [
        ("/api/../x", "/api", False),
        ("/api/../x", "/api", True),
        ("/api//x", "/api", False),
        ("/api/a%2Fb", "/api", False),
        ("//api/x", "/api", True),
        ("/api;v=1/x", "/api", True),
        ("/api%2fx", "/api", True),
    ],
)
def test_below_prefix_refuses(raw: str, prefix: str, raw_path: bool) -> None:
    with pytest.raises(RequestError):
        below_prefix(normalise_path(raw), prefix, raw=raw_path)


def _as_a_lenient_origin_reads(target: str) -> str:
    """How the most lenient origin resolves a target: every escape decoded (twice, for one
    that decodes again), backslashes as slashes, ';params' dropped, dot segments resolved."""
    text = unquote(unquote(target, errors="replace"), errors="replace").replace("\\", "/")
    words = [word.split(";", 1)[0] for word in text.split("/")]
    resolved = posixpath.normpath("/" + "/".join(word for word in words if word))
    return resolved.rstrip("/") + "/" if text.endswith("/") else resolved


_PATH_CHARS = st.sampled_from(
    [
        "/",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        ";",
        "%25",
        "%",
        "a",
        "b",
        "%61",
        "~",
        "%00",
        "\xe9",
        " ",
    ]
)
hostile_paths = st.lists(_PATH_CHARS, max_size=16).map(lambda parts: "/" + "".join(parts))


@given(
    hostile_paths,
    st.sampled_from(["/", "/pub", "/pub/deep"]),
    st.sampled_from(["/", "/base/", "/base/deep/"]),
    st.booleans(),
)
def test_the_upstream_target_stays_under_the_base(
    raw: str, prefix: str, base: str, raw_path: bool
) -> None:
    upstream = Upstream.parse(f"http://origin{base}")
    try:
        path = normalise_path(raw)
        below = below_prefix(path, prefix, raw=raw_path)
    except RequestError:
        return
    target = upstream.target(below.path, "")
    assert target.startswith(base)
    resolved = _as_a_lenient_origin_reads(target)
    assert (resolved + "/").startswith(base), (raw, target, resolved)
    if not raw_path:
        assert ".." not in target.split("/") and "//" not in target[1:]


@given(st.text())
def test_normalise_path_reads_anything_or_refuses_it(raw: str) -> None:
    try:
        path = normalise_path(raw)
    except RequestError:
        return
    assert path.text.startswith("/")
    again = normalise_path(path.text)  # normal form is a fixed point
    assert again.segments == path.segments
    if path.refusal is None:
        assert again.refusal is None
    lenient_segments(path)  # never raises
