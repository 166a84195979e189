"""Route access: which credentials admit, and 401 (none given) versus 403 (refused)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaproxy.access_control import AccessPolicy, AdminAccess, presented_key
from mediaproxy.config import Access
from mediaproxy.errors import Forbidden, Unauthorized
from mediaproxy.http.signing import sign_query

SECRET = b"0123456789abcdef-test-secret"
NOW = 1_700_000_000
PATH = "/media/x.mp4"
GOOD_QUERY = sign_query(SECRET, "GET", PATH, NOW + 60)
BAD_QUERY = sign_query(SECRET, "GET", "/media/other.mp4", NOW + 60)
EXPIRED_QUERY = sign_query(SECRET, "GET", PATH, NOW - 60)

KEYS = Access(api_keys=("key-one", "key-two"))
SIGNED = Access(signing_secret=SECRET)
EITHER = Access(api_keys=("key-one",), api_key_header="Authorization-Key", signing_secret=SECRET)


def check(access: Access, query: str = "", headers: dict[str, str] | None = None) -> None:
    AccessPolicy(access).check("GET", PATH, query, headers or {}, NOW)


@pytest.mark.parametrize(
    "access, query, headers",
    [
        (Access(), "", {}),
        (Access(), "signature=junk", {"X-API-Key": "junk"}),
        (KEYS, "", {"X-API-Key": "key-one"}),
        (KEYS, "", {"X-API-Key": "key-two"}),
        (SIGNED, GOOD_QUERY, {}),
        (SIGNED, GOOD_QUERY, {"X-API-Key": "ignored"}),
        (EITHER, "", {"Authorization-Key": "key-one"}),
        (EITHER, BAD_QUERY, {"Authorization-Key": "key-one"}),
        (EITHER, GOOD_QUERY, {"Authorization-Key": "wrong"}),
    ],
)
def test_admitted(access: Access, query: str, headers: dict[str, str]) -> None:
    check(access, query, headers)


@pytest.mark.parametrize(
    "access, query, headers",
    [
        (KEYS, "", {}),
        (KEYS, GOOD_QUERY, {}),  # this route takes no signed URLs
        (SIGNED, "", {}),
        (SIGNED, "download", {}),
        (EITHER, "", {"X-API-Key": "key-one"}),  # the configured header name is the only one
    ],
)
def test_no_credentials_is_401_with_a_challenge(
    access: Access, query: str, headers: dict[str, str]
) -> None:
    with pytest.raises(Unauthorized) as caught:
        check(access, query, headers)
    assert caught.value.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "access, query, headers",
    [
        (KEYS, "", {"X-API-Key": "key-three"}),
        (KEYS, "", {"X-API-Key": "key-on"}),
        (KEYS, "", {"X-API-Key": "key-one,key-two"}),  # a header given twice arrives joined
        (KEYS, "", {"X-API-Key": ""}),
        (SIGNED, BAD_QUERY, {}),
        (SIGNED, EXPIRED_QUERY, {}),
        (SIGNED, "expires=1&signature=x", {}),
        (EITHER, BAD_QUERY, {}),
        (EITHER, "", {"Authorization-Key": "wrong"}),
    ],
)
def test_refused_credentials_are_403_without_detail(
    access: Access, query: str, headers: dict[str, str]
) -> None:
    with pytest.raises(Forbidden) as caught:
        check(access, query, headers)
    assert not caught.value.headers
    assert "key-one" not in str(caught.value) and "key-two" not in str(caught.value)


def test_the_challenge_names_the_header() -> None:
    with pytest.raises(Unauthorized) as caught:
        check(EITHER)
    challenge = caught.value.headers["WWW-Authenticate"]
    assert (
        challenge == 'ApiKey realm="mediaproxy", header="Authorization-Key", '
        'SignedURL realm="mediaproxy"'
    )


@given(key=st.text(st.characters(blacklist_categories=()), max_size=40), query=st.text(max_size=80))
def test_hostile_credentials_only_ever_refuse(key: str, query: str) -> None:
    try:
        check(EITHER, query, {"Authorization-Key": key})
    except Forbidden:
        pass


def basic(user_and_password: bytes) -> str:
    return "Basic " + base64.b64encode(user_and_password).decode()


@pytest.mark.parametrize(
    "authorization, key",
    [
        ("Bearer k-1", "k-1"),
        ("bearer   k-1 ", "k-1"),
        (basic(b"anyone:k-1"), "k-1"),
        (basic(b":k:1"), "k:1"),  # the password runs to the end, colons and all
        ("BASIC " + base64.b64encode(b"u:k").decode(), "k"),
        (basic(b"no-colon"), None),
        ("Basic !!!!", None),
        ("Basic " + base64.b64encode(b"u:\xff").decode(), None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Digest k-1", None),
        ("k-1", None),
        ("", None),
        (None, None),
    ],
)
def test_presented_key(authorization: str | None, key: str | None) -> None:
    assert presented_key(authorization) == key


def test_admin_access() -> None:
    AdminAccess(()).check(None)  # no keys: the surfaces are public
    assert not AdminAccess(()).protected
    admin = AdminAccess(("k-1", "k-2"))
    assert admin.protected
    admin.check("Bearer k-2")
    admin.check(basic(b"admin:k-1"))
    for refused in (None, "Bearer k-3", "Bearer k-1x", basic(b"k-1:"), "Basic"):
        with pytest.raises(Unauthorized) as caught:
            admin.check(refused)
        assert caught.value.headers == {"WWW-Authenticate": 'Basic realm="mediaproxy admin"'}
