"""The TLS front (almquist/ops/tls_front.py): nginx terminating TLS on the public ports in front of a plaintext gRPC
server and an HTTP server, as it fronts Serve's proxies. A client that speaks TLS and trusts the CA gets through
(unary and server-streaming gRPC, HTTPS); a plaintext client does not; with mutual TLS a client without a
certificate, or with one from another CA, is refused. Certificates are made here with `cryptography`; nginx is
Debian's (`python -m almquist.system_packages test` installs it)."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from almquist import runtime
from almquist.ops import tls_front


# ---- certificates ----
@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path
    pem: bytes
    key_pem: bytes


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pair:
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / f"{stem}.crt").write_bytes(pem)
    (directory / f"{stem}.key").write_bytes(key_pem)
    (directory / f"{stem}.key").chmod(0o600)
    return Pair(directory / f"{stem}.crt", directory / f"{stem}.key", pem, key_pem)


def _certificate(
    subject: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, ca: bool, server: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


@dataclass(frozen=True)
class Certs:
    ca: Pair
    server: Pair
    client: Pair
    stranger: Pair  # a client certificate from a CA the front does not trust


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("tls")
    ca_cert, ca_key = _certificate("almquist test CA", None, ca=True)
    other_cert, other_key = _certificate("another CA", None, ca=True)
    server = _certificate("localhost", (ca_cert.subject, ca_key), ca=False, server=True)
    client = _certificate("alice", (ca_cert.subject, ca_key), ca=False)
    stranger = _certificate("mallory", (other_cert.subject, other_key), ca=False)
    return Certs(
        _write(directory, "ca", ca_cert, ca_key),
        _write(directory, "server", *server),
        _write(directory, "client", *client),
        _write(directory, "stranger", *stranger),
    )


# ---- plaintext backends standing in for Serve's proxies ----
@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[int, int]]:
    """(gRPC port, HTTP port) of a plain grpcio server with the standard Health service and a plain HTTP server."""
    grpc_port, http_port = runtime.free_port(), runtime.free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("almquist.test", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    server.start()

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"hello over {self.headers.get('X-Forwarded-Proto', 'plain')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), Hello)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield grpc_port, http_port
    httpd.shutdown()
    server.stop(None)


def _config(certs: Certs, backends: tuple[int, int], mutual: bool) -> tls_front.TLSConfig:
    return tls_front.TLSConfig(
        cert=certs.server.cert,
        key=certs.server.key,
        client_ca=certs.ca.cert if mutual else None,
        listen_host="127.0.0.1",
        grpc_port=runtime.free_port(),
        http_port=runtime.free_port(),
        backend_grpc_port=backends[0],
        backend_http_port=backends[1],
    )


@pytest.fixture(scope="module", params=[False, True], ids=["tls", "mutual-tls"])
def front(
    request: pytest.FixtureRequest, certs: Certs, backends: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[tls_front.TLSConfig, tls_front.Front]]:
    config = _config(certs, backends, mutual=request.param)
    state = tmp_path_factory.mktemp("front")
    started = tls_front.start(config, state)
    yield config, started
    assert tls_front.stop(state)
    assert tls_front.running(state) is None


def _check(channel: grpc.Channel) -> int:
    return (
        health_pb2_grpc.HealthStub(channel)
        .Check(health_pb2.HealthCheckRequest(service="almquist.test"), timeout=5)
        .status
    )


def _tls_channel(config: tls_front.TLSConfig, certs: Certs, client: Pair | None) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.pem if client else None,
    )
    return grpc.secure_channel(f"localhost:{config.grpc_port}", credentials)


def _https(config: tls_front.TLSConfig, certs: Certs, client: Pair | None) -> str:
    context = ssl.create_default_context(cafile=str(certs.ca.cert))
    if client:
        context.load_cert_chain(client.cert, client.key)
    with urllib.request.urlopen(f"https://localhost:{config.http_port}/", context=context, timeout=5) as response:
        return response.read().decode()


def test_a_tls_client_gets_through_unary_and_streaming(front, certs: Certs) -> None:
    config, _ = front
    client = certs.client if config.client_ca else None
    with _tls_channel(config, certs, client) as channel:
        assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="almquist.test"), timeout=5
        )
        assert next(iter(watch)).status == health_pb2.HealthCheckResponse.SERVING  # a stream passes through
        watch.cancel()
    assert _https(config, certs, client) == "hello over https"


def test_a_plaintext_client_is_refused(front) -> None:
    config, _ = front
    with grpc.insecure_channel(f"127.0.0.1:{config.grpc_port}") as channel, pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="almquist.test"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    with pytest.raises(urllib.error.HTTPError) as refused:  # nginx: "plain HTTP request was sent to HTTPS port"
        urllib.request.urlopen(f"http://127.0.0.1:{config.http_port}/", timeout=5)
    assert refused.value.code == 400


def test_a_client_that_does_not_trust_the_ca_fails_the_handshake(front, certs: Certs) -> None:
    config, _ = front
    untrusting = grpc.ssl_channel_credentials()  # the system's roots, which do not hold the test CA
    with (
        grpc.secure_channel(f"localhost:{config.grpc_port}", untrusting) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        _check(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_mutual_tls_refuses_a_client_without_a_certificate_or_with_a_strangers(front, certs: Certs) -> None:
    config, _ = front
    for client in (None, certs.stranger):
        if not config.client_ca:  # plain TLS: a client certificate is neither needed nor checked
            with _tls_channel(config, certs, client) as channel:
                assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
            assert _https(config, certs, client) == "hello over https"
            continue
        with _tls_channel(config, certs, client) as channel, pytest.raises(grpc.RpcError) as caught:
            _check(channel)
        # nginx answers a missing or untrusted client certificate with HTTP 400 before any byte reaches the backend
        assert caught.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
        assert "status: 400" in caught.value.details()  # type: ignore[attr-defined]
        with pytest.raises(urllib.error.HTTPError) as refused:
            _https(config, certs, client)
        assert refused.value.code == 400


def test_the_config_forwards_only_to_this_machine_and_verifies_clients_when_asked(certs: Certs, tmp_path: Path) -> None:
    config = _config(certs, (19000, 18000), mutual=True)
    text = tls_front.render_conf(config, tmp_path)
    assert f"grpc_pass grpc://127.0.0.1:{config.backend_grpc_port};" in text
    assert f"proxy_pass http://127.0.0.1:{config.backend_http_port};" in text
    assert "ssl_verify_client on;" in text and f"ssl_client_certificate {certs.ca.cert};" in text
    assert "ssl_verify_client" not in tls_front.render_conf(_config(certs, (19000, 18000), mutual=False), tmp_path)
    assert "TLSv1 " not in text and "TLSv1.1" not in text


def test_a_missing_certificate_or_clashing_ports_are_refused_with_the_reason(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"certificate .* is not a readable file"):
        tls_front.TLSConfig(cert=tmp_path / "nope.crt", key=certs.server.key)
    with pytest.raises(ValueError, match="must all differ"):
        tls_front.TLSConfig(cert=certs.server.cert, key=certs.server.key, backend_grpc_port=8000)
    config = tls_front.TLSConfig.for_ports(certs.server.cert, certs.server.key, None, "127.0.0.1", 9000, 8000)
    assert (config.backend_grpc_port, config.backend_http_port) == (19000, 18000)


def test_a_key_that_does_not_match_the_certificate_fails_the_start_with_nginxs_reason(
    certs: Certs, backends: tuple[int, int], tmp_path: Path
) -> None:
    config = _config(certs, backends, mutual=False).model_copy(update={"key": certs.client.key})
    with pytest.raises(tls_front.TLSFrontError, match=r"key values mismatch|refused"):
        tls_front.start(config, tmp_path)
    assert tls_front.running(tmp_path) is None


def test_almquist_up_refuses_half_a_tls_config_before_starting_anything(certs: Certs, tmp_path: Path) -> None:
    from almquist import cli

    assert cli.main(["up", "--tls-cert", str(certs.server.cert)]) == 2  # no key
    missing_key = ["up", "--tls-cert", str(certs.server.cert), "--tls-key", str(tmp_path / "absent.key")]
    assert cli.main(missing_key) == 2


def test_the_python_client_talks_tls_to_the_front(front, certs: Certs) -> None:
    """almquist.client.Client (the CLI's and notebooks') with the CA, and its own certificate under mutual TLS."""
    from almquist.client import Client

    config, _ = front
    mine = certs.client if config.client_ca else None
    with Client(
        f"localhost:{config.grpc_port}",
        tls_ca=str(certs.ca.cert),
        tls_client_cert=str(mine.cert) if mine else None,
        tls_client_key=str(mine.key) if mine else None,
    ) as client:
        assert _check(client._channel) == health_pb2.HealthCheckResponse.SERVING


def test_the_front_serves_the_real_stack_over_mutual_tls(serve_stack, certs: Certs, tmp_path: Path) -> None:
    """The nginx front before the session's Serve proxies, as `almquist up --tls-cert ... --tls-client-ca ...`
    starts it: a typed turn over mutual TLS (credential and all), the avatar page over HTTPS, plaintext refused."""
    from almquist.client import Client

    stack = (int(serve_stack.target.rpartition(":")[2]), serve_stack.schema.http_options.port)
    config = _config(certs, stack, mutual=True)
    tls_front.start(config, tmp_path / "front")
    try:
        with Client(
            f"localhost:{config.grpc_port}",
            timeout_s=300,
            tls_ca=str(certs.ca.cert),
            tls_client_cert=str(certs.client.cert),
            tls_client_key=str(certs.client.key),
        ) as client:
            assert client.whoami().role == "admin"
            answer = client.ask("Hello there!", max_tokens=8)
            assert answer.answer.strip() and answer.turn_end.tokens > 0
        context = ssl.create_default_context(cafile=str(certs.ca.cert))
        context.load_cert_chain(certs.client.cert, certs.client.key)
        url = f"https://localhost:{config.http_port}/avatar/health"
        with urllib.request.urlopen(url, context=context, timeout=30) as response:
            assert response.status == 200 and "open_calls" in json.loads(response.read())
        with Client(f"127.0.0.1:{config.grpc_port}", timeout_s=30) as plain, pytest.raises(grpc.RpcError):
            plain.whoami()
    finally:
        tls_front.stop(tmp_path / "front")
