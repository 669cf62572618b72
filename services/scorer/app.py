"""Composition root of the scorer: settings + spec -> wired service."""

from __future__ import annotations

import logging
import threading

from services.scorer.follower import SnapshotFollower
from services.scorer.scoring import Scorer
from services.scorer.service import ScorerMetrics, ScorerService
from shared.kafka import BatchConsumer, SafeProducer, require_topics
from shared.kafka.connection import KafkaConnection
from shared.metrics import serve_metrics
from shared.redis_store import RedisStore
from shared.runtime.partitioned import instance_name
from shared.served_versions import ServedVersions
from shared.settings import Settings
from shared.snapshot import SnapshotStore
from shared.spec import PipelineSpec

log = logging.getLogger(__name__)


def build_scorer(
    settings: Settings, spec: PipelineSpec, metrics: ScorerMetrics | None = None
) -> ScorerService:
    """`metrics`: None for new ones, served on HEADWATER_METRICS_PORT."""
    topics = settings.topics
    # The learner's input: a scorer scores what the learner scores.
    source = topics.features if spec.features is not None else topics.events_valid
    kafka = KafkaConnection.from_settings(settings)
    outputs = [topics.predictions]
    if spec.serving.rollout is not None:  # an operator may turn shadow on at any time
        outputs.append(topics.predictions_shadow)
    require_topics(kafka, [source, *outputs], written=outputs)
    store = RedisStore.from_settings(settings)
    store.ping()
    if spec.serving.by != "scorers":
        log.warning(
            "the spec's serving.by is 'learner': the learner publishes predictions too, so "
            "each event gets two of each model's (set serving.by: scorers)"
        )
    snapshots = SnapshotStore(
        store.client, spec.name, settings.checkpoint_keys(), keep=settings.checkpoints_kept
    )
    consumer = BatchConsumer(
        kafka,
        group_id=f"{settings.consumer_group_prefix}.{spec.name}.scorer",
        topics=[source],
        session_timeout_ms=settings.session_timeout_ms,
        group_protocol=settings.group_protocol,
    )
    return ScorerService(
        consumer,
        SafeProducer(kafka),
        SnapshotFollower(
            snapshots,
            settings.scorer_version,
            settings.scorer_poll_s,
            ServedVersions(store.client, spec.name, instance_name()),
        ),
        Scorer(from_features=source == topics.features, max_bytes=settings.max_message_bytes),
        topics.predictions,
        topics.predictions_shadow,
        metrics or ScorerMetrics.create(serve_metrics("scorer", settings)),
        settings.batch_size,
        settings.poll_timeout_s,
    )


def run_scorer(settings: Settings, spec: PipelineSpec, stop: threading.Event) -> None:
    build_scorer(settings, spec).run(stop)
