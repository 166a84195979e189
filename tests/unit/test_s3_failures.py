"""What the client sees, and what the operator is told, for each error the store sends."""

from __future__ import annotations

import pytest

from mediaproxy.errors import (
    Forbidden,
    NotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    ServiceUnavailable,
    UpstreamError,
)
from mediaproxy.integrations.s3.failures import StoreError, advice, client_error, needs_code


def document(code: str, extra: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>m &amp; m</Message>{extra}<RequestId>R</RequestId></Error>"
    ).encode()


def test_an_error_document_is_read() -> None:
    error = StoreError.parse(
        416, document("InvalidRange", "<ActualObjectSize>1200</ActualObjectSize>"), "3"
    )
    assert (error.code, error.message, error.object_size, error.retry_after) == (
        "InvalidRange",
        "m &amp; m",
        1200,
        "3",
    )
    assert str(error) == "the store answered 416 (InvalidRange: m &amp; m)"


@pytest.mark.parametrize(
    "body", [b"", b"<html>busy</html>", b"<Code>" + b"x" * 5000, b"\xff\xfe<Code>\xff</Code>"]
)
def test_anything_else_is_an_error_without_a_code(body: bytes) -> None:
    error = StoreError.parse(500, body, "soon")
    assert error.code in ("", "\ufffd") and error.retry_after is None


@pytest.mark.parametrize(
    "status, code, hide, expected",
    [
        (404, "NoSuchKey", True, NotFound),
        (404, "NoSuchBucket", True, NotFound),
        (404, "", True, NotFound),  # a HEAD
        (403, "AccessDenied", True, NotFound),
        (403, "AccessDenied", False, Forbidden),
        (412, "PreconditionFailed", True, PreconditionFailed),
        (416, "InvalidRange", True, RangeNotSatisfiable),
        (503, "SlowDown", True, ServiceUnavailable),
        (503, "", True, ServiceUnavailable),
        (500, "InternalError", True, UpstreamError),
        (403, "SignatureDoesNotMatch", True, UpstreamError),
        (403, "InvalidAccessKeyId", True, UpstreamError),
        (403, "RequestTimeTooSkewed", True, UpstreamError),
        (400, "AuthorizationHeaderMalformed", True, UpstreamError),
        (301, "PermanentRedirect", True, UpstreamError),
    ],
)
def test_statuses(status: int, code: str, hide: bool, expected: type) -> None:
    failure = client_error(StoreError(status, code), hide_forbidden=hide)
    assert type(failure) is expected
    assert failure.phrase == expected.phrase  # the store's words stay in the log


def test_a_busy_store_says_when_to_come_back() -> None:
    assert client_error(
        StoreError(503, "SlowDown", retry_after="7"), hide_forbidden=True
    ).headers == {"Retry-After": "7"}
    assert client_error(StoreError(500, "InternalError"), hide_forbidden=True).headers == {
        "Retry-After": "1"
    }
    assert client_error(StoreError(403, "SignatureDoesNotMatch"), hide_forbidden=True).headers == {}


@pytest.mark.parametrize(
    "status, needed",
    [(403, True), (400, True), (301, True), (404, False), (412, False), (500, False), (503, False)],
)
def test_which_body_less_errors_need_their_code(status: int, needed: bool) -> None:
    assert needs_code(status) is needed


@pytest.mark.parametrize(
    "error, says",
    [
        (StoreError(403, "SignatureDoesNotMatch"), "secret access key from $K and $S"),
        (StoreError(403, "InvalidAccessKeyId"), "does not know the access key id from $K and $S"),
        (StoreError(400, "ExpiredToken"), "has expired"),
        (StoreError(403, "RequestTimeTooSkewed"), "synchronise it (NTP)"),
        (
            StoreError(400, "AuthorizationHeaderMalformed", region="eu-west-1"),
            "not in region us-east-1 (eu-west-1)",
        ),
        (
            StoreError(301, "PermanentRedirect", endpoint="b.s3.eu-west-1.amazonaws.com"),
            "at b.s3.eu-west-1.amazonaws.com",
        ),
    ],
)
def test_misconfiguration_is_explained(error: StoreError, says: str) -> None:
    text = advice(error, region="us-east-1", credentials="$K and $S")
    assert text is not None and says in text


@pytest.mark.parametrize("code", ["NoSuchKey", "AccessDenied", "SlowDown", "InternalError", ""])
def test_what_is_not_misconfiguration_is_not_explained(code: str) -> None:
    assert advice(StoreError(404, code), region="us-east-1", credentials="c") is None
