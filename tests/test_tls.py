"""TLS: with a certificate and key configured the server speaks only TLS, and clients that trust the certificate
(and present a key) get through."""

import datetime
import ipaddress
import pathlib
import ssl

import aiohttp
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import App
from server.errors import StartupError
from tests.conftest import running_app
from tests.conftest import test_settings as settings_for  # aliased: pytest would collect a test_* name
from tests.helpers import ingest, key_channel, launch, rfc3339


def self_signed_certificate(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, bytes]:
    """A certificate for localhost and 127.0.0.1, signed by its own key: (certificate file, key file, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, pem


async def health_error(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return error.value


async def test_the_server_speaks_tls_with_the_configured_certificate(tmp_path, database_url, fake_network) -> None:  # type: ignore[no-untyped-def]
    cert_file, key_file, pem = self_signed_certificate(tmp_path)
    settings = settings_for(tmp_path, database_url, fake_network, tls_cert_file=str(cert_file),
                            tls_key_file=str(key_file))
    async with running_app(settings) as app:
        assert app.dev_key
        trusted = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(root_certificates=pem),
                                                     grpc.access_token_call_credentials(app.dev_key))
        for host in ("localhost", "127.0.0.1"):
            async with grpc.aio.secure_channel(f"{host}:{app.port}", trusted) as channel:
                result = await ingest(channel, "g", launch(f"launch-over-tls-{host}", user_id="p"))
                assert result.name == f"games/g/events/launch-over-tls-{host}"

        # The HTTP API speaks TLS with the same certificate, and plaintext HTTP gets no answer.
        context = ssl.create_default_context(cadata=pem.decode())
        async with aiohttp.ClientSession() as http:
            async with http.post(f"https://localhost:{app.http_port}/postbacks.v1.EventService/IngestEvent",
                                 ssl=context, json={"parent": "games/g", "event": {
                                     "eventId": "launch-over-https", "eventTime": rfc3339(1), "userId": "p",
                                     "gameLaunch": {}}},
                                 headers={"authorization": f"Bearer {app.dev_key}"}) as response:
                assert response.status == 200
                assert (await response.json())["result"]["name"] == "games/g/events/launch-over-https"
            with pytest.raises(aiohttp.ClientError):
                await http.post(f"http://localhost:{app.http_port}/postbacks.v1.EventService/IngestEvent", json={})

        async with key_channel(app.port, app.dev_key) as plaintext:
            refused_plaintext = await health_error(plaintext)
        # A client that does not trust the certificate (the system roots only) refuses the server.
        async with grpc.aio.secure_channel(f"localhost:{app.port}", grpc.ssl_channel_credentials()) as untrusting:
            refused_untrusted = await health_error(untrusting)
    assert refused_plaintext.code() == refused_untrusted.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_without_its_key_is_refused_at_start(tmp_path, fake_network) -> None:  # type: ignore[no-untyped-def]
    cert_file, _, _ = self_signed_certificate(tmp_path)
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'p.db'}", fake_network,
                            tls_cert_file=str(cert_file))
    with pytest.raises(StartupError, match="--tls-cert-file is set but --tls-key-file is not"):
        App(settings)
