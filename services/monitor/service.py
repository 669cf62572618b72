"""The monitor's record handling and checkpoints, apart from faust's wiring (app.py).

State is per input partition (outcomes and features partitions alike): a `DriftEngine`
and the next offset to apply, checkpointed together (DESIGN §4). A partition is owned on
assignment, or at its first record if that comes first: a new epoch fences any older
owner, the checkpoint is restored, and records below its offset are skipped as applied
already. faust never commits offsets here (its commits could run ahead of a checkpoint);
a restarted monitor reads each partition from the start and skips up to the checkpoint.
Alerts are sent before the checkpoint that covers their record is written, and re-sent
identically after a crash; the alert id lets consumers drop the repeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from prometheus_client import Counter as PromCounter

from services.monitor.alert_store import AlertStore
from services.monitor.engine import DriftEngine
from shared.checkpoint.store import CheckpointNotFoundError, CheckpointStore, StaleEpochError
from shared.codec import CodecError, decode, encode
from shared.kafka.lag import ConsumerLag
from shared.messages import DeadLetter, DriftAlert, Event, FeatureRecord, Lineage, MessageError
from shared.messages.outcome import Outcome
from shared.metrics import ServiceMetrics, StreamMetrics
from shared.settings import Settings
from shared.spec import PipelineSpec

log = logging.getLogger(__name__)

SERVICE = "monitor"
OUTCOMES, FEATURES, EVENTS = "outcomes", "features", "events"  # what an input topic holds

Send = Callable[[str, bytes | None, bytes], Awaitable[Any]]  # (topic, key, value)
# (topic, partition, offset): the consumer reads the partition again from there
Rewind = Callable[[str, int, int], Awaitable[None]]
# (topic, partition, offset): the first offset at or after it that the log holds, asked of
# the broker; None when it does not answer
FirstOffset = Callable[[str, int, int], Awaitable[int | None]]
REWIND_EVERY_S = 2.0  # what faust buffered before a rewind still comes first: skipped
Highwater = Callable[[str, int], int | None]  # a partition's high watermark, if known


@dataclass
class MonitorMetrics:
    """The stream contract (shared/metrics.py) and the alerts. Faust hands the monitor one
    record at a time, so its `batch_processing_seconds` times one record; its counters
    move per record too (cheap beside faust's own cost of a record, and its outputs are rare)."""

    stream: StreamMetrics
    drift_alerts: PromCounter

    @classmethod
    def create(cls, m: ServiceMetrics) -> MonitorMetrics:
        return cls(
            StreamMetrics.create(
                m,
                "applied, skipped_replayed (applied before the last checkpoint), "
                "dead_lettered, other_pipeline (an outcome of another pipeline), duplicate "
                "(a features record re-emitted by a restarted features service)",
            ),
            m.counter(
                "drift_alerts_total",
                "Drift alerts published, by kind and action.",
                ("kind", "action"),
            ),
        )


class MonitorFencedError(RuntimeError):
    """Another monitor took over a partition of this one's (a newer epoch)."""


@dataclass
class Owned:
    store: CheckpointStore
    epoch: int
    engine: DriftEngine
    next_offset: int
    # Highest upstream offset applied per (topic, partition) of a features record's lineage:
    # a record re-emitted by a restarted features service is dropped, not observed twice.
    source_hwm: dict[tuple[str, int], int] = field(default_factory=dict)
    since_checkpoint: int = 0
    rewound_at: float = float("-inf")  # the last rewind to next_offset


@dataclass
class MonitorService:
    spec: PipelineSpec
    settings: Settings
    inputs: dict[str, str]  # topic -> OUTCOMES | FEATURES | EVENTS
    checkpoint_store: Callable[[str, int], CheckpointStore]
    alerts: AlertStore
    send: Send  # produces a record; awaited, delivery confirmed by `flush`
    flush: Callable[[], Awaitable[None]]
    rewind: Rewind | None = None  # moves the consumer of a partition back to an offset
    first_offset: FirstOffset | None = None
    owned: dict[tuple[str, int], Owned] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    last_checkpoint: float = field(default_factory=time.monotonic)
    failure: BaseException | None = None  # set by the reader; the app then stops and raises
    metrics: MonitorMetrics = field(
        default_factory=lambda: MonitorMetrics.create(ServiceMetrics(SERVICE)), repr=False
    )
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        stream = self.metrics.stream
        self.lag = ConsumerLag(stream.consumer_lag)
        stream.checkpoint.unsaved = self._unsaved
        self._records = {
            outcome: stream.records.labels(outcome)
            for outcome in (
                "applied",
                "skipped_replayed",
                "dead_lettered",
                "other_pipeline",
                "duplicate",
            )
        }

    def own(self, topic: str, partition: int) -> Owned:
        """New epoch, then the partition's checkpoint (or a fresh engine)."""
        owned = self.owned.get((topic, partition))
        if owned is not None:
            return owned
        store = self.checkpoint_store(topic, partition)
        epoch = store.new_epoch()
        try:
            info, state = store.load()
            engine, next_offset, *rest = state  # without the marks: written before them
            source_hwm = rest[0] if rest else {}
            version: int | None = info.version
        except CheckpointNotFoundError:
            engine, next_offset, source_hwm, version = self._fresh(), 0, {}, None
        owned = Owned(store, epoch, engine, next_offset, source_hwm)
        self.owned[(topic, partition)] = owned
        log.info(
            "partition owned",
            extra={
                "fields": {
                    "topic": topic,
                    "partition": partition,
                    "epoch": epoch,
                    "restored_version": version,
                    "next_offset": next_offset,
                }
            },
        )
        return owned

    def _fresh(self) -> DriftEngine:
        return DriftEngine(self.spec.name, self.spec.task, self.spec.drift)

    async def handle(self, topic: str, partition: int, offset: int, raw: bytes | None) -> None:
        """Apply one input record (once per checkpointed state), then checkpoint if due."""
        started = time.perf_counter()
        async with self._lock:
            await self._apply(topic, partition, offset, raw)
        self.metrics.stream.batch_seconds.observe(time.perf_counter() - started)
        await self.maybe_checkpoint()

    async def maybe_checkpoint(self) -> None:
        """At the cadence; also called by a timer, so a stream that went quiet is covered."""
        if not self.due():
            return
        try:
            await self.checkpoint(list(self.owned), "cadence")
        except redis.RedisError as exc:  # nothing lost: the next cadence tries again
            log.error("checkpoint failed; will retry", extra={"fields": {"error": str(exc)}})
            self.last_checkpoint = time.monotonic()

    async def _apply(self, topic: str, partition: int, offset: int, raw: bytes | None) -> None:
        # Under the lock: a checkpoint (revocation, shutdown) never sees a record's effect on
        # the engine without its alerts sent and its offset passed.
        owned = self.own(topic, partition)  # the owned one, or owned now
        if offset < owned.next_offset:
            self.counts["applied_already"] += 1
            self._records["skipped_replayed"].inc()
            return
        if await self._skipped_for_rewind(owned, topic, partition, offset):
            return
        owned.rewound_at = float("-inf")
        lineage = Lineage(topic, partition, offset)
        alerts: list[DriftAlert] = []
        try:
            observed = self._observe(owned, self.inputs[topic], raw, lineage)
        except (CodecError, MessageError) as exc:
            await self._dead_letter(lineage, raw, exc.reason, str(exc))
        else:
            if isinstance(observed, str):  # not observed, and why
                self.counts[observed] += 1
                self._records[observed].inc()
            else:
                alerts = observed
                self._records["applied"].inc()
        for alert in alerts:
            await self.send(
                self.settings.topics.drift_alerts, alert.pipeline.encode(), encode(alert.to_wire())
            )
            log.warning(
                "drift alert",
                extra={
                    "fields": {
                        "kind": alert.kind,
                        "model": alert.model,
                        "signal": alert.signal,
                        "event_id": alert.event_id,
                    }
                },
            )
        if alerts:
            self.counts["alerts"] += len(alerts)
            self.alerts.add(alerts)
            self.metrics.stream.records_out.labels(self.settings.topics.drift_alerts).inc(
                len(alerts)
            )
            for alert in alerts:
                self.metrics.drift_alerts.labels(alert.kind, alert.action).inc()
        owned.next_offset = offset + 1
        owned.since_checkpoint += 1
        self.counts["records"] += 1

    async def _skipped_for_rewind(
        self, owned: Owned, topic: str, partition: int, offset: int
    ) -> bool:
        """A record past the next one to apply: those between were never handed over (faust
        drops what it had fetched when a rebalance revokes a partition it then gets back).
        Unless the broker says the log holds none of them, the consumer goes back to them
        and the record is skipped (it comes again), as is what faust had buffered before
        the rewind, for REWIND_EVERY_S; then a rewind again, if they have not come yet."""
        if offset <= owned.next_offset or self.rewind is None:
            return False
        now = time.monotonic()
        if now - owned.rewound_at < REWIND_EVERY_S:
            return True
        fields = {"topic": topic, "partition": partition, "from": owned.next_offset, "got": offset}
        first = (
            None
            if self.first_offset is None
            else await self.first_offset(topic, partition, owned.next_offset)
        )
        if first is not None and first >= offset:
            log.warning("offsets absent from the log", extra={"fields": fields})
            return False
        log.warning("records not handed over; reading them again", extra={"fields": fields})
        owned.rewound_at = now
        self.counts["rewinds"] += 1
        await self.rewind(topic, partition, owned.next_offset)
        return True

    def _observe(
        self, owned: Owned, kind: str, raw: bytes | None, lineage: Lineage
    ) -> list[DriftAlert] | str:
        """The record's alerts, or why it is not observed: "other_pipeline" (an outcome of
        another pipeline), "duplicate" (re-emitted by a restarted features service)."""
        engine = owned.engine
        obj = decode(raw, self.settings.max_message_bytes)
        if kind == OUTCOMES:
            outcome = Outcome.from_wire(obj)
            if outcome.pipeline != self.spec.name:
                return "other_pipeline"
            return engine.observe_outcome(outcome, lineage)
        if kind == FEATURES:
            record = FeatureRecord.from_wire(obj)
            source = record.lineage
            upstream = (source.topic, source.partition)
            if source.offset <= owned.source_hwm.get(upstream, -1):
                return "duplicate"
            owned.source_hwm[upstream] = source.offset
            e = record.event
            return engine.observe_features(e.event_id, e.ts, record.features, lineage)
        event = Event.from_wire(obj)
        return engine.observe_features(event.event_id, event.ts, event.data, lineage)

    async def _dead_letter(
        self, lineage: Lineage, raw: bytes | None, reason: str, message: str
    ) -> None:
        envelope = DeadLetter.of(
            lineage.topic, lineage.partition, lineage.offset, reason, message, SERVICE, raw
        )
        await self.send(self.settings.topics.events_dlq, None, encode(envelope.to_wire()))
        self.counts["dead_lettered"] += 1
        stream = self.metrics.stream
        self._records["dead_lettered"].inc()
        stream.records_out.labels(self.settings.topics.events_dlq).inc()
        stream.dead_letters.labels(reason).inc()
        log.warning(
            "record dead-lettered",
            extra={
                "fields": {
                    "reason": reason,
                    "error": message,
                    "topic": lineage.topic,
                    "offset": lineage.offset,
                }
            },
        )

    def _unsaved(self) -> int:
        return sum(o.since_checkpoint for o in list(self.owned.values()))

    def due(self) -> bool:
        records = sum(o.since_checkpoint for o in self.owned.values())
        return records >= self.settings.checkpoint_every_records or (
            records > 0
            and time.monotonic() - self.last_checkpoint >= self.settings.checkpoint_interval_s
        )

    async def checkpoint(self, partitions: list[tuple[str, int]], reason: str) -> None:
        """Alerts delivered first, then each partition's engine with its next offset."""
        async with self._lock:
            await self._checkpoint(partitions, reason)

    async def _checkpoint(self, partitions: list[tuple[str, int]], reason: str) -> None:
        started = time.perf_counter()
        await self.flush()
        for tp in partitions:
            owned = self.owned.get(tp)
            if owned is None:
                continue
            meta = {"reason": reason, "next_offset": owned.next_offset, **owned.engine.counts}
            try:
                state = (owned.engine, owned.next_offset, owned.source_hwm)
                owned.store.write(owned.epoch, state, meta)
            except StaleEpochError as exc:
                raise MonitorFencedError(
                    f"{tp[0]}[{tp[1]}] was taken over by another monitor: {exc}"
                ) from exc
            owned.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        if partitions:
            self.metrics.stream.checkpoint.written(
                time.perf_counter() - started,
                sum(owned.store.last_bytes for owned in self.owned.values()),
            )

    def report_lag(self, highwater: Highwater) -> None:
        """Per owned partition, the records between the next one to apply and the high
        watermark faust's consumer last saw (no broker round trip); from a timer."""
        lags = {}
        for (topic, partition), owned in self.owned.items():
            high = highwater(topic, partition)
            if high is not None:
                lags[(topic, partition)] = high - owned.next_offset
        self.lag.publish(lags, list(self.owned))

    async def release(self, partitions: list[tuple[str, int]], reason: str) -> None:
        """Revoked or stopping: checkpoint, then forget (the next owner restores from here)."""
        async with self._lock:
            mine = [tp for tp in partitions if tp in self.owned]
            if mine:
                await self._checkpoint(mine, reason)
            for tp in mine:
                del self.owned[tp]
