"""Ad-hoc predictions from a pipeline's newest checkpoint, without learning.

The checkpoint is verified (HMAC) before it is unpickled, and kept per pipeline until a
newer version appears, so a request costs one Redis read of the version number, not a
restore.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from services.learner.checkpointing import LearnerState
from services.learner.core import LearnerCore, model_input
from shared.checkpoint.store import CheckpointNotFoundError, CheckpointStore


class NoModelError(LookupError):
    """No checkpoint yet, or no such model in it."""


@dataclass(frozen=True)
class Answer:
    version: int
    prediction: Any
    proba: list[tuple[Any, float]] | None


class Predictor:
    def __init__(self) -> None:
        self._cores: dict[str, tuple[int, LearnerCore]] = {}
        self._lock = threading.Lock()  # River models are not safe to share across threads

    def predict(
        self, store: CheckpointStore, pipeline: str, model: str, data: dict[str, Any]
    ) -> Answer:
        with self._lock:
            version, core = self._core(store, pipeline)
            adapter = core.models.get(model)
            if adapter is None:
                raise NoModelError(f"model {model!r} is not in checkpoint v{version}")
            prediction, proba = adapter.predict(model_input(data, core.vw_text))
        return Answer(
            version, prediction, None if proba is None else [(c, float(p)) for c, p in proba]
        )

    def _core(self, store: CheckpointStore, pipeline: str) -> tuple[int, LearnerCore]:
        latest = store.latest_version()
        if latest is None:
            raise NoModelError(f"pipeline {pipeline!r} has no checkpoint yet")
        cached = self._cores.get(pipeline)
        if cached is not None and cached[0] == latest:
            return cached
        try:
            info, state = store.load(latest)
        except CheckpointNotFoundError as exc:  # pruned between the two reads
            raise NoModelError(str(exc)) from exc
        if not isinstance(state, LearnerState):
            raise NoModelError(f"checkpoint v{info.version} holds no learner state")
        self._cores[pipeline] = (info.version, state.core)
        return info.version, state.core
