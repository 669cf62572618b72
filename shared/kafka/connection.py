"""How every Kafka client Headwater creates reaches the cluster: bootstrap servers, TLS, SASL
and any other librdkafka property the deployment passes through, in one place.

Secrets (passwords, client secrets, pass-through values) live only in `properties`, which no
repr, log line or error message shows; errors name the HEADWATER_* setting to look at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError

if TYPE_CHECKING:
    from shared.settings import Settings

# Properties Headwater sets itself, from its own settings or because its guarantees depend on
# them (offsets stored after the output is handled, idempotent writes, group settings).
SECURITY_PROPERTIES: dict[str, str] = {
    "bootstrap.servers": "HEADWATER_KAFKA_BOOTSTRAP",
    "security.protocol": "HEADWATER_KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "HEADWATER_KAFKA_SASL_MECHANISM",
    "sasl.mechanisms": "HEADWATER_KAFKA_SASL_MECHANISM",
    "sasl.username": "HEADWATER_KAFKA_SASL_USERNAME",
    "sasl.password": "HEADWATER_KAFKA_SASL_PASSWORD",
    "sasl.oauthbearer.method": "HEADWATER_KAFKA_OAUTH_TOKEN_URL",
    "sasl.oauthbearer.token.endpoint.url": "HEADWATER_KAFKA_OAUTH_TOKEN_URL",
    "sasl.oauthbearer.client.id": "HEADWATER_KAFKA_OAUTH_CLIENT_ID",
    "sasl.oauthbearer.client.secret": "HEADWATER_KAFKA_OAUTH_CLIENT_SECRET",
    "sasl.oauthbearer.scope": "HEADWATER_KAFKA_OAUTH_SCOPE",
    "ssl.ca.location": "HEADWATER_KAFKA_SSL_CA_LOCATION",
    "ssl.certificate.location": "HEADWATER_KAFKA_SSL_CERTIFICATE_LOCATION",
    "ssl.key.location": "HEADWATER_KAFKA_SSL_KEY_LOCATION",
    "ssl.key.password": "HEADWATER_KAFKA_SSL_KEY_PASSWORD",
    "ssl.endpoint.identification.algorithm": "HEADWATER_KAFKA_SSL_VERIFY_HOSTNAME",
}
OWNED_PROPERTIES: frozenset[str] = frozenset(
    {
        "group.id",
        "group.protocol",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "partition.assignment.strategy",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "auto.commit.interval.ms",
        "auto.offset.reset",
        "enable.partition.eof",
        "isolation.level",
        "enable.idempotence",
        "acks",
        "message.max.bytes",
        "delivery.report.only.error",
        "error_cb",
        "on_delivery",
        "oauth_cb",
        "stats_cb",
        "throttle_cb",
        "logger",
    }
)


class KafkaSettingsError(ValueError):
    """A Kafka setting Headwater cannot use; the message names the variable."""


@dataclass(frozen=True)
class KafkaConnection:
    """Where and how to connect. A bare bootstrap string (tests, local tools) is a plaintext
    connection: `KafkaConnection.of("127.0.0.1:9092")`."""

    bootstrap: str
    properties: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    security_protocol: str = "PLAINTEXT"

    @classmethod
    def of(cls, where: KafkaConnection | str) -> KafkaConnection:
        return where if isinstance(where, KafkaConnection) else cls(where)

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        props: dict[str, Any] = {"security.protocol": settings.kafka_security_protocol}
        protocol = settings.kafka_security_protocol
        mechanism = settings.kafka_sasl_mechanism if protocol.startswith("SASL_") else None
        if mechanism == "OAUTHBEARER":
            assert settings.kafka_oauth_client_secret is not None  # Settings checks
            props |= {
                "sasl.mechanism": mechanism,
                "sasl.oauthbearer.method": "oidc",
                "sasl.oauthbearer.token.endpoint.url": settings.kafka_oauth_token_url,
                "sasl.oauthbearer.client.id": settings.kafka_oauth_client_id,
                "sasl.oauthbearer.client.secret": (
                    settings.kafka_oauth_client_secret.get_secret_value()
                ),
            }
            if settings.kafka_oauth_scope:
                props["sasl.oauthbearer.scope"] = settings.kafka_oauth_scope
        elif mechanism is not None:
            assert settings.kafka_sasl_password is not None  # Settings checks
            props |= {
                "sasl.mechanism": mechanism,
                "sasl.username": settings.kafka_sasl_username,
                "sasl.password": settings.kafka_sasl_password.get_secret_value(),
            }
        if protocol in ("SSL", "SASL_SSL"):
            props["ssl.endpoint.identification.algorithm"] = (
                "https" if settings.kafka_ssl_verify_hostname else "none"
            )
            files = {
                "ssl.ca.location": settings.kafka_ssl_ca_location,
                "ssl.certificate.location": settings.kafka_ssl_certificate_location,
                "ssl.key.location": settings.kafka_ssl_key_location,
            }
            props |= {name: path for name, path in files.items() if path}
            if settings.kafka_ssl_key_password is not None:
                props["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
        passed = {k: v.get_secret_value() for k, v in settings.kafka_client_config.items()}
        refuse_owned(passed)
        return cls(settings.kafka_bootstrap, props | passed, protocol)

    def config(self, conf: Mapping[str, Any]) -> dict[str, Any]:
        """A client's configuration: its own `conf`, then the connection's properties."""
        return {"bootstrap.servers": self.bootstrap, **conf, **self.properties}

    def __str__(self) -> str:
        return self.bootstrap


def refuse_owned(passed: Mapping[str, object]) -> None:
    """HEADWATER_KAFKA_CLIENT_CONFIG may not set what Headwater sets itself."""
    for name in sorted(passed):
        if name in SECURITY_PROPERTIES:
            raise KafkaSettingsError(
                f"HEADWATER_KAFKA_CLIENT_CONFIG sets {name!r}: use {SECURITY_PROPERTIES[name]}"
            )
        if name in OWNED_PROPERTIES:
            raise KafkaSettingsError(
                f"HEADWATER_KAFKA_CLIENT_CONFIG sets {name!r}, which Headwater sets itself "
                "(its delivery and offset guarantees depend on it)"
            )


def explain(err: KafkaError) -> str | None:
    """What to fix, by setting, for an error no retry mends (a refused login, an untrusted
    certificate, a missing permission); None for the others."""
    code, text = err.code(), err.str()
    if code == KafkaError._AUTHENTICATION or "SASL authentication error" in text:
        if "OAUTHBEARER" in text or "OIDC" in text:
            return (
                f"the broker refused the OAUTHBEARER login ({text}); check "
                "HEADWATER_KAFKA_OAUTH_TOKEN_URL, HEADWATER_KAFKA_OAUTH_CLIENT_ID and "
                "HEADWATER_KAFKA_OAUTH_CLIENT_SECRET"
            )
        return (
            f"the broker refused the SASL login ({text}); check HEADWATER_KAFKA_SASL_USERNAME, "
            "HEADWATER_KAFKA_SASL_PASSWORD and HEADWATER_KAFKA_SASL_MECHANISM"
        )
    if "certificate verify failed" in text:  # librdkafka says no more of why
        return (
            f"the broker's certificate is not trusted ({text}); HEADWATER_KAFKA_SSL_CA_LOCATION "
            "must name the CA that signed it (unset: the system's CAs), and the certificate "
            "must name the host in HEADWATER_KAFKA_BOOTSTRAP (HEADWATER_KAFKA_SSL_VERIFY_HOSTNAME"
            "=false turns that check off)"
        )
    if "alert certificate" in text or "alert bad certificate" in text:
        return (
            f"the broker refused this client's certificate ({text}): the one in "
            "HEADWATER_KAFKA_SSL_CERTIFICATE_LOCATION is expired, not yet valid, or not signed "
            "by a CA the broker trusts"
        )
    if code == KafkaError._SSL:
        return (
            f"TLS with the broker failed ({text}); check HEADWATER_KAFKA_SSL_CA_LOCATION, "
            "HEADWATER_KAFKA_SSL_CERTIFICATE_LOCATION and HEADWATER_KAFKA_SSL_KEY_LOCATION"
        )
    return None


def no_answer(connection: KafkaConnection) -> str:
    """Why a broker may not answer at all: a wrong address, or a listener that speaks
    another protocol (librdkafka only says the connection was closed)."""
    return (
        f"check HEADWATER_KAFKA_BOOTSTRAP ({connection.bootstrap}) and "
        f"HEADWATER_KAFKA_SECURITY_PROTOCOL ({connection.security_protocol}: it must be the "
        "listener's)"
    )
