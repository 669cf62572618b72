"""The ingest service: validate, normalise, deduplicate, dead-letter, on the stream runtime.

Inputs (the events and labels topics) are group-managed (shared/runtime/partitioned.py);
each owned input partition has its own fenced checkpoint: the recent ids, the next offset,
running counts, and the output topics' end offsets at that moment. Outputs are
deterministic, so after a crash the records written since the last checkpoint are found by
reading the outputs from those end offsets (recovery.py) and are not written a second time:
each input record reaches events.valid, labels.valid or events.dlq once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, KafkaException, Message

from services.ingest.dedupe import RecentIds
from services.ingest.fast_path import fast_event
from services.ingest.normalize import normalise_event, normalise_label
from services.ingest.recovery import LINEAGE_HEADER, OutputRecovery
from shared.checkpoint.store import CheckpointInfo, CheckpointStore
from shared.codec import CodecError, decode, encode, is_msgpack_map
from shared.kafka import BatchConsumer, SafeProducer
from shared.kafka.connection import KafkaConnection
from shared.messages import Event, Label, Lineage, MessageError
from shared.metrics import ServiceMetrics, StreamMetrics
from shared.runtime.dead_letters import DeadLetters
from shared.runtime.ownership import Owned, StateKind
from shared.runtime.partitioned import Partition, PartitionedService
from shared.runtime.status import Fields, StatusWriter
from shared.settings import Settings, TopicNames
from shared.spec import IngestPolicy
from shared.status import IngestStatus

log = logging.getLogger(__name__)

SERVICE = "ingest"
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
        self.recovery = OutputRecovery(kafka, settings.consumer_group_prefix, settings.topics)
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

    def output_ends(self, kind: str) -> dict[str, dict[int, int]]:
        return self.recovery.ends(self.inputs.output_topics(kind))

    def written_since(self, key: Partition, owned: Owned[Input]) -> set[int]:
        """Input offsets whose output a previous owner wrote after its last checkpoint."""
        inp = owned.state
        return self.recovery.written_since(
            key, self.inputs.output_topics(inp.kind), inp.saved.marks, owned.next_offset
        )

    def closers(self) -> list[Callable[[], None]]:
        return [self.recovery.close]

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
                    raw,
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
            value = (
                raw
                if not changed and raw is not None and is_msgpack_map(raw)
                else encode(record.to_wire())
            )
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
        counts = {name: 0 for name in COUNTS} | self.totals()
        return IngestStatus(tuple(f"{t}:{p}" for t, p in sorted(self.owned)), counts).fields()
