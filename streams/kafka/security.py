"""How every Kafka client of settle connects: the one place that turns Settings into client arguments.

Two builders, one per client library, read the same settings
(``SETTLE_SECURITY_PROTOCOL``, ``SETTLE_SASL_MECHANISM``, ``SETTLE_SASL_USERNAME``,
``SETTLE_SASL_PASSWORD``, ``SETTLE_SSL_CAFILE``, ``SETTLE_SSL_CERTFILE``,
``SETTLE_SSL_KEYFILE``, ``SETTLE_SSL_PASSWORD``, ``SETTLE_SSL_CHECK_HOSTNAME``):

- :func:`client_kwargs` for every ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and
  ``AIOKafkaAdminClient`` (CLI, tests, trainer, ingest, replay);
- :func:`faust_credentials` for Faust apps' ``broker_credentials``.

A new client is built as ``AIOKafkaProducer(**client_kwargs(settings), acks="all")``;
``tests/unit/streams/kafka/test_security.py`` fails on a construction that does not.
"""

from __future__ import annotations

import ssl
from typing import Any

from settle.streams.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class SecuritySettingsError(ValueError):
    """The SETTLE_SECURITY_* / SASL / SSL settings do not describe a usable connection."""


def check(settings: Settings) -> None:
    """Refuse contradictory or incomplete security settings with a message naming the variable."""
    protocol = settings.security_protocol.upper()
    if protocol not in PROTOCOLS:
        raise SecuritySettingsError(
            f"SETTLE_SECURITY_PROTOCOL={settings.security_protocol!r}: expected one of {', '.join(PROTOCOLS)}"
        )
    if protocol.startswith("SASL_"):
        mechanism = settings.sasl_mechanism.upper()
        if mechanism not in MECHANISMS:
            raise SecuritySettingsError(
                f"SETTLE_SASL_MECHANISM={settings.sasl_mechanism!r}: expected one of {', '.join(MECHANISMS)}"
            )
        if not settings.sasl_username or not settings.sasl_password:
            raise SecuritySettingsError(
                f"{protocol} needs SETTLE_SASL_USERNAME and SETTLE_SASL_PASSWORD"
            )
    elif settings.sasl_mechanism or settings.sasl_username:
        raise SecuritySettingsError(
            f"SASL settings given but SETTLE_SECURITY_PROTOCOL={protocol}: use SASL_SSL or SASL_PLAINTEXT"
        )
    if not protocol.endswith("SSL") and (settings.ssl_cafile or settings.ssl_certfile):
        raise SecuritySettingsError(
            f"SSL files given but SETTLE_SECURITY_PROTOCOL={protocol}: use SSL or SASL_SSL"
        )
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        raise SecuritySettingsError("a client certificate needs both SETTLE_SSL_CERTFILE and SETTLE_SSL_KEYFILE")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL connections (system CAs unless SETTLE_SSL_CAFILE); else None."""
    check(settings)
    if not settings.security_protocol.upper().endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    if settings.ssl_certfile:
        context.load_cert_chain(
            settings.ssl_certfile, settings.ssl_keyfile or None, password=settings.ssl_password or None
        )
    if not settings.ssl_check_hostname:
        context.check_hostname = False  # certificate still verified against the CA
    return context


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection arguments for any aiokafka client: bootstrap servers, protocol, SASL, TLS."""
    check(settings)
    protocol = settings.security_protocol.upper()
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.bootstrap, "security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism.upper()
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password
    return kwargs


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the same settings (None for PLAINTEXT)."""
    import faust

    check(settings)
    protocol = settings.security_protocol.upper()
    context = ssl_context(settings)
    if protocol.startswith("SASL_"):
        credentials = faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            mechanism=settings.sasl_mechanism.upper(),
            ssl_context=context,
        )
        return credentials
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


def faust_broker_settings(settings: Settings) -> dict[str, Any]:
    """The ``broker`` and ``broker_credentials`` arguments of a ``faust.App``."""
    hosts = [h.strip() for h in settings.bootstrap.split(",") if h.strip()]
    return {"broker": ";".join(f"kafka://{h}" for h in hosts), "broker_credentials": faust_credentials(settings)}
