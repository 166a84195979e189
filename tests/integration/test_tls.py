"""TLS end to end with a certificate made by openssl for the test, and every bad TLS config."""

from __future__ import annotations

import http.client
import logging
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mediaproxy.config import ConfigError, load

from .support import GatewayThread, make_certificate

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = make_certificate(folder, "server")
    other_certificate, other_key = make_certificate(folder, "other")
    encrypted = folder / "encrypted.key"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(key),
            "-aes256",
            "-passout",
            "pass:secret",
            "-out",
            str(encrypted),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return {
        "certificate": certificate,
        "key": key,
        "other_key": other_key,
        "encrypted_key": encrypted,
    }


def test_https_end_to_end(
    make_gateway,
    certificates: dict[str, Path],  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello over tls\n")
    gateway: GatewayThread = make_gateway(f"""
        [server]
        tls_certificate = "{certificates["certificate"]}"
        tls_key = "{certificates["key"]}"
        [[routes]]
        prefix = "/files"
        integration = "file"
        root = "{tmp_path}"
    """)
    context = ssl.create_default_context(cafile=str(certificates["certificate"]))
    connection = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=context, timeout=10)
    try:
        connection.request("GET", "/files/hello.txt", headers={"Range": "bytes=6-"})
        reply = connection.getresponse()
        assert (reply.status, reply.read()) == (206, b"over tls\n")
    finally:
        connection.close()

    if shutil.which("curl"):
        result = subprocess.run(
            [
                "curl",
                "-sS",
                "--cacert",
                str(certificates["certificate"]),
                f"https://127.0.0.1:{gateway.port}/files/hello.txt",
            ],
            capture_output=True,
            timeout=30,
        )
        assert (result.returncode, result.stdout) == (0, b"hello over tls\n"), result.stderr

    untrusting = ssl.create_default_context()  # the system's CAs: not ours
    connection = http.client.HTTPSConnection(
        "127.0.0.1", gateway.port, context=untrusting, timeout=10
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        connection.request("GET", "/files/hello.txt")
    connection.close()


@pytest.mark.parametrize(
    "settings, key, reason",
    [
        ({"tls_certificate": "certificate"}, "server.tls_key", "is required when tls_certificate"),
        ({"tls_key": "key"}, "server.tls_certificate", "is required when tls_key"),
        (
            {"tls_certificate": "missing", "tls_key": "key"},
            "server.tls_certificate",
            "is not an existing file",
        ),
        (
            {"tls_certificate": "certificate", "tls_key": "missing"},
            "server.tls_key",
            "is not an existing file",
        ),
        (
            {"tls_certificate": "key", "tls_key": "key"},
            "server.tls_certificate",
            "holds no PEM certificate",
        ),
        (
            {"tls_certificate": "certificate", "tls_key": "certificate"},
            "server.tls_key",
            "holds no PEM private key",
        ),
        (
            {"tls_certificate": "certificate", "tls_key": "other_key"},
            "server.tls_key",
            "does not match the certificate",
        ),
        (
            {"tls_certificate": "certificate", "tls_key": "encrypted_key"},
            "server.tls_key",
            "encrypted private keys are not supported",
        ),
    ],
)
def test_a_bad_tls_config_stops_start_up_naming_the_key(
    certificates: dict[str, Path], tmp_path: Path, settings: dict[str, str], key: str, reason: str
) -> None:
    lines = [
        f'{name} = "{certificates.get(which, tmp_path / which)}"'
        for name, which in settings.items()
    ]
    path = tmp_path / "mediaproxy.toml"
    path.write_text("[server]\n" + "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_tls_paths_are_relative_to_the_config_file(
    certificates: dict[str, Path], tmp_path: Path
) -> None:
    for name in ("certificate", "key"):
        shutil.copy(certificates[name], tmp_path / f"server.{name}")
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "mediaproxy.toml"
    path.write_text(
        '[server]\ntls_certificate = "../server.certificate"\ntls_key = "../server.key"\n'
    )
    assert isinstance(load(path).server.tls, ssl.SSLContext)


def tls_gateway(
    make_gateway,
    certificates: dict[str, Path],  # type: ignore[no-untyped-def]
    root: Path,
    extra: str = "",
) -> GatewayThread:
    (root / "hello.txt").write_bytes(b"hello over tls\n")
    gateway: GatewayThread = make_gateway(f"""
        [server]
        tls_certificate = "{certificates["certificate"]}"
        tls_key = "{certificates["key"]}"
        {extra}
        [[routes]]
        prefix = "/files"
        integration = "file"
        root = "{root}"
    """)
    return gateway


def fetch_over_tls(port: int, certificate: Path, **client: Any) -> bytes:
    """GET /files/hello.txt with a client context limited by ``client`` (its attributes)."""
    context = ssl.create_default_context(cafile=str(certificate))
    for name, value in client.items():
        if name == "ciphers":
            context.set_ciphers(value)
        else:
            setattr(context, name, value)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("GET", "/files/hello.txt")
        return connection.getresponse().read()
    finally:
        connection.close()


def test_tls_min_version_refuses_older_clients(
    make_gateway,  # type: ignore[no-untyped-def]
    certificates: dict[str, Path],
    tmp_path: Path,
) -> None:
    gateway = tls_gateway(make_gateway, certificates, tmp_path, 'tls_min_version = "1.3"')
    certificate = certificates["certificate"]
    assert fetch_over_tls(gateway.port, certificate) == b"hello over tls\n"
    with pytest.raises(ssl.SSLError):
        fetch_over_tls(gateway.port, certificate, maximum_version=ssl.TLSVersion.TLSv1_2)


def test_tls_ciphers_limit_what_tls_1_2_clients_may_use(
    make_gateway,  # type: ignore[no-untyped-def]
    certificates: dict[str, Path],
    tmp_path: Path,
) -> None:
    gateway = tls_gateway(
        make_gateway, certificates, tmp_path, 'tls_ciphers = "ECDHE-ECDSA-AES256-GCM-SHA384"'
    )
    certificate = certificates["certificate"]
    tls_1_2 = ssl.TLSVersion.TLSv1_2
    assert (
        fetch_over_tls(
            gateway.port,
            certificate,
            maximum_version=tls_1_2,
            ciphers="ECDHE-ECDSA-AES256-GCM-SHA384",
        )
        == b"hello over tls\n"
    )
    with pytest.raises(ssl.SSLError):
        fetch_over_tls(
            gateway.port,
            certificate,
            maximum_version=tls_1_2,
            ciphers="ECDHE-ECDSA-AES128-GCM-SHA256",
        )


@pytest.mark.parametrize(
    "settings, key, reason",
    [
        ('tls_min_version = "1.1"', "server.tls_min_version", "must be one of 1.2, 1.3"),
        ("tls_min_version = 1.3", "server.tls_min_version", "must be a string"),
        ('tls_ciphers = "NO-SUCH-CIPHER"', "server.tls_ciphers", "OpenSSL selects no cipher"),
    ],
)
def test_a_bad_tls_protocol_setting_stops_start_up(
    certificates: dict[str, Path], tmp_path: Path, settings: str, key: str, reason: str
) -> None:
    path = tmp_path / "mediaproxy.toml"
    path.write_text(
        f'[server]\ntls_certificate = "{certificates["certificate"]}"\n'
        f'tls_key = "{certificates["key"]}"\n{settings}\n'
    )
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert (caught.value.key, caught.value.path) == (key, str(path))
    assert reason in caught.value.reason


@pytest.mark.parametrize("key", ["tls_min_version", "tls_ciphers"])
def test_tls_protocol_settings_need_tls(tmp_path: Path, key: str) -> None:
    path = tmp_path / "mediaproxy.toml"
    path.write_text(f'[server]\n{key} = "1.3"\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == f"server.{key}"
    assert "applies only with tls_certificate and tls_key" in caught.value.reason


def test_plain_http_to_the_tls_port_is_not_a_warning_each_time(
    make_gateway,
    certificates: dict[str, Path],
    tmp_path: Path,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = tls_gateway(make_gateway, certificates, tmp_path)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(b"GET /files/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                assert sock.recv(1024) == b""  # the handshake fails; no HTTP answer
            except ConnectionResetError:
                pass
    assert fetch_over_tls(gateway.port, certificates["certificate"]) == b"hello over tls\n"
    loud = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert loud == []
    handshakes = [record for record in caplog.records if "TLS handshake" in record.getMessage()]
    assert len([r for r in handshakes if r.levelno == logging.INFO]) == 1  # once a minute
    assert len(handshakes) == 5
