"""Operators' requests to the learner, applied between two batches: models paused (a set the
API writes), rollbacks (`headwater models rollback`) and rollout requests (`headwater
rollout`, the API). Each is checkpointed at once, so a
replay after a crash applies it at the same record."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from services.learner.publisher import Publisher
from services.learner.worker import ModelWorker
from shared.checkpoint.codec import CheckpointFormatError, CheckpointTamperedError
from shared.checkpoint.store import CheckpointStore
from shared.keys import PipelineKeys
from shared.rollout.store import RolloutStore

log = logging.getLogger(__name__)


class OperatorControls:
    def __init__(
        self,
        client: redis.Redis,
        rollouts: RolloutStore,
        pipeline: str,
        names: tuple[str, ...],
        store: CheckpointStore,
        publisher: Publisher,
        drain: Callable[[], None],
        checkpoint: Callable[[str], int],
    ) -> None:
        """`drain`: every batch submitted to the worker published; `checkpoint(reason)`."""
        self.client = client
        self.rollouts = rollouts
        self.paused_key = PipelineKeys(pipeline).learner_paused
        self.names = names
        self.store = store
        self.publisher = publisher
        self.drain = drain
        self.checkpoint = checkpoint
        # As last applied to the worker; None: not yet since this instance became active.
        self.paused: frozenset[str] | None = None

    def follow(self, worker: ModelWorker) -> None:
        """A pending rollback, then the paused set (about once a second)."""
        try:
            request = self.store.take_rollback()
        except redis.RedisError as exc:
            log.warning("rollback requests not read", extra={"fields": {"error": str(exc)}})
            return
        if request is not None:
            self.rollback(worker, request)
        self.follow_pauses(worker)
        self.follow_rollout(worker)

    def follow_rollout(self, worker: ModelWorker) -> None:
        """One operator's rollout request (switch, rollback, set), if any: applied to the
        state between two batches and published as a decision."""
        try:
            request = self.rollouts.take_request()
        except redis.RedisError as exc:
            log.warning("rollout requests not read", extra={"fields": {"error": str(exc)}})
            return
        if request is None:
            return
        self.drain()
        decision = worker.rollout(request)
        if "refused" in decision:
            log.error(
                "rollout request refused",
                extra={"fields": {"request": request, "error": decision["refused"]}},
            )
            return
        # the service keeps the decision in Redis and checkpoints it, as the test's
        self.publisher.operator_decision(decision)

    def follow_pauses(self, worker: ModelWorker) -> None:
        """Applied between two batches, so a pause never splits one."""
        try:
            raw: set[bytes] = self.client.smembers(self.paused_key)  # type: ignore[assignment]
        except redis.RedisError as exc:
            log.warning("paused models not read", extra={"fields": {"error": str(exc)}})
            return
        paused = frozenset(m.decode() for m in raw) & frozenset(self.names)
        if paused == self.paused:
            return
        self.drain()
        worker.set_paused(paused)
        changed = self.paused is not None or paused
        self.paused = paused
        if not changed:
            return
        log.info("paused models changed", extra={"fields": {"paused": sorted(paused)}})
        try:
            self.checkpoint(f"paused {','.join(sorted(paused)) or 'none'}")
        except redis.RedisError as exc:
            log.error(
                "pause applied but not yet checkpointed; the next checkpoint records it",
                extra={"fields": {"error": str(exc)}},
            )

    def rollback(self, worker: ModelWorker, request: dict[str, Any]) -> None:
        """One model (and its metrics) continues from an older checkpoint; the other
        models and the input position are untouched."""
        model, version = str(request.get("model")), int(request.get("version", -1))
        try:
            _, old = self.store.load(version)
        except (
            LookupError,
            CheckpointTamperedError,
            CheckpointFormatError,
            redis.RedisError,
        ) as exc:
            log.error("rollback refused", extra={"fields": {"model": model, "error": str(exc)}})
            return
        if model not in self.names or model not in old.core.models:
            log.error("rollback refused: unknown model", extra={"fields": {"model": model}})
            return
        self.drain()
        metrics = old.core.metrics[model]
        worker.replace_model(model, old.core.models[model], metrics, old.core.learned.get(model, 0))
        self.publisher.replace_model_metrics(model, metrics)
        try:
            new_version = self.checkpoint(f"rollback {model} to v{version}")
        except redis.RedisError as exc:
            log.error(
                "rollback applied but not yet checkpointed; the next checkpoint records it",
                extra={"fields": {"model": model, "to": version, "error": str(exc)}},
            )
            return
        log.info(
            "model rolled back",
            extra={"fields": {"model": model, "to": version, "checkpoint": new_version}},
        )
