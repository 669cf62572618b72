"""Composition root of the learner: settings + spec -> wired service."""

from __future__ import annotations

import json
import threading

import redis

from services.learner.core import LearnerCore
from services.learner.process_worker import start_worker
from services.learner.publisher import LearnerMetrics
from services.learner.service import LearnerService
from shared.checkpoint.lease import Lease
from shared.checkpoint.log import CheckpointLog, checkpoint_log
from shared.checkpoint.store import CheckpointStore
from shared.kafka import BatchConsumer, SafeProducer, require_topics
from shared.kafka.connection import KafkaConnection
from shared.keys import PipelineKeys
from shared.metrics import serve_metrics
from shared.ordering import OrderedMerge
from shared.redis_store import RedisStore
from shared.runtime.restarts import run_restarting
from shared.settings import Settings
from shared.spec import PipelineSpec


def publish_spec(client: redis.Redis, spec: PipelineSpec) -> None:
    """For readers (the API): the spec this learner runs, as JSON."""
    client.set(PipelineKeys(spec.name).learner_spec, json.dumps(spec.describe(), default=str))


def build_learner(
    settings: Settings,
    spec: PipelineSpec,
    metrics: LearnerMetrics | None = None,
    copies: CheckpointLog | None = None,
) -> LearnerService:
    """`metrics`: kept across restarts (None: new ones, served); `copies`: the checkpoint
    topic (None: checkpoints only in Redis)."""
    topics = settings.topics
    # With a `features:` section the learner reads the features service's output; labels
    # come through ingest (labels.valid).
    source = topics.features if spec.features is not None else topics.events_valid
    labels = topics.labels_valid
    keys = settings.checkpoint_keys()
    kafka = KafkaConnection.from_settings(settings)
    outputs = [topics.predictions, topics.outcomes, topics.events_dlq]
    if spec.serving.rollout is not None:  # an operator may turn shadow on at any time
        outputs += [topics.predictions_shadow, topics.model_events]
    partitions = require_topics(kafka, [source, labels, *outputs], written=outputs)
    store = RedisStore.from_settings(settings)
    store.ping()
    publish_spec(store.client, spec)
    consumer = BatchConsumer(
        kafka,
        group_id=f"{settings.consumer_group_prefix}.{spec.name}.learner",
        topics=None,  # the lease holder owns every partition; see LearnerService
        session_timeout_ms=settings.session_timeout_ms,
        group_protocol=settings.group_protocol,
    )
    return LearnerService(
        LearnerCore.from_spec(spec),
        consumer,
        SafeProducer(kafka),
        settings,
        store,
        CheckpointStore(
            store.client,
            spec.name,
            "learner",
            keys,
            keep=settings.checkpoints_kept,
            copies=copies,
        ),
        Lease(store.client, PipelineKeys(spec.name).learner_lease, settings.lease_ttl_s),
        {source: partitions[source], labels: partitions[labels]},
        metrics or LearnerMetrics.create(serve_metrics("learner", settings)),
        # No "caught up" shortcut: a cached high watermark can be stale while a producer is
        # still writing the other topic, and then fetch timing would decide the order.
        OrderedMerge(settings.merge_idle_ms / 1000),
        lambda: start_worker(
            settings.learner_model_process,
            settings.log_level,
            settings.log_format,
            settings.learner_model_timeout_s,
        ),
        serves=spec.serving.by == "learner",
    )


def run_learner(settings: Settings, spec: PipelineSpec, stop: threading.Event) -> None:
    metrics = LearnerMetrics.create(serve_metrics("learner", settings))
    with checkpoint_log(settings) as copies:
        run_restarting("learner", lambda: build_learner(settings, spec, metrics, copies), stop)
