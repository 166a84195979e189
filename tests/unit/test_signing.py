"""Signed URLs: what admits a request, what refuses it, and that hostile input only ever
produces the module's own error."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaproxy.http.signing import (
    SignatureError,
    SignatureMissing,
    compute_signature,
    sign_query,
    split_query,
    verify,
)

SECRET = b"0123456789abcdef-test-secret"
NOW = 1_700_000_000
LATER = NOW + 3600


def test_the_signature_is_hmac_sha256_over_four_lines_base64url_unpadded() -> None:
    digest = hmac.new(
        SECRET, b"GET\n/media/a%20b.mp4\n1700003600\ndownload", hashlib.sha256
    ).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert compute_signature(SECRET, "GET", "/media/a%20b.mp4", LATER, "download") == expected
    assert len(expected) == 43


def test_sign_query_appends_expiry_and_signature_last() -> None:
    query = sign_query(SECRET, "GET", "/media/x.mp4", LATER, "download")
    signature = compute_signature(SECRET, "GET", "/media/x.mp4", LATER, "download")
    assert query == f"download&expires={LATER}&signature={signature}"
    assert sign_query(SECRET, "GET", "/m", LATER).startswith(f"expires={LATER}&signature=")


def signed(
    path: str = "/media/x.mp4", method: str = "GET", query: str = "", expires_s: int = LATER
) -> str:
    return sign_query(SECRET, method, path, expires_s, query)


@pytest.mark.parametrize(
    "method, path, query",
    [
        ("GET", "/media/x.mp4", signed()),
        ("HEAD", "/media/x.mp4", signed()),  # players probe with HEAD before playing
        ("HEAD", "/media/x.mp4", signed(method="HEAD")),
        ("PUT", "/up/x", signed("/up/x", "PUT")),
        ("GET", "/media/x.mp4", signed(query="download&a=1")),
        ("GET", "/media/a%20b", signed("/media/a%20b")),
        ("GET", "/media/\xe9", signed("/media/\xe9")),  # latin-1 decoded raw bytes round-trip
    ],
)
def test_admitted(method: str, path: str, query: str) -> None:
    verify(SECRET, method, path, query, NOW)


@pytest.mark.parametrize(
    "method, path, query, reason",
    [
        ("GET", "/media/x.mp4", signed(expires_s=NOW), "expired"),  # refused from that second on
        ("GET", "/media/x.mp4", signed(expires_s=NOW - 10), "expired"),
        ("GET", "/media/y.mp4", signed(), "does not match"),
        ("GET", "/media/x.mp4", signed(method="HEAD"), "does not match"),  # HEAD does not imply GET
        ("POST", "/media/x.mp4", signed(), "does not match"),
        ("GET", "/media/a b", signed("/media/a%20b"), "does not match"),  # raw path, not decoded
        ("GET", "/Media/x.mp4", signed(), "does not match"),
        ("GET", "/media/x.mp4", "a=1&" + signed(), "does not match"),  # a parameter added
        ("GET", "/media/x.mp4", signed(query="a=1").replace("a=1&", "a=2&"), "does not match"),
        ("GET", "/media/x.mp4", signed().replace(str(LATER), str(LATER + 1)), "does not match"),
        ("GET", "/media/x.mp4", signed() + "&expires=1", "twice"),
        ("GET", "/media/x.mp4", f"expires={LATER}", "together"),
        ("GET", "/media/x.mp4", "signature=" + "A" * 43, "together"),
        (
            "GET",
            "/media/x.mp4",
            signed().replace(f"expires={LATER}", "expires=+1700003600"),
            "Unix time",
        ),
        ("GET", "/media/x.mp4", signed().replace(f"expires={LATER}", "expires=１７"), "Unix time"),
        (
            "GET",
            "/media/x.mp4",
            signed().replace(f"expires={LATER}", "expires=" + "9" * 5000),
            "Unix time",
        ),
        ("GET", "/media/x.mp4", signed() + "=", "43 base64url"),
        ("GET", "/media/x.mp4", signed()[:-1], "43 base64url"),
        ("GET", "/media/x.mp4", signed()[:-1] + "é", "43 base64url"),
    ],
)
def test_refused(method: str, path: str, query: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason) as caught:
        verify(SECRET, method, path, query, NOW)
    assert not isinstance(caught.value, SignatureMissing)


@pytest.mark.parametrize("query", ["", "download", "a=1&b=2", "expiresx=1"])
def test_no_signing_parameters_is_missing_not_wrong(query: str) -> None:
    with pytest.raises(SignatureMissing):
        verify(SECRET, "GET", "/media/x.mp4", query, NOW)


def test_another_secret_refuses() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify(b"another-secret-of-enough-bytes", "GET", "/media/x.mp4", signed(), NOW)


def test_split_query_keeps_other_parameters_in_order() -> None:
    assert split_query("b=2&expires=5&a=1&signature=s") == ("b=2&a=1", "5", "s")
    assert split_query("") == ("", None, None)


query_text = st.text(
    alphabet=st.sampled_from(list("expiressignature=&0123456789aZ_-+%é ")), max_size=120
)


any_text = st.text(st.characters(blacklist_categories=()), max_size=120)  # surrogates too


@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "\x00", ""]),
    path=any_text,
    query=st.one_of(query_text, any_text),
    now_s=st.floats(allow_nan=True),
)
def test_hostile_input_raises_nothing_but_signature_error(
    method: str, path: str, query: str, now_s: float
) -> None:
    try:
        verify(SECRET, method, path, query, now_s)
    except SignatureError:
        pass


@given(
    path=st.text(min_size=1, max_size=40),
    query=st.text(max_size=60).filter(
        lambda q: (
            not any(item.partition("=")[0] in ("expires", "signature") for item in q.split("&"))
        )
    ),
    expires_s=st.integers(1, 10**11),
)
def test_sign_then_verify_round_trips(path: str, query: str, expires_s: int) -> None:
    verify(SECRET, "GET", path, sign_query(SECRET, "GET", path, expires_s, query), expires_s - 1)
