"""Composition root of the monitor: a faust-streaming app around `MonitorService`.

One agent per input topic (outcomes, and features, or events.valid for a pipeline without
a features section), each reading its records in partition order. Assignment and
revocation are faust's signals; the app runs in this thread's event loop until `stop`.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP
from mode.utils.times import Seconds

from services.monitor.credentials import faust_credentials
from services.monitor.service import EVENTS, FEATURES, OUTCOMES, MonitorMetrics, MonitorService
from shared.alert_store import AlertStore
from shared.checkpoint.log import CheckpointLog, checkpoint_log
from shared.checkpoint.store import CheckpointStore
from shared.kafka import require_topics
from shared.kafka.connection import KafkaConnection
from shared.kafka.probe import OffsetProbe
from shared.metrics import serve_metrics
from shared.redis_store import RedisStore
from shared.runtime.restarts import run_restarting
from shared.settings import Settings
from shared.spec import PipelineSpec

log = logging.getLogger(__name__)

NEVER: Seconds = 10 * 365 * 86400.0  # faust commits no offsets: checkpoints hold them


def monitor_inputs(settings: Settings, spec: PipelineSpec) -> dict[str, str]:
    """Outcomes, and what the models read (for covariate drift, unless it is off)."""
    topics = settings.topics
    inputs = {topics.outcomes: OUTCOMES}
    if spec.drift.covariate.enabled:
        if spec.features is not None:
            inputs[topics.features] = FEATURES
        else:
            inputs[topics.events_valid] = EVENTS
    return inputs


def build_monitor(
    settings: Settings,
    spec: PipelineSpec,
    datadir: str,
    metrics: MonitorMetrics | None = None,
    copies: CheckpointLog | None = None,
) -> tuple[faust.App, MonitorService]:
    """`metrics`: kept across restarts (None: new ones, served); `copies`: the checkpoint
    topic (None: checkpoints only in Redis)."""
    inputs = monitor_inputs(settings, spec)
    topics = settings.topics
    keys = settings.checkpoint_keys()
    kafka = KafkaConnection.from_settings(settings)
    written = [topics.drift_alerts, topics.events_dlq]
    require_topics(kafka, [*inputs, *written], written=written)
    redis = RedisStore.from_settings(settings)
    redis.ping()
    app = faust.App(
        f"{settings.consumer_group_prefix}.{spec.name}.monitor",
        datadir=datadir,
        broker=[f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        store="memory://",
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_ms / 3000),
        broker_commit_every=2**62,
        broker_commit_interval=NEVER,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=settings.max_message_bytes + 65536,
    )
    outputs = {name: _raw_topic(app, name) for name in (topics.drift_alerts, topics.events_dlq)}

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        await outputs[topic].send(key=key, value=value)

    async def flush() -> None:
        await app.producer.flush()

    async def rewind(topic: str, partition: int, offset: int) -> None:
        """In faust's consumer thread (its `seek` would touch the consumer from this one)."""
        try:
            await asyncio.wait_for(app.consumer.seek_wait({TP(topic, partition): offset}), 10)
        except Exception as exc:  # revoked meanwhile, or slow: the gap is met again
            log.warning("rewind failed", extra={"fields": {"error": repr(exc)}})

    probe = OffsetProbe(kafka)

    async def first_offset(topic: str, partition: int, offset: int) -> int | None:
        return await asyncio.to_thread(probe.first_offset, topic, partition, offset)

    service = MonitorService(
        spec,
        settings,
        inputs,
        lambda t, p: CheckpointStore(
            redis.client,
            spec.name,
            f"monitor-{t}-p{p}",
            keys,
            keep=settings.checkpoints_kept,
            copies=copies,
        ),
        AlertStore(redis.client, spec.name),
        send,
        flush,
        rewind,
        first_offset,
        metrics=metrics or MonitorMetrics.create(serve_metrics("monitor", settings)),
    )

    for name in inputs:
        app.agent(_raw_topic(app, name), name=f"monitor-{name}")(_reader(service))

    @app.timer(interval=1.0)
    async def cadence() -> None:
        try:
            await service.maybe_checkpoint()
        except Exception as exc:  # fenced, or a bug: stop, as a failing record does
            service.failure = service.failure or exc

    def highwater(topic: str, partition: int) -> int | None:
        try:
            high = app.consumer.highwater(TP(topic, partition))
        except Exception:  # not assigned (any more), or not fetched yet
            return None
        return high if isinstance(high, int) and high >= 0 else None

    @app.timer(interval=1.0)
    async def lag() -> None:
        try:
            service.report_lag(highwater)
        except Exception as exc:  # a gauge is not worth stopping the monitor for
            log.warning("consumer lag not updated", extra={"fields": {"error": str(exc)}})

    # faust's signals call receivers with the app, the signal's argument and `signal=`.
    async def assigned(_app: Any, assigned: Any, **_: Any) -> None:
        for tp in sorted(assigned):
            if tp.topic in inputs:
                service.own(tp.topic, tp.partition)

    async def revoked(_app: Any, revoked: Any, **_: Any) -> None:
        await service.release([(tp.topic, tp.partition) for tp in revoked], "revoked")

    async def shutting_down(_app: Any, **_: Any) -> None:
        await service.release(list(service.owned), "shutdown")
        probe.close()

    app.on_partitions_assigned.connect(assigned)  # type: ignore[arg-type]
    app.on_partitions_revoked.connect(revoked)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(shutting_down)  # type: ignore[arg-type]

    return app, service


def _raw_topic(app: faust.App, name: str) -> faust.TopicT:
    """Bytes in, bytes out: Headwater decodes and validates records itself."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )


def _reader(service: MonitorService) -> Any:
    async def read(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            try:
                await service.handle(message.topic, message.partition, message.offset, event.value)
            except Exception as exc:
                # faust would restart the agent and go on past the record; the monitor stops
                # instead, and its restart resumes from the last checkpoint.
                service.failure = service.failure or exc
                return
            yield None

    return read


def run_monitor(settings: Settings, spec: PipelineSpec, stop: threading.Event) -> None:
    """Run until `stop` is set; a failure inside faust (an agent's crash) is raised here."""
    metrics = MonitorMetrics.create(serve_metrics("monitor", settings))
    with checkpoint_log(settings) as copies:
        run_restarting("monitor", lambda: MonitorRun(settings, spec, metrics, copies), stop)


@dataclass
class MonitorRun:
    """One faust app's life: built again after a restart."""

    settings: Settings
    spec: PipelineSpec
    metrics: MonitorMetrics
    copies: CheckpointLog | None

    def run(self, stop: threading.Event) -> None:
        with tempfile.TemporaryDirectory(prefix="headwater-monitor-") as datadir:
            app, service = build_monitor(
                self.settings, self.spec, datadir, self.metrics, self.copies
            )
            asyncio.run(_serve(app, service, stop))
            log.info("monitor stopped", extra={"fields": dict(service.counts)})


async def _serve(app: faust.App, service: MonitorService, stop: threading.Event) -> None:
    app.finalize()
    await app.start()
    try:
        while not (stop.is_set() or app.should_stop or service.failure):
            await asyncio.sleep(0.2)
    finally:
        if service.failure is not None:
            service.owned.clear()  # a failed record's partition keeps its last checkpoint
        await app.stop()
    failure = service.failure or app.crash_reason
    if failure is not None:
        raise failure
