"""TLS: with a certificate and key the node serves HTTPS and wss signaling; aiortc clients that
trust the (self-signed) certificate join and exchange media over it."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sfu.client import SfuClient
from tests.conftest import start_server
from tests.integration.peers import Participant, wait_until
from tests.ops.helpers import http, join_error, open_socket

pytestmark = [pytest.mark.slow]


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sfu test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_wss_signaling_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert_path, key_path = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert_path))
    server = start_server(tmp_path, "--tls-cert", str(cert_path), "--tls-key", str(key_path), tls=trust)
    assert server.url.startswith("https://") and server.ws_url.startswith("wss://")
    pair = [Participant(server.url, "secure", "a"), Participant(server.url, "secure", "b")]
    untrusting = SfuClient(server.url, "secure", "c")
    try:
        assert http("GET", f"{server.url}/readyz", context=trust)[0] == 200
        for participant in pair:
            participant.client.ssl = trust
            await participant.join(video_size=(160, 120))
        assert await wait_until(lambda: all(r.frames > 10 for p in pair for r in p.received.values()
                                            if r.kind == "video") and all(p.received for p in pair), 30), \
            "media flows between clients that signal over wss"
        with pytest.raises(Exception, match="(?i)certificate"):
            await open_socket(untrusting)  # the default context does not trust a self-signed certificate
        await untrusting.close()
        trusting = SfuClient(server.url, "secure", "d", ssl=trust)
        await open_socket(trusting)
        assert (await join_error(trusting, "no spaces allowed"))["code"] == "bad_message"
        await trusting.close()
    finally:
        for participant in pair:
            await participant.close()
        assert server.stop() == 0, server.log()[-3000:]
