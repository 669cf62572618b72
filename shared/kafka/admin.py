"""Topic administration: explicit creation (never auto-created: a broker would pick the
partition count), existence checks, and the record size a topic takes."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # exported, not in __all__
    AdminClient,
    ConfigResource,
    ResourceType,
)
from confluent_kafka.cimpl import NewTopic

from shared.kafka.connection import KafkaConnection, explain, no_answer

log = logging.getLogger(__name__)

# What a record carries around its value on the wire: key, headers (lineage) and the record
# batch's own fields. A topic must take a value of HEADWATER_MAX_MESSAGE_BYTES plus this.
RECORD_OVERHEAD = 16_384


class TopicError(RuntimeError):
    pass


class Admin:
    """An admin client that remembers why the broker did not answer (a refused login, an
    untrusted certificate: librdkafka only reports those to an error callback)."""

    def __init__(self, where: KafkaConnection | str) -> None:
        self.connection = KafkaConnection.of(where)
        self.errors: list[KafkaError] = []
        self.client = AdminClient(self.connection.config({"error_cb": self.errors.append}))

    def _refusal(self) -> TopicError | None:
        self.client.poll(0.1)  # serve the error callback
        for err in self.errors:
            reason = explain(err)
            if reason is not None:
                return TopicError(f"cannot use the Kafka cluster at {self.connection}: {reason}")
        return None

    def unreachable(self, exc: KafkaException) -> TopicError:
        """The error to raise when a request failed: why, if the broker said, by setting."""
        return self._refusal() or TopicError(
            f"broker at {self.connection} is unreachable ({exc.args[0].str()}); "
            + no_answer(self.connection)
        )

    def topics(self, timeout: float) -> dict[str, Any]:
        """The cluster's topics. Asked a second at a time, so that a refused login or
        certificate stops it at once rather than at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return dict(self.client.list_topics(timeout=max(0.1, min(1.0, left))).topics)
            except KafkaException as exc:
                refused = self._refusal()
                if refused is not None:
                    raise refused from None
                if left <= 1.0:
                    raise self.unreachable(exc) from None


def ensure_topics(
    where: KafkaConnection | str, partitions: Mapping[str, int], timeout: float = 15.0
) -> None:
    """Create each topic with its partition count; an existing topic must already match."""
    admin = Admin(where).client
    futures = admin.create_topics(
        [NewTopic(name, n, 1) for name, n in partitions.items()], request_timeout=timeout
    )
    for name, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicError(f"cannot create topic {name!r}: {exc.args[0].str()}") from exc
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=timeout).topics
        missing = [n for n in partitions if n not in meta]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise TopicError(f"topics not visible after creation: {missing}")
        time.sleep(0.1)
    for name, n in partitions.items():
        have = len(meta[name].partitions)
        if have != n:
            raise TopicError(f"topic {name!r} has {have} partitions; this pipeline needs {n}")


def wait_for_broker(bootstrap: str, timeout: float = 20.0) -> None:
    """Block until the broker answers a metadata request."""
    admin = Admin(bootstrap).client
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.1)
    raise TopicError(f"broker at {bootstrap} did not answer within {timeout:.0f}s: {last}")


def require_topics(
    where: KafkaConnection | str,
    names: list[str],
    timeout: float = 10.0,
    *,
    written: Collection[str] = (),
) -> dict[str, int]:
    """Partition count of each topic; a missing topic is an error, never auto-created.
    `written`: those of `names` the caller writes (else it reads them), for the ACL a
    refusal asks for."""
    admin = Admin(where)
    meta = admin.topics(timeout)
    missing = [n for n in names if n not in meta]
    # A topic this client may not describe is left out of the list; asked by name, the
    # broker says which it is.
    hidden = [n for n in missing if _authorisation_failed(admin.client, n, timeout)]
    if hidden:
        grants = ", ".join(f"{'Write' if n in written else 'Read'} on Topic:{n}" for n in hidden)
        raise TopicError(
            f"not authorised to describe topics {hidden} on {admin.connection}: grant this "
            f"service's user {grants} (each implies Describe; see the README's ACL table)"
        )
    if missing:
        raise TopicError(
            f"topics {missing} do not exist on {admin.connection}; create them with their "
            "partition counts first (`headwater stack` does for local runs)"
        )
    return {n: len(meta[n].partitions) for n in names}


def _authorisation_failed(admin: AdminClient, topic: str, timeout: float) -> bool:
    try:
        found = admin.list_topics(topic=topic, timeout=timeout).topics.get(topic)
    except KafkaException:
        return False
    error = None if found is None else found.error
    return error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def check_record_limits(
    where: KafkaConnection | str, written: Sequence[str], max_bytes: int, timeout: float = 10.0
) -> None:
    """Refuse to start when a topic that carries input-sized records (ingest's and the
    features service's outputs) takes smaller ones than HEADWATER_MAX_MESSAGE_BYTES lets
    through: the broker would refuse such a record (Kafka
    enforces the topic's `max.message.bytes`, 1,048,588 bytes by default), the service would
    stop at it, and every restart would meet it again. A broker that does not describe its
    topics' settings is not checked (logged), nor is one that may not (no DescribeConfigs)."""
    admin = Admin(where).client
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in dict.fromkeys(written)]
    try:
        limits = {
            resource.name: int(future.result(timeout)["max.message.bytes"].value)
            for resource, future in admin.describe_configs(resources).items()
        }
    except (KafkaException, KeyError, ValueError, TypeError) as exc:
        log.warning("topics' max.message.bytes not checked", extra={"fields": {"error": str(exc)}})
        return
    needed = max_bytes + RECORD_OVERHEAD
    small = {name: limit for name, limit in limits.items() if limit < needed}
    if small:
        listed = ", ".join(f"{name!r} takes {limit:,}" for name, limit in sorted(small.items()))
        raise TopicError(
            f"topics take smaller records than this service may write: {listed} bytes "
            f"(max.message.bytes), but HEADWATER_MAX_MESSAGE_BYTES={max_bytes:,} needs "
            f"{needed:,}; raise the topics' max.message.bytes or lower "
            "HEADWATER_MAX_MESSAGE_BYTES"
        )
