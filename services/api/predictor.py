"""Ad-hoc predictions from a pipeline's model snapshot (shared/snapshot.py), without learning.

The snapshot is verified (HMAC) before it is unpickled, and kept per pipeline until a newer
version appears, so a request costs one Redis read of the version number, not a load.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from shared.snapshot import ModelSnapshot, NoSnapshotError, SnapshotStore


class NoModelError(LookupError):
    """No snapshot yet, or no such model in it."""


@dataclass(frozen=True)
class Answer:
    version: int
    prediction: Any
    proba: list[tuple[Any, float]] | None


class Predictor:
    def __init__(self) -> None:
        self._snapshots: dict[str, ModelSnapshot] = {}
        # River models are not safe to share across threads: one lock per pipeline, so a
        # slow model or a snapshot load holds up only its own pipeline's requests
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, pipeline: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(pipeline, threading.Lock())

    def predict(self, store: SnapshotStore, model: str, data: dict[str, Any]) -> Answer:
        with self._lock(store.pipeline):
            snapshot = self._snapshot(store)
            if model not in snapshot.models:
                raise NoModelError(f"model {model!r} is not in snapshot v{snapshot.version}")
            prediction, proba = snapshot.predict(model, data)
        return Answer(
            snapshot.version,
            prediction,
            None if proba is None else [(c, float(p)) for c, p in proba],
        )

    def _snapshot(self, store: SnapshotStore) -> ModelSnapshot:
        latest = store.version()
        if latest is None:
            raise NoModelError(
                f"pipeline {store.pipeline!r} has no model snapshot yet (its learner "
                "publishes one at each checkpoint)"
            )
        cached = self._snapshots.get(store.pipeline)
        if cached is not None and cached.version == latest:
            return cached
        try:
            snapshot = store.load()
        except NoSnapshotError as exc:  # deleted between the two reads
            raise NoModelError(str(exc)) from exc
        self._snapshots[store.pipeline] = snapshot
        return snapshot
