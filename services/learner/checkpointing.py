"""The learner's state on the stream runtime (shared/runtime/): one unit, the pipeline.

The lease holder owns every input partition, so its whole state (models, metrics, pending
labels, the next offset of every input partition) is one checkpoint; the runtime's sequence
writes it (flush outputs, fenced write, acknowledge offsets). After each, the models are
published as the model snapshot readers use (shared/snapshot.py): the checkpoint itself is
the learner's private state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING

from services.learner.core import LearnerCore
from services.learner.reaction import carried_over
from shared.checkpoint.store import CheckpointInfo, CheckpointStore
from shared.rollout.state import carried_rollout
from shared.runtime.ownership import Offsets, Owned, StateKind
from shared.snapshot import ModelSnapshot, SnapshotStore

log = logging.getLogger(__name__)

PIPELINE = "pipeline"  # the learner's one unit of state


class SpecMismatchError(RuntimeError):
    pass


@dataclass
class LearnerState:
    """Everything a checkpoint holds; offsets are the next record to read per partition."""

    core: LearnerCore
    offsets: Offsets = field(default_factory=dict)
    # Highest upstream offset applied per (topic, partition) of the features' lineage: a
    # record re-emitted by a restarted features service is dropped, not learned twice.
    source_hwm: Offsets = field(default_factory=dict)


class LearnerStateKind(StateKind[str, LearnerState]):
    """Checkpointed as the `LearnerState` itself."""

    service = "learner"
    unit = "pipeline"

    def __init__(
        self,
        store: CheckpointStore,
        fresh: LearnerCore,
        snapshots: SnapshotStore,
        inputs: list[tuple[str, int]],
    ) -> None:
        self._store = store
        self._fresh = fresh
        self.snapshots = snapshots
        self._inputs = inputs

    def store(self, key: str) -> CheckpointStore:
        return self._store

    def fresh(self, key: str) -> tuple[LearnerState, int]:
        return LearnerState(self._fresh), OFFSET_BEGINNING

    def thaw(self, key: str, saved: Any, info: CheckpointInfo) -> tuple[LearnerState, int]:
        """Refused unless it holds the spec's models for the spec's task."""
        if not isinstance(saved, LearnerState):
            raise SpecMismatchError(f"checkpoint v{info.version} does not hold learner state")
        fresh = self._fresh
        have, want = list(saved.core.models), list(fresh.models)
        if have != want or saved.core.task != fresh.task:
            raise SpecMismatchError(
                f"checkpoint v{info.version} holds models {have} for task {saved.core.task!r}; "
                f"the spec declares {want} for {fresh.task!r}. Use a new pipeline name, or "
                f"delete the pipeline's checkpoints ({self._store.base}:*) and run the learner "
                "with --reset to start over"
            )
        saved.core.model_version = info.version
        saved.core.reactions = carried_over(saved.core.reactions, fresh.reactions)
        saved.core.rollout = carried_rollout(saved.core.rollout, fresh.rollout)
        return saved, OFFSET_BEGINNING  # the offsets are per partition, in the state

    def freeze(self, key: str, owned: Owned[LearnerState]) -> LearnerState:
        return owned.state

    def meta(self, key: str, owned: Owned[LearnerState]) -> dict[str, Any]:
        state = owned.state
        core = state.core
        return {
            "events_seen": core.events_seen,
            "labels_learned": core.labels_learned,
            "learned": core.learned,
            "pending": len(core.pending),
            "metrics": core.metric_values(),
            "offsets": {f"{t}[{p}]": o for (t, p), o in state.offsets.items()},
        }

    def offsets(self, key: str, owned: Owned[LearnerState]) -> Offsets:
        return owned.state.offsets

    def inputs(self, key: str) -> list[tuple[str, int]]:
        return self._inputs

    def persisted(self, key: str, owned: Owned[LearnerState], version: int) -> None:
        """The models, published for readers (the API) as the versioned snapshot. A Redis
        error is logged: readers keep the previous one, the next checkpoint publishes."""
        core = owned.state.core
        core.model_version = version
        routing = None if core.rollout is None else core.rollout.routing
        snapshot = ModelSnapshot(
            core.pipeline, core.task, version, core.vw_text, core.models, routing=routing
        )
        try:
            self.snapshots.publish(snapshot)
        except redis.RedisError as exc:
            log.warning("model snapshot not published", extra={"fields": {"error": str(exc)}})
