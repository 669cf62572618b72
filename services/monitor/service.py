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

from services.monitor.engine import DriftEngine
from shared.alert_store import AlertStore
from shared.checkpoint.store import CheckpointInfo, CheckpointStore
from shared.codec import CodecError, decode, encode
from shared.kafka.lag import ConsumerLag
from shared.messages import DriftAlert, Event, FeatureRecord, Lineage, MessageError
from shared.messages.outcome import Outcome
from shared.metrics import ServiceMetrics, StreamMetrics
from shared.runtime.checkpoints import Checkpoints
from shared.runtime.dead_letters import DeadLetters
from shared.runtime.ownership import Owned, Ownership, StateKind
from shared.runtime.partitioned import Partition
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


@dataclass
class DriftState:
    """An owned input partition's detectors, and what dedupes re-emitted features."""

    engine: DriftEngine
    # Highest upstream offset applied per (topic, partition) of a features record's lineage:
    # a record re-emitted by a restarted features service is dropped, not observed twice.
    source_hwm: dict[tuple[str, int], int] = field(default_factory=dict)
    rewound_at: float = float("-inf")  # the last rewind to the next offset


class DriftStateKind(StateKind[Partition, DriftState]):
    """Checkpointed as `(engine, next_offset, source_hwm)`."""

    service = SERVICE

    def __init__(
        self, stores: Callable[[str, int], CheckpointStore], fresh: Callable[[], DriftEngine]
    ) -> None:
        self._stores = stores
        self._fresh = fresh

    def store(self, key: Partition) -> CheckpointStore:
        return self._stores(*key)

    def fresh(self, key: Partition) -> tuple[DriftState, int]:
        return DriftState(self._fresh()), 0

    def thaw(self, key: Partition, saved: Any, info: CheckpointInfo) -> tuple[DriftState, int]:
        engine, next_offset, *rest = saved  # without the marks: written before them
        return DriftState(engine, rest[0] if rest else {}), next_offset

    def freeze(self, key: Partition, owned: Owned[DriftState]) -> Any:
        return owned.state.engine, owned.next_offset, owned.state.source_hwm

    def meta(self, key: Partition, owned: Owned[DriftState]) -> dict[str, Any]:
        return {"next_offset": owned.next_offset, **owned.state.engine.counts}


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
    counts: Counter[str] = field(default_factory=Counter)
    failure: BaseException | None = None  # set by the reader; the app then stops and raises
    metrics: MonitorMetrics = field(
        default_factory=lambda: MonitorMetrics.create(ServiceMetrics(SERVICE)), repr=False
    )
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        stream = self.metrics.stream
        self.lag = ConsumerLag(stream.consumer_lag)
        self.ownership = Ownership(DriftStateKind(self.checkpoint_store, self._fresh))
        self.owned = self.ownership.owned
        # flushed here, asynchronously, before `commit`; faust commits no offsets
        self.checkpoints = Checkpoints(
            self.ownership,
            stream.checkpoint,
            self.settings.checkpoint_every_records,
            self.settings.checkpoint_interval_s,
        )
        self.dead_letters = DeadLetters(SERVICE, self.settings.topics.events_dlq, stream)
        self._records = {
            outcome: stream.records.labels(outcome)
            for outcome in ("applied", "skipped_replayed", "other_pipeline", "duplicate")
        }

    def own(self, topic: str, partition: int) -> Owned[DriftState]:
        """New epoch, then the partition's checkpoint (or a fresh engine)."""
        return self.ownership.take((topic, partition))

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
            self.checkpoints.retry_later(exc)

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
        owned.state.rewound_at = float("-inf")
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
        owned.unsaved += 1
        self.counts["records"] += 1

    async def _skipped_for_rewind(
        self, owned: Owned[DriftState], topic: str, partition: int, offset: int
    ) -> bool:
        """A record past the next one to apply: those between were never handed over (faust
        drops what it had fetched when a rebalance revokes a partition it then gets back).
        Unless the broker says the log holds none of them, the consumer goes back to them
        and the record is skipped (it comes again), as is what faust had buffered before
        the rewind, for REWIND_EVERY_S; then a rewind again, if they have not come yet."""
        if offset <= owned.next_offset or self.rewind is None:
            return False
        now = time.monotonic()
        if now - owned.state.rewound_at < REWIND_EVERY_S:
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
        owned.state.rewound_at = now
        self.counts["rewinds"] += 1
        await self.rewind(topic, partition, owned.next_offset)
        return True

    def _observe(
        self, owned: Owned[DriftState], kind: str, raw: bytes | None, lineage: Lineage
    ) -> list[DriftAlert] | str:
        """The record's alerts, or why it is not observed: "other_pipeline" (an outcome of
        another pipeline), "duplicate" (re-emitted by a restarted features service)."""
        state = owned.state
        engine = state.engine
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
            if source.offset <= state.source_hwm.get(upstream, -1):
                return "duplicate"
            state.source_hwm[upstream] = source.offset
            e = record.event
            return engine.observe_features(e.event_id, e.ts, record.features, lineage)
        event = Event.from_wire(obj)
        return engine.observe_features(event.event_id, event.ts, event.data, lineage)

    async def _dead_letter(
        self, lineage: Lineage, raw: bytes | None, reason: str, message: str
    ) -> None:
        value = self.dead_letters.envelope(lineage, raw, reason, message)
        await self.send(self.dead_letters.topic, None, value)
        self.counts["dead_lettered"] += 1

    def due(self) -> bool:
        return self.checkpoints.due()

    async def checkpoint(self, partitions: list[tuple[str, int]], reason: str) -> None:
        """Alerts delivered first, then each partition's engine with its next offset."""
        async with self._lock:
            await self._checkpoint(partitions, reason)

    async def _checkpoint(self, partitions: list[tuple[str, int]], reason: str) -> None:
        started = time.perf_counter()
        await self.flush()  # the sequence's first step, faust's producer being async
        self.checkpoints.commit(partitions, reason, started)

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
            mine = [tp for tp in partitions if tp in self.ownership]
            if mine:
                await self._checkpoint(mine, reason)
            self.ownership.let_go(mine)
