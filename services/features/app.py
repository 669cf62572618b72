"""Composition root of the features service."""

from __future__ import annotations

import threading

from services.features.engine import FeatureEngine
from services.features.service import FeaturesService, features_metrics
from shared.checkpoint.log import CheckpointLog, checkpoint_log
from shared.checkpoint.store import CheckpointStore
from shared.feature_store import FeatureStore
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


class FeaturesConfigError(ValueError):
    pass


def build_features(
    settings: Settings,
    spec: PipelineSpec,
    metrics: StreamMetrics | None = None,
    copies: CheckpointLog | None = None,
) -> FeaturesService:
    """`metrics`: kept across restarts (None: new ones, served); `copies`: the checkpoint
    topic (None: checkpoints only in Redis)."""
    if spec.features is None:
        raise FeaturesConfigError(f"pipeline {spec.name!r} declares no `features:` section")
    topics = settings.topics
    keys = settings.checkpoint_keys()
    kafka = KafkaConnection.from_settings(settings)
    outputs = [topics.features, topics.events_dlq]
    counts = require_topics(kafka, [topics.events_valid, *outputs], written=outputs)
    check_record_limits(kafka, [topics.features], settings.max_message_bytes)
    if counts[topics.features] != counts[topics.events_valid]:
        raise FeaturesConfigError(
            f"topic {topics.features!r} has {counts[topics.features]} partitions and "
            f"{topics.events_valid!r} {counts[topics.events_valid]}: features are written to "
            "the input's partition number, so both need the same count"
        )
    redis = RedisStore.from_settings(settings)
    redis.ping()
    consumer = BatchConsumer(
        kafka,
        group_id=f"{settings.consumer_group_prefix}.{spec.name}.features",
        topics=[topics.events_valid],
        session_timeout_ms=settings.session_timeout_ms,
        group_protocol=settings.group_protocol,
    )
    status_key = PipelineKeys(spec.name).instance_status("features", instance_name())
    return FeaturesService(
        FeatureEngine(spec.features),
        consumer,
        SafeProducer(kafka),
        FeatureStore(redis.client, spec.name, spec.features.entity_ttl),
        lambda p: CheckpointStore(
            redis.client,
            spec.name,
            f"features-p{p}",
            keys,
            keep=settings.checkpoints_kept,
            copies=copies,
        ),
        settings,
        metrics or features_metrics(serve_metrics("features", settings)),
        StatusWriter(redis.client, status_key),
    )


def run_features(settings: Settings, spec: PipelineSpec, stop: threading.Event) -> None:
    metrics = features_metrics(serve_metrics("features", settings))
    with checkpoint_log(settings) as copies:
        run_restarting("features", lambda: build_features(settings, spec, metrics, copies), stop)
