"""The ingest service's Kafka loop: validate, normalise, deduplicate, dead-letter.

Inputs (the events and labels topics) are group-managed; each owned input partition has its
own fenced checkpoint: the recent ids, the next offset, running counts, and the output
topics' end offsets at that moment. Outputs are deterministic, so after a crash the records
written since the last checkpoint are found by reading the outputs from those end offsets
(lineage in a header, or in the dead-letter envelope) and are not written a second time:
each input record reaches events.valid, labels.valid or events.dlq once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from services.ingest.dedupe import RecentIds
from services.ingest.fast_path import fast_event
from services.ingest.normalize import normalise_event, normalise_label
from shared.checkpoint.store import CheckpointNotFoundError, CheckpointStore, StaleEpochError
from shared.codec import CodecError, decode, encode
from shared.kafka import BatchConsumer, SafeProducer
from shared.kafka.closing import close_all
from shared.kafka.connection import KafkaConnection
from shared.kafka.consumer import CONSUMER_TUNING, checkpoint_on_revoke
from shared.kafka.lag import ConsumerLag
from shared.keys import PipelineKeys
from shared.messages import DeadLetter, Event, Label, MessageError
from shared.metrics import ServiceMetrics, StreamMetrics
from shared.settings import Settings
from shared.spec import IngestPolicy

log = logging.getLogger(__name__)

SERVICE = "ingest"
LINEAGE_HEADER = "headwater-lineage"  # "topic:partition:offset" of the input record
COUNTS = ("in", "valid", "deduplicated", "dead_lettered")
MARKS_MAX_AGE_S = 5.0  # a recovery reads at most ~this long of output again
# A defect that fails every record (a bad deploy) must stop ingest, not dead-letter the
# whole stream: this many `ingest_error`s in a row on the full route (labels, JSON, records
# to repair or refuse), with no record of that route handled in between.
MAX_INGEST_ERRORS_IN_ROW = 100


class IngestFencedError(RuntimeError):
    pass


class IngestDefectError(RuntimeError):
    """Ingest failed on many records in a row: a defect of the service, not of the input."""


@dataclass
class PartitionState:
    """What is checkpointed for one input partition."""

    recent: RecentIds
    next_offset: int = OFFSET_BEGINNING
    counts: Counter[str] = field(default_factory=Counter)  # COUNTS, and dlq:<reason>
    # output topic -> partition -> end offset when this state was checkpointed
    marks: dict[str, dict[int, int]] = field(default_factory=dict)


@dataclass
class Owned:
    kind: str  # "event" or "label"
    store: CheckpointStore
    epoch: int
    state: PartitionState
    out_topic: str
    lineage: bytes  # b"topic:partition:", the offset follows
    written: set[int] = field(default_factory=set)  # offsets already in an output (recovery)
    since_checkpoint: int = 0
    marked_at: float = float("-inf")  # when state.marks were last refreshed
    unwritten: int = 0  # valid records a crashed owner had written already (not reported)
    reported: Counter[str] = field(default_factory=Counter)  # counts given to Prometheus
    lineage_format: bytes = field(init=False, repr=False)  # `lineage % offset`: the header

    def __post_init__(self) -> None:
        # the header's value in one formatting step (topic names cannot hold "%")
        self.lineage_format = self.lineage.replace(b"%", b"%%") + b"%d"

    def normalise(self, obj: Any, policy: IngestPolicy) -> tuple[Event | Label, bool]:
        if self.kind == "event":
            return normalise_event(obj, policy)
        return normalise_label(obj, policy)


def ingest_metrics(m: ServiceMetrics) -> StreamMetrics:
    return StreamMetrics.create(
        m, "in (every input record), and of those valid, deduplicated, dead_lettered"
    )


@dataclass
class IngestService:
    pipeline: str
    policy: IngestPolicy
    consumer: BatchConsumer
    producer: SafeProducer
    redis_client: redis.Redis
    checkpoint_store: Callable[[str, int], CheckpointStore]
    settings: Settings
    kafka: KafkaConnection
    metrics: StreamMetrics
    owned: dict[tuple[str, int], Owned] = field(default_factory=dict)
    last_checkpoint: float = field(default_factory=time.monotonic)
    closing: bool = False
    status_at: float = 0.0
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    _watermarks: Consumer | None = None
    _errors_in_row: int = 0  # ingest_error records since the last record handled otherwise
    lag: ConsumerLag = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lag = ConsumerLag(self.metrics.consumer_lag)
        self.metrics.checkpoint.unsaved = self._unsaved

    # -- ownership -------------------------------------------------------------------

    def on_assign(self, partitions: list[TopicPartition]) -> None:
        """New epoch, restore, find what was written since the checkpoint, seek."""
        seeks = []
        for tp in partitions:
            kind = "label" if tp.topic == self.settings.topics.labels else "event"
            store = self.checkpoint_store(kind, tp.partition)
            epoch = store.new_epoch()
            try:
                _, state = store.load()
                # the spec's current bounds apply from now on, whatever they were before
                state.recent.horizon_s = self.policy.dedupe_horizon_s
                state.recent.max_ids = self.policy.dedupe_max_ids
                log.info(
                    "partition restored",
                    extra={"fields": {"topic": tp.topic, "partition": tp.partition}},
                )
            except CheckpointNotFoundError:
                state = PartitionState(
                    RecentIds(self.policy.dedupe_horizon_s, self.policy.dedupe_max_ids)
                )
            owned = Owned(
                kind,
                store,
                epoch,
                state,
                self.output_topics(kind)[0],
                f"{tp.topic}:{tp.partition}:".encode(),
                reported=Counter(state.counts),
            )
            if state.marks:
                owned.written = self.written_since(tp, state)
            else:  # first owner ever: mark where the outputs end before writing any
                state.marks, owned.marked_at = self.output_ends(kind), time.monotonic()
                self._write(owned, tp)
            self.owned[(tp.topic, tp.partition)] = owned
            seeks.append(TopicPartition(tp.topic, tp.partition, state.next_offset))
        self.consumer.assign_exact(seeks)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Checkpoint (unless the broker cannot take it now: the next owner then finds what
        was written since the last one, `written_since`), then let go."""
        if not self.closing:
            mine = [(tp.topic, tp.partition) for tp in partitions]
            checkpoint_on_revoke(lambda: self.checkpoint([k for k in mine if k in self.owned]))
        self.on_lost(partitions)

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        """Let go without a checkpoint: the group gave the partitions to another already."""
        for tp in partitions:
            self.owned.pop((tp.topic, tp.partition), None)

    def output_topics(self, kind: str) -> list[str]:
        topics = self.settings.topics
        return [topics.labels_valid if kind == "label" else topics.events_valid, topics.events_dlq]

    def output_ends(self, kind: str, patience_s: float = 60.0) -> dict[str, dict[int, int]]:
        """Where each output partition ends. Asked on assignment too, which may come while
        the broker is still coming back from an outage: refused answers are asked again
        for up to `patience_s`."""
        if self._watermarks is None:  # one client for every checkpoint's query
            self._watermarks = self._reader()
        reader = self._watermarks
        deadline = time.monotonic() + patience_s
        while True:
            try:
                marks: dict[str, dict[int, int]] = {}
                for topic in self.output_topics(kind):
                    meta = reader.list_topics(topic, timeout=10).topics[topic]
                    marks[topic] = {
                        p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                        for p in meta.partitions
                    }
                return marks
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("output ends not known yet", extra={"fields": {"error": str(exc)}})
                time.sleep(0.5)

    def written_since(self, tp: TopicPartition, state: PartitionState) -> set[int]:
        """Input offsets whose output a previous owner wrote after its last checkpoint."""
        ends = self.output_ends("label" if tp.topic == self.settings.topics.labels else "event")
        found: set[int] = set()
        reader = self._reader()
        try:
            for topic, marks in state.marks.items():
                todo = {p: end for p, end in ends.get(topic, {}).items() if end > marks.get(p, 0)}
                if not todo:
                    continue
                reader.assign([TopicPartition(topic, p, marks.get(p, 0)) for p in todo])
                dead_letters = topic == self.settings.topics.events_dlq
                for msg in _read_to_end(reader, todo):
                    source = _source_of(msg, dead_letters)
                    if (
                        source is not None
                        and source[0] == tp.topic
                        and source[1] == tp.partition
                        and source[2] >= max(state.next_offset, 0)
                    ):
                        found.add(source[2])
                reader.unassign()
        finally:
            reader.close()
        if found:
            log.info(
                "records written before the crash will not be written again",
                extra={"fields": {"topic": tp.topic, "partition": tp.partition, "n": len(found)}},
            )
        return found

    def _reader(self) -> Consumer:
        return Consumer(
            self.kafka.config(
                {
                    "group.id": f"{self.settings.consumer_group_prefix}.recovery."
                    f"{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    **CONSUMER_TUNING,
                }
            )
        )

    # -- the loop --------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info("ingest service running", extra={"fields": {"pipeline": self.pipeline}})
        try:
            while not stop.is_set():
                batch = self.consumer.poll_batch(
                    self.settings.batch_size, self.settings.poll_timeout_s
                )
                if batch:
                    started = time.perf_counter()
                    self.handle_batch(batch)
                    self._report_counts()
                    self.metrics.batch_seconds.observe(time.perf_counter() - started)
                self.producer.poll()
                self.lag.update(self.consumer, self._handled)
                if self._due():
                    try:
                        self.checkpoint(list(self.owned))
                    except redis.RedisError as exc:  # retried at the next cadence
                        log.error(
                            "checkpoint failed; will retry", extra={"fields": {"error": str(exc)}}
                        )
                        self.last_checkpoint = time.monotonic()
                self.publish_status(force=False)
            self.checkpoint(list(self.owned))
            self.publish_status(force=True)
        finally:
            self.close()

    def _handled(self) -> dict[tuple[str, int], int]:
        return {key: owned.state.next_offset for key, owned in self.owned.items()}

    def close(self) -> None:
        """Release the clients: `run` does on its way out; a caller that drives the service
        by hand (tests) calls it once instead."""
        self.closing = True  # leaving the group revokes partitions: already checkpointed
        watermarks, self._watermarks = self._watermarks, None
        close_all(
            self.consumer.close,
            *([watermarks.close] if watermarks is not None else []),
            self.producer.close,
        )

    def handle_batch(self, batch: list[Message]) -> None:
        """The commonest record inline: a well-formed MessagePack event, not written before a
        crash, travels as it came (or is counted as a retry). Anything else: `handle_full`."""
        owned_get = self.owned.get
        max_bytes = self.settings.max_message_bytes
        produce = self.producer.produce
        for msg in batch:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            owned = owned_get((topic, partition))  # type: ignore[arg-type]
            if owned is None or offset is None:  # revoked meanwhile
                continue
            raw = msg.value()
            fast = (
                fast_event(raw)
                if owned.kind == "event"
                and raw is not None
                and len(raw) <= max_bytes
                and offset not in owned.written
                else None
            )
            if fast is None:
                self.handle_full(msg, owned, topic, partition, offset, raw)  # type: ignore[arg-type]
                continue
            state = owned.state
            counts = state.counts
            counts["in"] += 1
            if state.recent.seen(fast.event_id, fast.ts):
                counts["deduplicated"] += 1
            else:
                counts["valid"] += 1
                produce(
                    owned.out_topic,
                    raw,  # type: ignore[arg-type]
                    fast.entity.encode(),
                    [(LINEAGE_HEADER, owned.lineage_format % offset)],
                )
            state.next_offset = offset + 1
            owned.since_checkpoint += 1

    def handle_full(
        self, msg: Message, owned: Owned, topic: str, partition: int, offset: int, raw: bytes | None
    ) -> None:
        """The full route, for what the fast route in `handle_batch` declined: labels, JSON,
        records to repair or dead-letter, and records a previous owner wrote before it
        crashed (counted, not written again). What the fast route accepts, this route
        accepts unchanged (a property test checks), so each record takes one or the other."""
        state = owned.state
        counts = state.counts
        counts["in"] += 1
        again = offset in owned.written
        if again:
            owned.written.discard(offset)
        try:
            obj = decode(raw, self.settings.max_message_bytes, json_constants=True)
            record, changed = owned.normalise(obj, self.policy)
            # an unchanged MessagePack record travels as it came
            value = raw if not changed and raw and raw[0] >= 0x80 else encode(record.to_wire())
        except (CodecError, MessageError) as exc:
            self._errors_in_row = 0
            self._reject(owned, topic, partition, offset, msg, again, exc.reason, str(exc))
            return
        except (MemoryError, KafkaException, redis.RedisError):
            raise  # the machine or a service we depend on: not this record's fault
        except Exception as exc:
            # A defect of ours, not of the record: dead-lettered with the error, so that one
            # record cannot crash ingest again after every restart.
            where = {"topic": topic, "partition": partition, "offset": offset}
            log.exception("ingest failed on a record", extra={"fields": where})
            self._errors_in_row += 1
            if self._errors_in_row >= MAX_INGEST_ERRORS_IN_ROW:
                raise IngestDefectError(
                    f"ingest failed on {self._errors_in_row} records in a row, the last at "
                    f"{topic}[{partition}]@{offset}: {type(exc).__name__}: {exc}"
                ) from exc
            error = f"{type(exc).__name__}: {exc}"
            self._reject(owned, topic, partition, offset, msg, again, "ingest_error", error)
            return
        self._errors_in_row = 0
        event_id, entity, ts = record.event_id, record.entity, record.ts
        if state.recent.seen(event_id, ts):
            counts["deduplicated"] += 1
        else:
            counts["valid"] += 1
            if again:
                owned.unwritten += 1
            else:
                self.producer.produce(
                    owned.out_topic,
                    value,
                    entity.encode(),
                    [(LINEAGE_HEADER, owned.lineage_format % offset)],
                )
        state.next_offset = offset + 1
        owned.since_checkpoint += 1

    def _reject(
        self,
        owned: Owned,
        topic: str,
        partition: int,
        offset: int,
        msg: Message,
        again: bool,
        reason: str,
        message: str,
    ) -> None:
        """Count and dead-letter a record (unless a previous owner did before it crashed)."""
        state = owned.state
        state.counts["dead_lettered"] += 1
        state.counts["dlq:" + reason] += 1
        if not again:
            self.dead_letter(topic, partition, offset, msg, reason, message)
        state.next_offset = offset + 1
        owned.since_checkpoint += 1

    def _report_counts(self) -> None:
        """Prometheus counters follow the checkpointed counts, per batch."""
        metrics = self.metrics
        for owned in self.owned.values():
            for name, total in owned.state.counts.items():
                delta = total - owned.reported[name]
                if delta:
                    owned.reported[name] = total
                    if name.startswith("dlq:"):
                        metrics.dead_letters.labels(name[4:]).inc(delta)
                    else:
                        metrics.records.labels(name).inc(delta)
                        if name == "valid":
                            written, owned.unwritten = delta - owned.unwritten, 0
                            if written > 0:
                                metrics.records_out.labels(owned.out_topic).inc(written)

    def dead_letter(
        self, topic: str, partition: int, offset: int, msg: Message, reason: str, message: str
    ) -> None:
        envelope = DeadLetter.of(topic, partition, offset, reason, message, SERVICE, msg.value())
        key = msg.key()
        self.producer.produce(
            self.settings.topics.events_dlq,
            encode(envelope.to_wire()),
            key if isinstance(key, bytes) else None,
        )
        self.metrics.records_out.labels(self.settings.topics.events_dlq).inc()

    # -- checkpoints and status ------------------------------------------------------

    def _unsaved(self) -> int:
        return sum(o.since_checkpoint for o in list(self.owned.values()))

    def _due(self) -> bool:
        records = sum(o.since_checkpoint for o in self.owned.values())
        elapsed = time.monotonic() - self.last_checkpoint
        return records > 0 and (
            records >= self.settings.checkpoint_every_records
            or elapsed >= self.settings.checkpoint_interval_s
        )

    def checkpoint(self, inputs: list[tuple[str, int]]) -> None:
        """Flush outputs, note where they end, then each input's state (fenced)."""
        started = time.perf_counter()
        self.producer.flush()
        if not inputs:
            return
        # Where the outputs end bounds how much a recovery reads, not what it finds (it keeps
        # only offsets past the checkpoint), so older marks stay correct: they are refreshed
        # every MARKS_MAX_AGE_S rather than paid for (broker round trips) at every checkpoint.
        # Marks never move past outputs a crashed owner wrote that this one has not yet read
        # past (`written`): a rebalance restores from this checkpoint and must find them again.
        now = time.monotonic()
        refresh = [
            key
            for key in inputs
            if now - self.owned[key].marked_at > MARKS_MAX_AGE_S and not self.owned[key].written
        ]
        ends = {kind: self.output_ends(kind) for kind in {self.owned[k].kind for k in refresh}}
        for key in inputs:
            owned = self.owned[key]
            if key in refresh:
                owned.state.marks, owned.marked_at = ends[owned.kind], now
            self._write(owned, TopicPartition(*key))
        self.consumer.store(
            {
                key: self.owned[key].state.next_offset - 1
                for key in inputs
                if self.owned[key].state.next_offset > 0
            }
        )
        self.last_checkpoint = time.monotonic()
        self.metrics.checkpoint.written(
            time.perf_counter() - started,
            sum(owned.store.last_bytes for owned in self.owned.values()),
        )

    def _write(self, owned: Owned, tp: TopicPartition) -> None:
        meta = {
            "next_offset": owned.state.next_offset,
            "remembered_ids": len(owned.state.recent),
            **{name: owned.state.counts[name] for name in COUNTS},
        }
        try:
            owned.store.write(owned.epoch, owned.state, meta)
        except StaleEpochError as exc:
            raise IngestFencedError(
                f"{tp.topic}[{tp.partition}] is owned by another ingest instance: {exc}"
            ) from exc
        owned.since_checkpoint = 0

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for owned in self.owned.values():
            total.update(owned.state.counts)
        return total

    def publish_status(self, force: bool) -> None:
        """Per instance: totals over the input partitions it owns (they survive restarts)."""
        now = time.monotonic()
        if not force and now - self.status_at < 1.0:
            return
        self.status_at = now
        fields: dict[str, str | int | float] = {
            "inputs": ",".join(f"{t}:{p}" for t, p in sorted(self.owned)),
            "updated_at": time.time(),
            **{name: count for name, count in self.totals().items()},
        }
        for name in COUNTS:
            fields.setdefault(name, 0)
        key = PipelineKeys(self.pipeline).instance_status("ingest", self.instance)
        try:
            self.redis_client.delete(key)
            self.redis_client.hset(key, mapping=fields)  # type: ignore[arg-type]
            self.redis_client.expire(key, 300)
        except redis.RedisError as exc:  # a Redis blip must not stop the stream
            log.warning("status not written to Redis", extra={"fields": {"error": str(exc)}})


