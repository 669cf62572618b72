"""The learner's side of DESIGN §4: restore on taking ownership, checkpoint as a sequence.

A checkpoint is three named steps, in this order:
  1. flush_outputs       every prediction of the records applied so far is delivered;
  2. persist_state       models, metrics, pending labels and the next input offsets go to
                         Redis in one fenced, atomic write (a stale owner is refused);
  3. acknowledge_offsets the same offsets are stored in Kafka (advisory: restores use the
                         checkpoint's own).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from services.learner.core import LearnerCore
from services.learner.reaction import carried_over
from shared.checkpoint.store import CheckpointNotFoundError, CheckpointStore, StaleEpochError
from shared.kafka import BatchConsumer, SafeProducer

log = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], int]


class FencedError(RuntimeError):
    """Another learner took over this pipeline; this one must stop acting as its owner."""


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


def restore(store: CheckpointStore, fresh: LearnerCore) -> tuple[LearnerState, int]:
    """The newest checkpoint (HMAC verified before unpickling), or a fresh state."""
    try:
        info, state = store.load()
    except CheckpointNotFoundError:
        log.info("no checkpoint yet: starting fresh from the beginning of the inputs")
        return LearnerState(fresh), 0
    if not isinstance(state, LearnerState):
        raise SpecMismatchError(f"checkpoint v{info.version} does not hold learner state")
    have, want = list(state.core.models), list(fresh.models)
    if have != want or state.core.task != fresh.task:
        raise SpecMismatchError(
            f"checkpoint v{info.version} holds models {have} for task {state.core.task!r}; "
            f"the spec declares {want} for {fresh.task!r}. Use a new pipeline name, or delete "
            f"the pipeline's checkpoints ({store.base}:*) to start over"
        )
    state.core.model_version = info.version
    state.core.reactions = carried_over(state.core.reactions, fresh.reactions)
    log.info(
        "restored checkpoint",
        extra={"fields": {"version": info.version, "events_seen": state.core.events_seen}},
    )
    return state, info.version


@dataclass
class Checkpointer:
    store: CheckpointStore
    producer: SafeProducer
    consumer: BatchConsumer
    epoch: int
    every_records: int
    interval_s: float
    records_since: int = 0
    last_at: float = field(default_factory=time.monotonic)
    last_seconds: float = 0.0
    last_bytes: int = 0

    def due(self) -> bool:
        return (
            self.records_since >= self.every_records
            or time.monotonic() - self.last_at >= self.interval_s
        ) and self.records_since > 0

    def checkpoint(self, state: LearnerState, reason: str) -> int:
        started = time.perf_counter()
        self.flush_outputs()
        version = self.persist_state(state, reason)
        self.acknowledge_offsets(state.offsets)
        self.records_since = 0
        self.last_at = time.monotonic()
        self.last_seconds = time.perf_counter() - started
        return version

    def flush_outputs(self) -> None:
        self.producer.flush()

    def persist_state(self, state: LearnerState, reason: str) -> int:
        core = state.core
        meta: dict[str, Any] = {
            "reason": reason,
            "events_seen": core.events_seen,
            "labels_learned": core.labels_learned,
            "learned": core.learned,
            "pending": len(core.pending),
            "metrics": core.metric_values(),
            "offsets": {f"{t}[{p}]": o for (t, p), o in state.offsets.items()},
        }
        try:
            version = self.store.write(self.epoch, state, meta)
        except StaleEpochError as exc:
            raise FencedError(
                f"checkpoint refused, another learner owns the pipeline: {exc}"
            ) from exc
        core.model_version = version
        return version

    def acknowledge_offsets(self, offsets: Offsets) -> None:
        self.consumer.store({key: offset - 1 for key, offset in offsets.items() if offset > 0})
