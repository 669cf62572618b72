"""Explicit topic creation: Tansu would auto-create topics with 4 partitions otherwise."""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic


class TopicError(RuntimeError):
    pass


def ensure_topics(bootstrap: str, partitions: Mapping[str, int], timeout: float = 15.0) -> None:
    """Create each topic with its partition count; an existing topic must already match."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
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
    admin = AdminClient({"bootstrap.servers": bootstrap})
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


def require_topics(bootstrap: str, names: list[str], timeout: float = 10.0) -> dict[str, int]:
    """Partition count of each topic; a missing topic is an error, never auto-created."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        meta = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise TopicError(f"broker at {bootstrap} is unreachable: {exc.args[0].str()}") from exc
    missing = [n for n in names if n not in meta]
    if missing:
        raise TopicError(
            f"topics {missing} do not exist on {bootstrap}; create them with their partition "
            "counts first (`headwater stack` does for local runs)"
        )
    return {n: len(meta[n].partitions) for n in names}
