"""Composition root of the ingest service."""

from __future__ import annotations

import threading

from services.ingest.service import IngestService, ingest_metrics
from shared.checkpoint.log import CheckpointLog, checkpoint_log
from shared.checkpoint.store import CheckpointStore
from shared.kafka import BatchConsumer, SafeProducer, check_record_limits, require_topics
from shared.kafka.connection import KafkaConnection
from shared.keys import PipelineKeys
from shared.metrics import StreamMetrics, serve_metrics
from shared.redis_store import RedisStore
from shared.runtime.partitioned import instance_name
from shared.runtime.restarts import run_restarting
from shared.runtime.status import StatusWriter
from shared.settings import Settings
from shared.spec import PipelineSpec


class IngestConfigError(ValueError):
    pass


def build_ingest(
    settings: Settings,
    spec: PipelineSpec,
    metrics: StreamMetrics | None = None,
    copies: CheckpointLog | None = None,
) -> IngestService:
    """`metrics`: kept across restarts (None: new ones, served); `copies`: the checkpoint
    topic (None: checkpoints only in Redis)."""
    topics = settings.topics
    inputs, outputs = [topics.events, topics.labels], [topics.events_valid, topics.labels_valid]
    loops = sorted(set(inputs) & {*outputs, topics.events_dlq})
    if loops:
        raise IngestConfigError(
            f"topic {loops[0]!r} is both an input and an output of ingest: set "
            "HEADWATER_TOPICS__EVENTS_VALID and HEADWATER_TOPICS__LABELS_VALID to other topics"
        )
    keys = settings.checkpoint_keys()
    kafka = KafkaConnection.from_settings(settings)
    written = [*outputs, topics.events_dlq]
    require_topics(kafka, [*inputs, *written], written=written)
    # Valid records go out as they came (dead letters keep at most 64 KiB of the original).
    check_record_limits(kafka, outputs, settings.max_message_bytes)
    redis = RedisStore.from_settings(settings)
    redis.ping()
    consumer = BatchConsumer(
        kafka,
        group_id=f"{settings.consumer_group_prefix}.{spec.name}.ingest",
        topics=inputs,
        session_timeout_ms=settings.session_timeout_ms,
        group_protocol=settings.group_protocol,
    )
    status_key = PipelineKeys(spec.name).instance_status("ingest", instance_name())
    return IngestService(
        spec.ingest,
        consumer,
        SafeProducer(kafka),
        lambda kind, p: CheckpointStore(
            redis.client,
            spec.name,
            f"ingest-{kind}s-p{p}",
            keys,
            keep=settings.checkpoints_kept,
            copies=copies,
        ),
        settings,
        kafka,
        metrics or ingest_metrics(serve_metrics("ingest", settings)),
        StatusWriter(redis.client, status_key),
    )


def run_ingest(settings: Settings, spec: PipelineSpec, stop: threading.Event) -> None:
    metrics = ingest_metrics(serve_metrics("ingest", settings))
    with checkpoint_log(settings) as copies:
        run_restarting("ingest", lambda: build_ingest(settings, spec, metrics, copies), stop)
