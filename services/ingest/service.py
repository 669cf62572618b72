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
from shared.checkpoint.store import CheckpointInfo, CheckpointStore
from shared.codec import CodecError, decode, encode
from shared.kafka import BatchConsumer, SafeProducer
from shared.kafka.connection import KafkaConnection
from shared.kafka.consumer import CONSUMER_TUNING
from shared.messages import Event, Label, Lineage, MessageError
from shared.metrics import ServiceMetrics, StreamMetrics
from shared.runtime.dead_letters import DeadLetters
from shared.runtime.ownership import Owned, StateKind
from shared.runtime.partitioned import Partition, PartitionedService
from shared.runtime.status import Fields, StatusWriter
from shared.settings import Settings, TopicNames
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
class Input:
    """An owned input partition: its checkpointed state, and what recovery found."""

    kind: str  # "event" or "label"
    saved: PartitionState
    out_topic: str
    lineage: bytes  # b"topic:partition:", the offset follows
    written: set[int] = field(default_factory=set)  # offsets already in an output (recovery)
    marked_at: float = float("-inf")  # when saved.marks were last refreshed
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


class InputState(StateKind[Partition, Input]):
    """An input partition's recent ids, counts and output marks, checkpointed as its
    `PartitionState` (which carries the next offset)."""

    service = SERVICE

    def __init__(
        self,
        stores: Callable[[str, int], CheckpointStore],
        policy: IngestPolicy,
        topics: TopicNames,
    ) -> None:
        self._stores = stores
        self.policy = policy
        self.topics = topics

    def kind_of(self, topic: str) -> str:
        return "label" if topic == self.topics.labels else "event"

    def output_topics(self, kind: str) -> list[str]:
        topics = self.topics
        return [topics.labels_valid if kind == "label" else topics.events_valid, topics.events_dlq]

    def store(self, key: Partition) -> CheckpointStore:
        return self._stores(self.kind_of(key[0]), key[1])

    def _input(self, key: Partition, saved: PartitionState) -> Input:
        kind = self.kind_of(key[0])
        return Input(
            kind,
            saved,
            self.output_topics(kind)[0],
            f"{key[0]}:{key[1]}:".encode(),
            reported=Counter(saved.counts),
        )

    def fresh(self, key: Partition) -> tuple[Input, int]:
        saved = PartitionState(RecentIds(self.policy.dedupe_horizon_s, self.policy.dedupe_max_ids))
        return self._input(key, saved), saved.next_offset

    def thaw(self, key: Partition, saved: Any, info: CheckpointInfo) -> tuple[Input, int]:
        # the spec's current bounds apply from now on, whatever they were before
        saved.recent.horizon_s = self.policy.dedupe_horizon_s
        saved.recent.max_ids = self.policy.dedupe_max_ids
        return self._input(key, saved), saved.next_offset

    def freeze(self, key: Partition, owned: Owned[Input]) -> PartitionState:
        saved = owned.state.saved
        saved.next_offset = owned.next_offset
        return saved

    def meta(self, key: Partition, owned: Owned[Input]) -> dict[str, int]:
        saved = owned.state.saved
        return {
            "next_offset": owned.next_offset,
            "remembered_ids": len(saved.recent),
            **{name: saved.counts[name] for name in COUNTS},
        }


