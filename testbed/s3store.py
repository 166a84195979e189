"""A real S3-compatible server for the tests and the benchmark: moto's standalone server.

moto (the ``test`` extra) runs as its own process on a free loopback port. It verifies SigV4
signatures and IAM policies once authentication is on (a wrong secret gets
SignatureDoesNotMatch, an unknown key InvalidAccessKeyId, a user without a policy
AccessDenied), honours Range and the preconditions, and ignores If-Range, which the gateway
then enforces itself.

Set-up runs with authentication off (moto counts unauthenticated actions until
``INITIAL_NO_AUTH_ACTION_COUNT``): it creates three IAM users and the bucket, then turns
authentication on for the rest of the session.

    writer    s3:* on the bucket (the tests upload with it), and may assume the role
    reader    s3:GetObject and s3:ListBucket: what a gateway route needs
    stranger  no policy at all: AccessDenied
    role      ``reader-role``: what reader may do, as temporary credentials (STS)
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

BUCKET = "media"
REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/reader-role"
READ_ACTIONS = ["s3:GetObject", "s3:ListBucket"]


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str


@dataclass
class S3Store:
    url: str
    port: int
    writer: Keys
    reader: Keys
    stranger: Keys
    bucket: str = BUCKET

    def client(self, keys: Keys | None = None) -> Any:
        import boto3

        keys = keys or self.writer
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
        )

    def temporary_credentials(self, duration_s: int = 900) -> dict[str, Any]:
        """Fresh credentials of the reader role, as STS hands them out."""
        import boto3

        sts = boto3.client(
            "sts",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.writer.access_key_id,
            aws_secret_access_key=self.writer.secret_access_key,
        )
        credentials: dict[str, Any] = sts.assume_role(
            RoleArn=ROLE_ARN,
            RoleSessionName="gateway",
            DurationSeconds=duration_s,
        )["Credentials"]
        return credentials

    def put(self, key: str, body: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client().put_object(Bucket=self.bucket, Key=key, Body=body, **extra)


def _policy(actions: list[str], may_assume_role: bool) -> str:
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": actions,
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
        }
    ]
    if may_assume_role:
        statements.append({"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("moto server did not start within 60 s")


@contextmanager
def moto_server(*, authenticate: bool = True) -> Iterator[S3Store]:
    """A moto server with the bucket and the three users; stopped when the context ends."""
    import boto3

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(port, process)
        url = f"http://127.0.0.1:{port}"
        anyone = dict(
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam = boto3.client("iam", **anyone)
        users = {}
        for name, actions in (("writer", ["s3:*"]), ("reader", READ_ACTIONS), ("stranger", None)):
            iam.create_user(UserName=name)
            key = iam.create_access_key(UserName=name)["AccessKey"]
            users[name] = Keys(key["AccessKeyId"], key["SecretAccessKey"])
            if actions:
                iam.put_user_policy(
                    UserName=name,
                    PolicyName="bucket",
                    PolicyDocument=_policy(actions, name == "writer"),
                )
        iam.create_role(
            RoleName="reader-role",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
                    ],
                }
            ),
        )
        iam.put_role_policy(
            RoleName="reader-role", PolicyName="bucket", PolicyDocument=_policy(READ_ACTIONS, False)
        )
        boto3.client("s3", **anyone).create_bucket(Bucket=BUCKET)
        if authenticate:
            urllib.request.urlopen(
                urllib.request.Request(
                    url + "/moto-api/reset-auth",
                    data=b"0",
                    method="POST",
                    headers={"Content-Type": "text/plain"},
                ),
                timeout=10,
            ).read()
        yield S3Store(url, port, users["writer"], users["reader"], users["stranger"])
    finally:
        process.terminate()
        process.wait(10)
