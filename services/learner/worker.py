"""Where the learner's models run: in the service's own thread, or in a model process.

Scoring and learning are about half of the learner's CPU time per record, Kafka I/O,
ordering and record building the other half. One Python thread does both in turn; with a
model process the service's thread consumes, orders and publishes while the model process
scores and learns, each on a core of its own. Both workers run the same `serve_batch` on
the same records in the same order, so models, metrics and outputs are identical (tests
check); the in-thread worker is there for single-core machines and for debugging.

The model process (process_worker.py) is a child that owns the `LearnerCore` between
checkpoints: the service ships it each released batch (`submit`) and later reads the
batch's results (`results`), a few batches in flight so neither side waits. Control
calls (`snapshot`, `status`, `replace_model`) wait for every batch in flight first, so a
snapshot holds exactly the records submitted before it. The child ignores SIGINT and
SIGTERM (the service stops it, after its final checkpoint) and exits when the service is
gone (its pipe closes).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from services.learner.core import LearnerCore
from shared.messages import MessageError
from shared.models import ModelAdapter
from shared.rollout.state import Decision
from shared.status import REACTION_COUNTS

log = logging.getLogger(__name__)

# Work items: (EVENT, event_id, entity, ts, data, label) or (LABEL, event_id, label).
EVENT, LABEL = 0, 1
# Results, one per item in order: (SCORED, scores, joined), (JOINED, status, joined) or
# (FAILED, reason, message) for a record to dead-letter. A SCORED or JOINED result has a
# fourth element, the core's marks, where the learner reacted to concept drift at one of
# the record's outcomes (reaction.py).
SCORED, JOINED, FAILED = 0, 1, 2

Item = tuple[Any, ...]
Result = tuple[Any, ...]
Batch = tuple[list[Any], int, list[Result]]  # (the caller's metas, model version, results)

CHUNK = 1000  # records the in-thread worker scores between two `wait` calls


class WorkerError(RuntimeError):
    """The model process failed or died; the service stops (its last checkpoint stands)."""


def serve_batch(core: LearnerCore, items: list[Item]) -> tuple[int, list[Result]]:
    """Score and learn each item in order. A record the models cannot take becomes a
    FAILED result (dead-lettered by the caller), never a crash and never retried."""
    version = core.model_version  # checkpoints come between batches, never inside one
    out: list[Result] = []
    append = out.append
    score, join, marks = core.score, core.join, core.marks
    # Labelled events straight to the model while `score` would do nothing else for them
    # (`direct_step`), counted per run.
    direct = core.direct_step()
    run = 0  # events scored by `direct` and not yet counted
    for item in items:
        try:
            if direct is not None:
                if item[0] == EVENT and item[5] is not None:
                    append((SCORED, (direct.predict_learn(item[4], item[5]),), []))
                    run += 1
                    continue  # nothing changed but the model: `direct` still holds
                core.count_direct(direct, run)  # before any other call reads the counters
                run = 0
            if item[0] == EVENT:
                _, event_id, entity, ts, data, label = item
                append((SCORED, *score(event_id, entity, ts, data, label)))
            else:
                append((JOINED, *join(item[1], item[2])))
            if marks:
                out[-1] = (*out[-1], tuple(marks))
                marks.clear()
        except MessageError as exc:  # a label the task cannot learn from
            marks.clear()
            append((FAILED, exc.reason, str(exc)))
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:
            # A value a model cannot take (a string where it needs a number, a class it
            # rejects): the record is dead-lettered, never retried forever.
            log.exception("model failed on a record", extra={"fields": {"event": item[1]}})
            marks.clear()
            append((FAILED, "model_error", f"{type(exc).__name__}: {exc}"))
        if run and direct is not None:  # a direct call failed: its run is counted
            core.count_direct(direct, run)
            run = 0
        direct = core.direct_step()
    if run and direct is not None:
        core.count_direct(direct, run)
    return version, out


def serve_sliced(
    core: LearnerCore, items: list[Item], between: Callable[[], None], size: int
) -> tuple[int, list[Result]]:
    """`serve_batch`, `size` records at a time, calling `between` between slices: a long
    batch of a slow model must not look dead (the in-thread worker renews the service's
    lease there, the model process says it is alive)."""
    version, results = serve_batch(core, items[:size])
    for start in range(size, len(items), size):
        between()
        results += serve_batch(core, items[start : start + size])[1]
    return version, results


def at_most_every(seconds: float, action: Callable[[], None]) -> Callable[[], None]:
    """`action`, skipped when it ran less than `seconds` ago."""
    last = time.monotonic()

    def maybe() -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= seconds:
            action()
            last = now

    return maybe


def core_status(core: LearnerCore) -> dict[str, Any]:
    """The model side's counters operators see (the learner's status hash)."""
    status = {
        "model_version": core.model_version,
        "events_seen": core.events_seen,
        "labels_learned": core.labels_learned,
        "labels_unmatched": core.labels_unmatched,
        "pending": len(core.pending),
        "expired_defaulted": core.expired_defaulted,
        "expired_unlabelled": core.expired_unlabelled,
        "paused": tuple(sorted(core.paused)),
        "labels_skipped_paused": core.labels_skipped_paused,
    }
    reactions = core.reactions
    if reactions is not None:  # drift.reaction: what the learner did about concept drift
        counts = {name: reactions.counts[name] for name in REACTION_COUNTS}
        status["reactions"] = {**counts, "trials": len(reactions.trials)}
    if core.rollout is not None:
        status["rollout"] = core.rollout.state()
    return status


class ModelWorker(Protocol):
    wait: Callable[[], None]  # called while a call waits on the model side (lease renewal)
    # The live state is in another process: a snapshot is a copy, which the service need
    # not keep once persisted.
    apart: bool

    def load(self, core: LearnerCore) -> None: ...
    def submit(
        self, items: list[Item], metas: list[Any], wait: Callable[[], None] = ...
    ) -> None: ...
    def results(self, block: bool, wait: Callable[[], None] = ...) -> Iterator[Batch]: ...
    def snapshot(self) -> LearnerCore: ...
    def set_version(self, version: int) -> None: ...
    def set_paused(self, models: frozenset[str]) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def request_status(self) -> None: ...
    def take_status(self) -> dict[str, Any] | None: ...
    def replace_model(
        self, name: str, model: ModelAdapter, metrics: list[Any], learned: int
    ) -> None: ...
    def rollout(self, request: dict[str, Any]) -> Decision: ...
    def close(self) -> None: ...


def no_wait() -> None:
    return None


class InlineWorker:
    """The models in the caller's thread: `submit` scores at once."""

    apart = False

    def __init__(self) -> None:
        self.core: LearnerCore | None = None
        self._done: deque[Batch] = deque()
        self.wait: Callable[[], None] = no_wait
        self._status: dict[str, Any] | None = None

    def _core(self) -> LearnerCore:
        if self.core is None:
            raise WorkerError("no state loaded into the model worker")
        return self.core

    def load(self, core: LearnerCore) -> None:
        core.track_metrics = False  # the service keeps them, from the results
        self.core = core

    def submit(
        self, items: list[Item], metas: list[Any], wait: Callable[[], None] = no_wait
    ) -> None:
        """Scores at once, calling `wait` every CHUNK records (the service renews its lease
        there: a long release of a slow model must not let it lapse)."""
        self._done.append((metas, *serve_sliced(self._core(), items, wait, CHUNK)))

    def results(self, block: bool, wait: Callable[[], None] = no_wait) -> Iterator[Batch]:
        while self._done:
            yield self._done.popleft()

    def snapshot(self) -> LearnerCore:
        return self._core()

    def set_version(self, version: int) -> None:
        self._core().model_version = version

    def set_paused(self, models: frozenset[str]) -> None:
        self._core().set_paused(models)

    def status(self) -> dict[str, Any]:
        return core_status(self._core())

    def request_status(self) -> None:
        self._status = self.status()  # every submitted record is scored already

    def take_status(self) -> dict[str, Any] | None:
        status, self._status = self._status, None
        return status

    def replace_model(
        self, name: str, model: ModelAdapter, metrics: list[Any], learned: int
    ) -> None:
        self._core().replace_model(name, model, metrics, learned)

    def rollout(self, request: dict[str, Any]) -> Decision:
        return self._core().apply_rollout(request)

    def close(self) -> None:
        self.core = None
