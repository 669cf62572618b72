"""Apache Kafka with a SASL_SSL listener (SCRAM-SHA-512, client certificates required) and
the StandardAuthorizer, for the security tests. Its PLAINTEXT listener is the operator's:
the test creates topics, users and ACLs through it as the super user ANONYMOUS."""

from __future__ import annotations

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from shared.stack.kafka_broker import KafkaBroker
from tests.integration.certs import PrivateCA

MECHANISM = "SCRAM-SHA-512"


def secure_broker(ca: PrivateCA) -> KafkaBroker:
    server = ca.issue("kafka-broker", server=True)
    prefix = "listener.name.secure."
    return KafkaBroker(
        listeners={"SECURE": "SASL_SSL"},
        overrides={
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS",
            "sasl.enabled.mechanisms": MECHANISM,
            f"{prefix}sasl.enabled.mechanisms": MECHANISM,
            f"{prefix}scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            f"{prefix}ssl.keystore.type": "PEM",
            f"{prefix}ssl.keystore.location": str(ca.keystore(server)),
            f"{prefix}ssl.truststore.type": "PEM",
            f"{prefix}ssl.truststore.location": str(ca.path),
            f"{prefix}ssl.client.auth": "required",
        },
    )


def secure_bootstrap(broker: KafkaBroker) -> str:
    return f"127.0.0.1:{broker.listener_ports['SECURE']}"


def add_users(broker: KafkaBroker, passwords: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    upserts = [
        UserScramCredentialUpsertion(user, info, password.encode())
        for user, password in passwords.items()
    ]
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(30)


def _bindings(user: str, grants: list[tuple[str, str, str, str]]) -> list[AclBinding]:
    return [
        AclBinding(
            ResourceType[rtype],
            name,
            ResourcePatternType[pattern],
            f"User:{user}",
            "*",
            AclOperation[operation],
            AclPermissionType.ALLOW,
        )
        for rtype, name, pattern, operation in grants
    ]


def grant(broker: KafkaBroker, user: str, grants: list[tuple[str, str, str, str]]) -> None:
    """(resource type, name, pattern, operation), e.g. ("TOPIC", "events", "LITERAL", "READ")."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_acls(_bindings(user, grants)).values():
        future.result(30)


def revoke(broker: KafkaBroker, user: str, grants: list[tuple[str, str, str, str]]) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    filters = [
        AclBindingFilter(
            b.restype,
            b.name,
            b.resource_pattern_type,
            b.principal,
            b.host,
            b.operation,
            b.permission_type,
        )
        for b in _bindings(user, grants)
    ]
    for future in admin.delete_acls(filters).values():
        assert future.result(30), "no ACL matched"


def client_files(ca: PrivateCA, user: str, *, expired: bool = False) -> dict[str, str]:
    issued = ca.issue(f"{user}-client" + ("-expired" if expired else ""), expired=expired)
    return {
        "HEADWATER_KAFKA_SSL_CERTIFICATE_LOCATION": str(issued.cert),
        "HEADWATER_KAFKA_SSL_KEY_LOCATION": str(issued.key),
    }


def client_env(broker: KafkaBroker, ca: PrivateCA, user: str, password: str) -> dict[str, str]:
    """HEADWATER_* variables of a service that logs in as `user`."""
    return {
        "HEADWATER_KAFKA_BOOTSTRAP": secure_bootstrap(broker),
        "HEADWATER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "HEADWATER_KAFKA_SASL_MECHANISM": MECHANISM,
        "HEADWATER_KAFKA_SASL_USERNAME": user,
        "HEADWATER_KAFKA_SASL_PASSWORD": password,
        "HEADWATER_KAFKA_SSL_CA_LOCATION": str(ca.path),
        **client_files(ca, user),
    }