def _read_to_end(reader: Consumer, ends: dict[int, int], cap_s: float = 30.0) -> Iterator[Message]:
    """Every record up to the end of the assigned partitions.

    A broker's high watermark can trail the log's true end (Tansu reports the last batch's
    first offset + 1), so reaching it is not enough: reading goes on until a fetch comes back
    empty. The writer being recovered is dead, so nothing of its own can follow.
    """
    remaining = dict(ends)
    deadline = time.monotonic() + cap_s
    quiet = 0
    while time.monotonic() < deadline and quiet < 10:
        batch = reader.consume(1000, 0.5)
        if not batch and not remaining:
            return
        quiet = 0 if batch else quiet + 1
        for msg in batch:
            if msg.error() is not None:
                continue
            yield msg
            p, at = msg.partition(), msg.offset() or 0
            if p in remaining and at + 1 >= remaining[p]:
                del remaining[p]
    log.warning("recovery read stopped before the outputs went quiet; duplicates are possible")


def _source_of(msg: Message, dead_letter: bool) -> tuple[str, int, int] | None:
    """The input record an output came from."""
    if dead_letter:
        try:
            envelope = decode(msg.value(), 2**31)
            return (
                str(envelope["source_topic"]),
                int(envelope["partition"]),
                int(envelope["offset"]),
            )
        except (CodecError, KeyError, TypeError, ValueError):
            return None
    for name, value in list(msg.headers() or []):
        if name == LINEAGE_HEADER and isinstance(value, bytes):
            parts = value.decode().rsplit(":", 2)
            return parts[0], int(parts[1]), int(parts[2])
    return None