class IngestService(PartitionedService[Input]):
    name = SERVICE

    def __init__(
        self,
        policy: IngestPolicy,
        consumer: BatchConsumer,
        producer: SafeProducer,
        stores: Callable[[str, int], CheckpointStore],
        settings: Settings,
        kafka: KafkaConnection,
        metrics: StreamMetrics,
        status: StatusWriter | None = None,
    ) -> None:
        self.inputs = InputState(stores, policy, settings.topics)
        super().__init__(self.inputs, consumer, producer, settings, metrics, status)
        self.policy = policy
        self.kafka = kafka
        self.dead_letters = DeadLetters(
            SERVICE, settings.topics.events_dlq, metrics, producer.produce, count_records=False
        )
        self._watermarks: Consumer | None = None
        self._errors_in_row = 0  # ingest_error records since the last record handled otherwise

    # -- recovery after a crash ------------------------------------------------------

    def assigned(self, key: Partition, owned: Owned[Input]) -> None:
        """Find what a crashed owner wrote since the checkpoint; the first owner ever marks
        where the outputs end before writing any."""
        inp = owned.state
        if inp.saved.marks:
            inp.written = self.written_since(key, owned)
        else:
            inp.saved.marks, inp.marked_at = self.output_ends(inp.kind), time.monotonic()
            self.ownership.persist([key], "first owner")

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
                for topic in self.inputs.output_topics(kind):
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

    def written_since(self, key: Partition, owned: Owned[Input]) -> set[int]:
        """Input offsets whose output a previous owner wrote after its last checkpoint."""
        topic_in, partition_in = key
        ends = self.output_ends(owned.state.kind)
        found: set[int] = set()
        reader = self._reader()
        try:
            for topic, marks in owned.state.saved.marks.items():
                todo = {p: end for p, end in ends.get(topic, {}).items() if end > marks.get(p, 0)}
                if not todo:
                    continue
                reader.assign([TopicPartition(topic, p, marks.get(p, 0)) for p in todo])
                dead_letters = topic == self.settings.topics.events_dlq
                for msg in _read_to_end(reader, todo):
                    source = _source_of(msg, dead_letters)
                    if (
                        source is not None
                        and source[0] == topic_in
                        and source[1] == partition_in
                        and source[2] >= max(owned.next_offset, 0)
                    ):
                        found.add(source[2])
                reader.unassign()
        finally:
            reader.close()
        if found:
            log.info(
                "records written before the crash will not be written again",
                extra={"fields": {"topic": topic_in, "partition": partition_in, "n": len(found)}},
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

    def closers(self) -> list[Callable[[], None]]:
        watermarks, self._watermarks = self._watermarks, None
        return [watermarks.close] if watermarks is not None else []

    # -- records ---------------------------------------------------------------------

    def handle_batch(self, batch: list[Message]) -> None:
        """The commonest record inline: a well-formed MessagePack event, not written before a
        crash, travels as it came (or is counted as a retry). Anything else: `handle_full`."""
        owned_get = self.ownership.get
        max_bytes = self.settings.max_message_bytes
        produce = self.producer.produce
        for msg in batch:
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            owned = owned_get((topic, partition))  # type: ignore[arg-type]
            if owned is None or offset is None:  # revoked meanwhile
                continue
            inp = owned.state
            raw = msg.value()
            fast = (
                fast_event(raw)
                if inp.kind == "event"
                and raw is not None
                and len(raw) <= max_bytes
                and offset not in inp.written
                else None
            )
            if fast is None:
                self.handle_full(msg, owned, topic, partition, offset, raw)  # type: ignore[arg-type]
                continue
            saved = inp.saved
            counts = saved.counts
            counts["in"] += 1
            if saved.recent.seen(fast.event_id, fast.ts):
                counts["deduplicated"] += 1
            else:
                counts["valid"] += 1
                produce(
                    inp.out_topic,
                    raw,  # type: ignore[arg-type]
                    fast.entity.encode(),
                    [(LINEAGE_HEADER, inp.lineage_format % offset)],
                )
            owned.next_offset = offset + 1
            owned.unsaved += 1
        self._report_counts()

    def handle_full(
        self,
        msg: Message,
        owned: Owned[Input],
        topic: str,
        partition: int,
        offset: int,
        raw: bytes | None,
    ) -> None:
        """The full route, for what the fast route in `handle_batch` declined: labels, JSON,
        records to repair or dead-letter, and records a previous owner wrote before it
        crashed (counted, not written again). What the fast route accepts, this route
        accepts unchanged (a property test checks), so each record takes one or the other."""
        inp = owned.state
        saved = inp.saved
        counts = saved.counts
        counts["in"] += 1
        again = offset in inp.written
        if again:
            inp.written.discard(offset)
        try:
            obj = decode(raw, self.settings.max_message_bytes, json_constants=True)
            record, changed = inp.normalise(obj, self.policy)
            # an unchanged MessagePack record travels as it came
            value = raw if not changed and raw and raw[0] >= 0x80 else encode(record.to_wire())
        except (CodecError, MessageError) as exc:
            self._errors_in_row = 0
            self._reject(owned, Lineage(topic, partition, offset), msg, again, exc.reason, str(exc))
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
            lineage = Lineage(topic, partition, offset)
            self._reject(owned, lineage, msg, again, "ingest_error", error)
            return
        self._errors_in_row = 0
        event_id, entity, ts = record.event_id, record.entity, record.ts
        if saved.recent.seen(event_id, ts):
            counts["deduplicated"] += 1
        else:
            counts["valid"] += 1
            if again:
                inp.unwritten += 1
            else:
                self.producer.produce(
                    inp.out_topic,
                    value,
                    entity.encode(),
                    [(LINEAGE_HEADER, inp.lineage_format % offset)],
                )
        owned.next_offset = offset + 1
        owned.unsaved += 1

    def _reject(
        self,
        owned: Owned[Input],
        lineage: Lineage,
        msg: Message,
        again: bool,
        reason: str,
        message: str,
    ) -> None:
        """Count and dead-letter a record (unless a previous owner did before it crashed)."""
        counts = owned.state.saved.counts
        counts["dead_lettered"] += 1
        counts["dlq:" + reason] += 1
        if not again:
            key = msg.key()
            self.dead_letters.send(
                lineage, msg.value(), key if isinstance(key, bytes) else None, reason, message
            )
        owned.next_offset = lineage.offset + 1
        owned.unsaved += 1

    def _report_counts(self) -> None:
        """Prometheus counters follow the checkpointed counts, per batch."""
        metrics = self.metrics
        for inp in (owned.state for owned in self.owned.values()):
            for name, total in inp.saved.counts.items():
                delta = total - inp.reported[name]
                if delta:
                    inp.reported[name] = total
                    if name.startswith("dlq:"):
                        metrics.dead_letters.labels(name[4:]).inc(delta)
                    else:
                        metrics.records.labels(name).inc(delta)
                        if name == "valid":
                            written, inp.unwritten = delta - inp.unwritten, 0
                            if written > 0:
                                metrics.records_out.labels(inp.out_topic).inc(written)

    # -- checkpoints and status ------------------------------------------------------

    def flush_outputs(self) -> None:
        """Flush, then note where the outputs end. That bounds how much a recovery reads,
        not what it finds (it keeps only offsets past the checkpoint), so older marks stay
        correct: they are refreshed every MARKS_MAX_AGE_S rather than paid for (broker round
        trips) at every checkpoint. Marks never move past outputs a crashed owner wrote that
        this one has not yet read past (`written`): a rebalance restores from this
        checkpoint and must find them again."""
        self.producer.flush()
        now = time.monotonic()
        stale = [
            owned.state
            for owned in self.owned.values()
            if now - owned.state.marked_at > MARKS_MAX_AGE_S and not owned.state.written
        ]
        ends = {kind: self.output_ends(kind) for kind in {inp.kind for inp in stale}}
        for inp in stale:
            inp.saved.marks, inp.marked_at = ends[inp.kind], now

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for owned in self.owned.values():
            total.update(owned.state.saved.counts)
        return total

    def status_fields(self) -> Fields:
        """Totals over the input partitions this instance owns (they survive restarts)."""
        fields: dict[str, str | int | float] = {
            "inputs": ",".join(f"{t}:{p}" for t, p in sorted(self.owned)),
            **{name: count for name, count in self.totals().items()},
        }
        for name in COUNTS:
            fields.setdefault(name, 0)
        return fields


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
