"""Composition root of the ingest service."""

from __future__ import annotations

import threading

from confluent_kafka import TopicPartition

from services.ingest.service import IngestService, ingest_metrics
from shared.checkpoint.store import CheckpointStore
from shared.kafka import BatchConsumer, SafeProducer, check_record_limits, require_topics
from shared.metrics import ServiceMetrics
from shared.redis_store import RedisStore
from shared.settings import Settings
from shared.spec import PipelineSpec


class IngestConfigError(ValueError):
    pass


def build_ingest(settings: Settings, spec: PipelineSpec) -> IngestService:
    topics = settings.topics
    inputs, outputs = [topics.events, topics.labels], [topics.events_valid, topics.labels_valid]
    loops = sorted(set(inputs) & {*outputs, topics.events_dlq})
    if loops:
        raise IngestConfigError(
            f"topic {loops[0]!r} is both an input and an output of ingest: set "
            "HEADWATER_TOPICS__EVENTS_VALID and HEADWATER_TOPICS__LABELS_VALID to other topics"
        )
    require_topics(settings.kafka_bootstrap, [*inputs, *outputs, topics.events_dlq])
    # Valid records go out as they came (dead letters keep at most 64 KiB of the original).
    check_record_limits(settings.kafka_bootstrap, outputs, settings.max_message_bytes)
    redis = RedisStore(settings.redis_url)
    redis.ping()
    key = settings.checkpoint_key.get_secret_value().encode()
    metrics = ServiceMetrics("ingest")
    metrics.serve(settings.metrics_port)
    service: IngestService | None = None

    def assigned(partitions: list[TopicPartition]) -> None:
        assert service is not None
        service.on_assign(partitions)

    def revoked(partitions: list[TopicPartition]) -> None:
        assert service is not None
        service.on_revoke(partitions)

    def lost(partitions: list[TopicPartition]) -> None:
        assert service is not None
        service.on_lost(partitions)

    consumer = BatchConsumer(
        settings.kafka_bootstrap,
        group_id=f"{settings.consumer_group_prefix}.{spec.name}.ingest",
        topics=inputs,
        session_timeout_ms=settings.session_timeout_ms,
        group_protocol=settings.group_protocol,
        on_assign=assigned,
        on_revoke=revoked,
        on_lost=lost,
    )
    service = IngestService(
        spec.name,
        spec.ingest,
        consumer,
        SafeProducer(settings.kafka_bootstrap),
        redis.client,
        lambda kind, p: CheckpointStore(
            redis.client, spec.name, f"ingest-{kind}s-p{p}", key, keep=settings.checkpoints_kept
        ),
        settings,
        ingest_metrics(metrics),
    )
    return service


def run_ingest(settings: Settings, spec: PipelineSpec, stop: threading.Event) -> None:
    build_ingest(settings, spec).run(stop)
