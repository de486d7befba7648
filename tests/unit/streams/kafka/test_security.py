"""Security settings reach every Kafka client: one builder per client library, used everywhere.

The broker-side proof (real TLS, every client kind) is tests/integration/test_kafka_tls.py;
here: the builders' output, the environment variables, real aiokafka/Faust objects built
from them, and a scan of the source tree for clients that bypass the builders.
"""

from __future__ import annotations

import ast
import asyncio
import ssl
from pathlib import Path

import pytest

from settle.streams.kafka.security import (
    SecuritySettingsError,
    client_kwargs,
    faust_broker_settings,
    faust_credentials,
)
from settle.streams.local.processes import settings_env
from settle.streams.settings import Settings

ROOT = Path(__file__).resolve().parents[4]

SCRAM = Settings(
    bootstrap="k0:9093,k1:9093",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="settle",
    sasl_password="s3cret",
)


def test_environment_variables_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SETTLE_SECURITY_PROTOCOL": "SASL_SSL",
        "SETTLE_SASL_MECHANISM": "SCRAM-SHA-256",
        "SETTLE_SASL_USERNAME": "u",
        "SETTLE_SASL_PASSWORD": "p",
        "SETTLE_SSL_CAFILE": "/etc/ca.pem",
        "SETTLE_SSL_CHECK_HOSTNAME": "false",
    }.items():
        monkeypatch.setenv(name, value)
    s = Settings.from_env()
    assert (s.security_protocol, s.sasl_mechanism, s.sasl_username, s.sasl_password) == ("SASL_SSL", "SCRAM-SHA-256", "u", "p")
    assert s.ssl_cafile == "/etc/ca.pem" and s.ssl_check_hostname is False
    assert "sasl_password" not in repr(s) and "ssl_password" not in repr(s)
    # a child process (WorkerProcess) gets the same settings back through SETTLE_*
    monkeypatch.delenv("SETTLE_SSL_CAFILE")
    for k, v in settings_env(SCRAM).items():
        monkeypatch.setenv(k, v)
    assert Settings.from_env() == SCRAM


