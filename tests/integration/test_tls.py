"""TLS end to end with a certificate made by openssl for the test, and every bad TLS config."""

from __future__ import annotations

import http.client
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from mediaproxy.config import ConfigError, load

from .support import GatewayThread

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (EC: fast to generate)."""
    certificate, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True, timeout=30)
    return certificate, key


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = make_certificate(folder, "server")
    other_certificate, other_key = make_certificate(folder, "other")
    encrypted = folder / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:secret",
                    "-out", str(encrypted)], check=True, capture_output=True, timeout=30)
    return {"certificate": certificate, "key": key, "other_key": other_key,
            "encrypted_key": encrypted}


def test_https_end_to_end(make_gateway, certificates: dict[str, Path],  # type: ignore[no-untyped-def]
                          tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello over tls\n")
    gateway: GatewayThread = make_gateway(f"""
        [server]
        tls_certificate = "{certificates['certificate']}"
        tls_key = "{certificates['key']}"
        [[routes]]
        prefix = "/files"
        integration = "file"
        root = "{tmp_path}"
    """)
    context = ssl.create_default_context(cafile=str(certificates["certificate"]))
    connection = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=context,
                                             timeout=10)
    try:
        connection.request("GET", "/files/hello.txt", headers={"Range": "bytes=6-"})
        reply = connection.getresponse()
        assert (reply.status, reply.read()) == (206, b"over tls\n")
    finally:
        connection.close()

    if shutil.which("curl"):
        result = subprocess.run(["curl", "-sS", "--cacert", str(certificates["certificate"]),
                                 f"https://127.0.0.1:{gateway.port}/files/hello.txt"],
                                capture_output=True, timeout=30)
        assert (result.returncode, result.stdout) == (0, b"hello over tls\n"), result.stderr

    untrusting = ssl.create_default_context()  # the system's CAs: not ours
    connection = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=untrusting,
                                             timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        connection.request("GET", "/files/hello.txt")
    connection.close()


@pytest.mark.parametrize("settings, key, reason", [
    ({"tls_certificate": "certificate"}, "server.tls_key", "is required when tls_certificate"),
    ({"tls_key": "key"}, "server.tls_certificate", "is required when tls_key"),
    ({"tls_certificate": "missing", "tls_key": "key"}, "server.tls_certificate",
     "is not an existing file"),
    ({"tls_certificate": "certificate", "tls_key": "missing"}, "server.tls_key",
     "is not an existing file"),
    ({"tls_certificate": "key", "tls_key": "key"}, "server.tls_certificate",
     "holds no PEM certificate"),
    ({"tls_certificate": "certificate", "tls_key": "certificate"}, "server.tls_key",
     "holds no PEM private key"),
    ({"tls_certificate": "certificate", "tls_key": "other_key"}, "server.tls_key",
     "does not match the certificate"),
    ({"tls_certificate": "certificate", "tls_key": "encrypted_key"}, "server.tls_key",
     "encrypted private keys are not supported"),
])
def test_a_bad_tls_config_stops_start_up_naming_the_key(
        certificates: dict[str, Path], tmp_path: Path, settings: dict[str, str], key: str,
        reason: str) -> None:
    lines = [f'{name} = "{certificates.get(which, tmp_path / which)}"'
             for name, which in settings.items()]
    path = tmp_path / "mediaproxy.toml"
    path.write_text("[server]\n" + "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_tls_paths_are_relative_to_the_config_file(certificates: dict[str, Path],
                                                   tmp_path: Path) -> None:
    for name in ("certificate", "key"):
        shutil.copy(certificates[name], tmp_path / f"server.{name}")
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "mediaproxy.toml"
    path.write_text('[server]\ntls_certificate = "../server.certificate"\n'
                    'tls_key = "../server.key"\n')
    assert isinstance(load(path).server.tls, ssl.SSLContext)
