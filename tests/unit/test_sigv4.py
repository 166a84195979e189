"""SigV4 against AWS's published test vectors, and against botocore's S3 signer."""

from __future__ import annotations

import calendar
import hashlib
import json
import time
from pathlib import Path

import pytest

from mediaproxy.integrations.s3.sigv4 import (
    EMPTY_PAYLOAD_SHA256,
    Credentials,
    SigV4,
    amz_date,
    canonical_request,
    string_to_sign,
)

VECTORS = Path(__file__).parent / "sigv4_vectors"


def _parse(case: Path) -> tuple[dict[str, object], str, str, list[tuple[str, str]], bytes]:
    context = json.loads((case / "context.json").read_text())
    head, _, body = (case / "request.txt").read_bytes().partition(b"\n\n")
    lines = head.decode().split("\n")
    method, target, _ = lines[0].split(" ")
    fields = [
        (name, value) for name, _, value in (line.partition(":") for line in lines[1:] if line)
    ]
    return context, method, target, fields, body


@pytest.mark.parametrize(
    "case", sorted(p for p in VECTORS.iterdir() if p.is_dir()), ids=lambda p: p.name
)
def test_aws_test_vectors(case: Path) -> None:
    context, method, target, fields, body = _parse(case)
    keys = context["credentials"]
    assert isinstance(keys, dict)
    credentials = Credentials(keys["access_key_id"], keys["secret_access_key"], keys.get("token"))
    epoch_s = calendar.timegm(time.strptime(str(context["timestamp"]), "%Y-%m-%dT%H:%M:%SZ"))
    date_time = amz_date(epoch_s)
    payload = hashlib.sha256(body).hexdigest()
    fields.append(("X-Amz-Date", date_time))
    if credentials.session_token:
        fields.append(("X-Amz-Security-Token", credentials.session_token))
    if context["sign_body"]:
        fields.append(("X-Amz-Content-SHA256", payload))
    path, _, query = target.partition("?")

    request, _ = canonical_request(method, path, query, fields, payload)
    assert request == (case / "header-canonical-request.txt").read_text()
    scope = f"{date_time[:8]}/{context['region']}/{context['service']}/aws4_request"
    assert string_to_sign(date_time, scope, request) == (
        (case / "header-string-to-sign.txt").read_text()
    )
    signer = SigV4(str(context["region"]), str(context["service"]))
    expected = next(
        line.partition(":")[2]
        for line in (case / "header-signed-request.txt").read_text().splitlines()
        if line.startswith("Authorization:")
    )
    for _ in range(2):  # the derived key, computed then kept, signs alike
        assert (
            signer.authorization(credentials, method, path, query, fields, payload, date_time)
            == expected
        )


def test_the_s3_documentation_example() -> None:
    """AWS's S3 example "GET Object" (Authenticating Requests: Using the Authorization Header)."""
    fields = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY_PAYLOAD_SHA256),
        ("x-amz-date", "20130524T000000Z"),
    ]
    credentials = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert SigV4("us-east-1", "s3").authorization(
        credentials, "GET", "/test.txt", "", fields, EMPTY_PAYLOAD_SHA256, "20130524T000000Z"
    ) == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


@pytest.mark.parametrize(
    "path, query, extra",
    [
        ("/media/videos/a%20b/%C3%BC.mp4", "", [("Range", "bytes=0-  99")]),
        ("/media", "delimiter=%2F&list-type=2&max-keys=1000&prefix=a%2Fb%2F", []),
        ("/media/x", "", [("If-None-Match", '"abc"'), ("If-Match", '"abc", "def"')]),
    ],
)
@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzE//token+="])
def test_as_botocore_signs_for_s3(
    path: str, query: str, extra: list[tuple[str, str]], token: str | None
) -> None:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    host = "127.0.0.1:9000"
    url = f"http://{host}{path}" + (f"?{query}" if query else "")
    request = AWSRequest("GET", url, headers=dict([("Host", host), *extra]))
    S3SigV4Auth(BotoCredentials("AKID", "secret/key+", token), "s3", "eu-west-3").add_auth(request)

    date_time = request.headers["X-Amz-Date"]
    fields = [("Host", host), *extra, ("X-Amz-Date", date_time)]
    fields.append(("X-Amz-Content-SHA256", EMPTY_PAYLOAD_SHA256))
    if token:
        fields.append(("X-Amz-Security-Token", token))
    credentials = Credentials("AKID", "secret/key+", token)
    ours = SigV4("eu-west-3", "s3").authorization(
        credentials, "GET", path, query, fields, EMPTY_PAYLOAD_SHA256, date_time
    )
    assert ours == request.headers["Authorization"]


def test_the_signing_key_follows_the_day_and_the_secret() -> None:
    signer = SigV4("us-east-1", "s3")
    first = signer.signing_key("secret", "20260101")
    assert signer.signing_key("secret", "20260101") is first
    assert signer.signing_key("secret", "20260102") != first
    assert signer.signing_key("rotated", "20260102") != signer.signing_key("secret", "20260102")
