"""A copy of every unit's newest checkpoint on a compacted Kafka topic, outliving Redis.

Redis holds the checkpoints services read and write; losing it (no persistence, a replaced
instance) would otherwise lose all state. After each checkpoint the store also writes it
here, and a unit that Redis has never seen is first put back from here (DESIGN §4).

Records on the topic's one partition, keyed so that compaction keeps one checkpoint per unit
of each deployment (its consumer group prefix: deployments sharing a cluster have their own):
  <prefix>/<base>                  the manifest: version, epoch, MAC, meta, chunk id, count
  <prefix>/<base>#<chunk id>#<i>   the blob's i-th slice (blobs can exceed the record limit)
The chunks go first, then the manifest; the previous manifest's chunks are deleted
(tombstones) only once the new one is delivered, so a reader always finds the chunks its
manifest names. The blob's MAC is checked by the store on load, as for Redis' copy.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgpack
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.cimpl import NewTopic

from shared.kafka.admin import Admin, TopicError
from shared.kafka.connection import KafkaConnection
from shared.kafka.producer import DeliveryError, SafeProducer
from shared.settings import Settings

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024  # well under the default broker record limit (1 MiB)
INDEX_TTL_S = 2.0  # how long one read of the topic's manifests answers for (a burst of takes)
PARTITION = 0


@dataclass(frozen=True)
class SavedCheckpoint:
    """One checkpoint as the log holds it: what the store needs to put it back."""

    version: int
    epoch: int
    blob: bytes
    mac: bytes
    meta: str  # JSON, as the store keeps it
    chunk_id: str
    chunks: int


class CheckpointLogError(RuntimeError):
    pass


class CheckpointLog:
    """Writes and reads the checkpoint topic; one per process, shared by its stores."""

    def __init__(
        self,
        where: KafkaConnection | str,
        topic: str,
        deployment: str = "headwater",
        *,
        timeout_s: float = 10.0,
    ) -> None:
        """`deployment`: its consumer group prefix, which names its copies."""
        self.connection = KafkaConnection.of(where)
        self.topic = topic
        self.deployment = deployment
        self.timeout_s = timeout_s
        self._producer: SafeProducer | None = None
        self._ensured = False
        self._index: dict[str, dict[str, Any]] | None = None  # see _manifests
        self._index_at = 0.0

    def ensure_topic(self) -> None:
        """Create the topic (one partition, compacted) unless it exists."""
        if self._ensured:
            return
        admin = Admin(self.connection)
        if self.topic not in admin.topics(self.timeout_s):
            futures = admin.client.create_topics(
                [NewTopic(self.topic, 1, 1, config={"cleanup.policy": "compact"})],
                request_timeout=self.timeout_s,
            )
            try:
                futures[self.topic].result(self.timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicError(
                        f"cannot create the checkpoint topic {self.topic!r} "
                        f"(HEADWATER_CHECKPOINT_TOPIC): {exc.args[0].str()}; create it with "
                        "cleanup.policy=compact, or grant Create on it"
                    ) from exc
        self._ensured = True

    def prepare(self) -> None:
        """Create the topic and connect the writer now, at start-up: done by the first
        checkpoint instead, it stalled the stream mid-way (0.5 s on a new topic on Tansu,
        a p99 latency several times a raw hop's). Best effort: on failure the first
        checkpoint tries again and logs why."""
        try:
            self._writer().wait_for_topic(self.topic, self.timeout_s)
        except (KafkaException, TopicError, DeliveryError) as exc:
            log.warning(
                "checkpoint topic not ready at start-up; the first checkpoint tries again",
                extra={"fields": {"topic": self.topic, "error": str(exc)}},
            )

    def put(self, base: str, saved: SavedCheckpoint, previous: tuple[str, int] | None) -> None:
        """Write a checkpoint and wait until the broker has it; then drop `previous` (the
        chunk id and count of the copy it replaces). Raises DeliveryError if undelivered."""
        producer = self._writer()
        base = self.key(base)
        blob = saved.blob
        for i, start in enumerate(range(0, max(len(blob), 1), CHUNK_BYTES)):
            producer.produce(
                self.topic,
                blob[start : start + CHUNK_BYTES],
                chunk_key(base, saved.chunk_id, i),
                partition=PARTITION,
            )
        manifest = {
            "version": saved.version,
            "epoch": saved.epoch,
            "mac": saved.mac,
            "meta": saved.meta,
            "chunk_id": saved.chunk_id,
            "chunks": saved.chunks,
            "bytes": len(blob),
        }
        producer.produce(self.topic, msgpack.packb(manifest), base.encode(), partition=PARTITION)
        producer.flush(self.timeout_s)
        if self._index is not None:
            self._index[base] = manifest
        if previous is not None and previous[0] != saved.chunk_id:
            chunk_id, count = previous
            for i in range(count):
                producer.produce(
                    self.topic, None, chunk_key(base, chunk_id, i), partition=PARTITION
                )
            producer.poll()

    def latest(self, base: str) -> SavedCheckpoint | None:
        """The newest checkpoint of `base` on the topic, or None (no copy, or no topic).
        Asked when Redis has no trace of a unit: a new one, or one whose state was lost."""
        key = self.key(base)
        manifest = self._manifests().get(key)
        if manifest is None:
            return None
        chunk_id, count = manifest["chunk_id"], int(manifest["chunks"])
        mine = f"{key}#{chunk_id}#".encode()
        chunks: dict[bytes, bytes] = {}
        for k, value in self._read(lambda k: k.startswith(mine)):
            if value is None:
                chunks.pop(k, None)
            else:
                chunks[k] = value
        try:
            blob = b"".join(chunks[chunk_key(key, chunk_id, i)] for i in range(count))
        except KeyError:
            raise CheckpointLogError(
                f"the checkpoint topic's copy of {key} (version {manifest['version']}) lacks "
                "some of its chunks"
            ) from None
        if len(blob) != manifest["bytes"]:
            raise CheckpointLogError(f"the checkpoint topic's copy of {key} is truncated")
        return SavedCheckpoint(
            int(manifest["version"]),
            int(manifest["epoch"]),
            blob,
            manifest["mac"],
            manifest["meta"],
            chunk_id,
            count,
        )

    def _manifests(self) -> dict[str, dict[str, Any]]:
        """This deployment's newest manifests by key. One read of the topic serves every
        unit taken within INDEX_TTL_S: a rebalance hands out many at once, and a new
        unit (the usual case) is answered without reading the topic again."""
        now = time.monotonic()
        if self._index is not None and now - self._index_at < INDEX_TTL_S:
            return self._index
        found: dict[str, dict[str, Any]] = {}
        if self.topic in Admin(self.connection).topics(self.timeout_s):
            mine = f"{self.deployment}/".encode()
            for k, value in self._read(lambda k: k.startswith(mine) and b"#" not in k):
                if value is None:
                    found.pop(k.decode(), None)
                else:
                    found[k.decode()] = msgpack.unpackb(value)
        self._index, self._index_at = found, now
        return found

    def _read(self, wanted: Callable[[bytes], bool]) -> Iterator[tuple[bytes, bytes | None]]:
        """The (key, value) of each wanted record, to the end of the partition as the
        broker reports it (not a high watermark asked first: Tansu's can lag)."""
        consumer = Consumer(
            self.connection.config(
                {
                    "group.id": "headwater-checkpoint-log",  # never joins: assigned by hand
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "fetch.message.max.bytes": 4 * CHUNK_BYTES,
                    "fetch.wait.max.ms": 10,  # the end shows as an empty fetch: not 500 ms
                    "fetch.queue.backoff.ms": 1,
                    # From offset 0, not OFFSET_BEGINNING, whose lookup cost 0.5 s; a log
                    # that no longer starts there is read from its start all the same.
                    "auto.offset.reset": "earliest",
                }
            )
        )
        try:
            consumer.assign([TopicPartition(self.topic, PARTITION, 0)])
            deadline = time.monotonic() + max(self.timeout_s, 60.0)
            while True:
                if time.monotonic() > deadline:
                    raise CheckpointLogError(
                        f"reading the checkpoint topic {self.topic!r} did not reach its end in time"
                    )
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return
                    if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED or err.fatal():
                        raise CheckpointLogError(
                            f"cannot read the checkpoint topic {self.topic!r}: {err.str()} "
                            f"(grant this service's user Read on Topic:{self.topic})"
                        )
                    continue  # passing (a group it never joins is refused: it needs none)
                key = msg.key()
                if key is not None and wanted(key):
                    yield key, msg.value()
        finally:
            consumer.close()

    def key(self, base: str) -> str:
        """The unit's key on the topic."""
        return f"{self.deployment}/{base}"

    def _writer(self) -> SafeProducer:
        if self._producer is None:
            self.ensure_topic()
            self._producer = SafeProducer(self.connection, **{"linger.ms": 0})
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(self.timeout_s)
            except (DeliveryError, KafkaException) as exc:
                log.warning(
                    "checkpoint copies not all delivered", extra={"fields": {"error": str(exc)}}
                )
            self._producer = None


def new_chunk_id() -> str:
    return secrets.token_hex(6)


def chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK_BYTES))


def chunk_key(base: str, chunk_id: str, i: int) -> bytes:
    return f"{base}#{chunk_id}#{i}".encode()


@contextmanager
def checkpoint_log(settings: Settings) -> Iterator[CheckpointLog | None]:
    """The deployment's checkpoint topic (None when HEADWATER_CHECKPOINT_TOPIC is empty),
    for a service's whole life, across its restarts."""
    if not settings.checkpoint_topic:
        yield None
        return
    copies = CheckpointLog(
        KafkaConnection.from_settings(settings),
        settings.checkpoint_topic,
        settings.consumer_group_prefix,
    )
    copies.prepare()
    try:
        yield copies
    finally:
        copies.close()