def test_a_bad_boolean_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SETTLE_SSL_CHECK_HOSTNAME", "maybe")
    with pytest.raises(ValueError, match="boolean"):
        Settings.from_env()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_kwargs_build_real_aiokafka_clients(protocol: str, mechanism: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    s = Settings(bootstrap="k0:9093", security_protocol=protocol, sasl_mechanism=mechanism,
                 sasl_username="settle", sasl_password="pw")
    kwargs = client_kwargs(s)
    assert kwargs["bootstrap_servers"] == "k0:9093"
    assert (kwargs["security_protocol"], kwargs["sasl_mechanism"]) == (protocol, mechanism)
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("settle", "pw")
    assert isinstance(kwargs.get("ssl_context"), ssl.SSLContext) == (protocol == "SASL_SSL")

    async def build() -> None:  # aiokafka validates these combinations in its constructors
        for client in (AIOKafkaProducer(**kwargs), AIOKafkaConsumer(**kwargs), AIOKafkaAdminClient(**kwargs)):
            inner = getattr(client, "client", None) or client._client  # noqa: SLF001
            assert (inner._security_protocol, inner._sasl_mechanism) == (protocol, mechanism)  # noqa: SLF001
            assert inner._sasl_plain_username == "settle"  # noqa: SLF001
            if not isinstance(client, AIOKafkaAdminClient):
                await client.stop()  # never started: releases it without a warning

    asyncio.run(build())


def test_tls_with_a_ca_file_and_a_client_certificate(tmp_path: Path) -> None:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make a certificate")
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=settle-client"], check=True, capture_output=True)
    s = Settings(security_protocol="SSL", ssl_cafile=str(cert), ssl_certfile=str(cert), ssl_keyfile=str(key),
                 ssl_check_hostname=False)
    context = client_kwargs(s)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname
    assert any(c["subject"] == ((("commonName", "settle-client"),),) for c in context.get_ca_certs())
    assert "sasl_mechanism" not in client_kwargs(s)


def test_faust_gets_the_same_settings() -> None:
    import faust

    broker = faust_broker_settings(SCRAM)
    assert broker["broker"] == "kafka://k0:9093;kafka://k1:9093"  # every bootstrap host, in Faust's list syntax
    creds = broker["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value, creds.username, creds.password) == (
        "SASL_SSL", "SCRAM-SHA-512", "settle", "s3cret")
    assert isinstance(faust_credentials(Settings(security_protocol="SSL")), faust.SSLCredentials)
    assert faust_credentials(Settings()) is None
    # and what Faust's aiokafka driver hands its own producers and consumers
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(creds)
    assert {k: auth[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username")} == {
        k: client_kwargs(SCRAM)[k] for k in ("security_protocol", "sasl_mechanism", "sasl_plain_username")}


def test_the_faust_apps_are_built_with_the_credentials(tmp_path: Path) -> None:
    from settle.streams.kafka.settle_agent import base_app_settings, create_app

    from faust.transport.drivers.aiokafka import server_list

    s = Settings(bootstrap="k0:9093,k1:9094", security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                 sasl_username="u", sasl_password="p", data_dir=tmp_path)
    assert base_app_settings(s, "x")["broker_credentials"].username == "u"
    app = create_app(s)
    assert app.conf.broker_credentials.username == "u"
    assert app.conf.broker_credentials.mechanism.value == "PLAIN"
    # every host of a cluster (a plain "kafka://k0:9093,k1:9094" is not a URL Faust can parse)
    assert server_list(app.conf.broker, 9092) == ["k0:9093", "k1:9094"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"security_protocol": "TLS"}, "SETTLE_SECURITY_PROTOCOL"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
         "SETTLE_SASL_MECHANISM"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "SETTLE_SASL_USERNAME"),
        ({"sasl_mechanism": "PLAIN", "sasl_username": "u"}, "use SASL_SSL"),
        ({"ssl_cafile": "/ca.pem"}, "use SSL or SASL_SSL"),
        ({"security_protocol": "SSL", "ssl_certfile": "/c.pem"}, "SETTLE_SSL_KEYFILE"),
    ],
)
def test_contradictory_settings_are_refused_with_the_variable_named(overrides: dict, message: str) -> None:
    with pytest.raises(SecuritySettingsError, match=message):
        client_kwargs(Settings(**overrides))


#: client constructions that may bypass the builder, with why
EXEMPT = {
    ("streams/local/broker.py", "AIOKafkaAdminClient"): "readiness probe of the embedded broker, which is plaintext",
}
#: files whose owner is routing their clients through the builder right now (none left)
PENDING: set[str] = set()
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
BUILDERS = {"client_kwargs", "faust_broker_settings", "base_app_settings"}


def _constructions() -> list[tuple[str, int, str, bool]]:
    """(file, line, client class, built through a builder) for every Kafka client built in the source."""
    found = []
    for top in ("streams", "trainer", "schemas"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "streams/kafka/security.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                is_faust_app = name == "App" and isinstance(func, ast.Attribute) and getattr(func.value, "id", "") == "faust"
                if name not in CLIENTS and not is_faust_app:
                    continue
                built = any(
                    kw.arg is None and isinstance(kw.value, ast.Call)
                    and getattr(kw.value.func, "id", getattr(kw.value.func, "attr", "")) in BUILDERS
                    for kw in node.keywords
                )
                found.append((rel, node.lineno, "faust.App" if is_faust_app else name, built))
    return found


def test_every_kafka_client_in_the_source_is_built_through_the_builders() -> None:
    found = _constructions()
    assert {c for _, _, c, _ in found} >= CLIENTS | {"faust.App"}, found  # the scan sees them
    bypass = sorted(
        f"{f}:{line} {c}" for f, line, c, built in found if not built and (f, c) not in EXEMPT and f not in PENDING
    )
    assert not bypass, "Kafka clients that ignore the security settings (use **client_kwargs(settings)):\n" + "\n".join(bypass)
