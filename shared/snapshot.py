"""The model snapshot: what a learner publishes of its models for readers, versioned.

Readers (the API's predictions, a scorer) get the models without the learner's private
state. After each checkpoint the learner writes one hash, `headwater:<pipeline>:learner:
snapshot` (shared/keys.py):
  format   SNAPSHOT_FORMAT of the writer; read before anything is unpickled
  version  the checkpoint version the models are (predictions carry it as model_version)
  blob     the pickled `ModelSnapshot`: shared classes only (shared/models adapters)
  mac      HMAC-SHA256 of the blob with the checkpoint keys, verified before unpickling
  at       when it was published (Unix seconds): readers report the snapshot's age
A reader refuses a format it does not read, naming both.

The last `keep` versions are kept too, as `…:snapshot:v<version>` (indexed by the sorted
set `…:snapshot:versions`), so a scorer can serve a pinned version while the learner goes
on (the README's Scorers section).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from shared.checkpoint.codec import dumps, loads
from shared.checkpoint.keys import CheckpointKeys
from shared.keys import PipelineKeys
from shared.models import ModelAdapter
from shared.models.inputs import model_input
from shared.rollout.state import Routing

SNAPSHOT_FORMAT = 1


class SnapshotFormatError(RuntimeError):
    """The snapshot was written in a format this reader does not read."""


class NoSnapshotError(LookupError):
    """No learner has published a snapshot of this pipeline yet."""


@dataclass(frozen=True)
class ModelSnapshot:
    pipeline: str
    task: str
    version: int  # the checkpoint version the models are
    vw_text: bool  # every model is VW: they take VW's text (shared/models/inputs.py)
    models: dict[str, ModelAdapter]
    format: int = SNAPSHOT_FORMAT
    # Who serves each entity (the spec's serving.rollout); None: every model's prediction
    # is published. (Snapshots written before it existed read as None.)
    routing: Routing | None = None

    def predict(self, model: str, data: dict[str, Any]) -> tuple[Any, Any]:
        """One model's (prediction, probability per class or None) for an event's data;
        KeyError for a model not in the snapshot."""
        return self.models[model].predict(model_input(data, self.vw_text))


class SnapshotStore:
    def __init__(
        self,
        client: redis.Redis,
        pipeline: str,
        keys: CheckpointKeys | bytes,
        keep: int = 10,
    ) -> None:
        self.client = client
        self.pipeline = pipeline
        self._keys = PipelineKeys(pipeline)
        self.key = self._keys.learner_snapshot
        self.index = self._keys.learner_snapshot_versions
        self.keys = keys if isinstance(keys, CheckpointKeys) else CheckpointKeys(keys)
        self.keep = keep

    def _versioned(self, version: int) -> str:
        return self._keys.learner_snapshot_version(version)

    def publish(self, snapshot: ModelSnapshot) -> None:
        """The newest snapshot and its kept copy in one transaction; copies beyond `keep`
        go."""
        blob = dumps(snapshot)
        mapping: dict[Any, bytes | int | float] = {
            "format": snapshot.format,
            "version": snapshot.version,
            "blob": blob,
            "mac": self.keys.sign(blob),
            "at": time.time(),
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key, mapping=mapping)
        pipe.delete(self._versioned(snapshot.version))
        pipe.hset(self._versioned(snapshot.version), mapping=mapping)
        pipe.zadd(self.index, {str(snapshot.version): snapshot.version})
        pipe.execute()
        old: list[bytes] = self.client.zrange(self.index, 0, -self.keep - 1)  # type: ignore[assignment]
        if old:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*(self._versioned(int(v)) for v in old))
            pipe.zrem(self.index, *old)
            pipe.execute()

    def version(self) -> int | None:
        """The published snapshot's version (one small read), or None."""
        raw = self.client.hget(self.key, "version")
        return int(raw) if raw is not None else None

    def versions(self) -> list[int]:
        """The versions kept, oldest first."""
        kept: list[bytes] = self.client.zrange(self.index, 0, -1)  # type: ignore[assignment]
        return [int(v) for v in kept]

    def published_at(self, version: int | None = None) -> float | None:
        """When the newest snapshot (or a kept version) was published, or None."""
        raw = self.client.hget(self.key if version is None else self._versioned(version), "at")
        return float(raw) if raw is not None else None

    def load(self, version: int | None = None) -> ModelSnapshot:
        """The newest snapshot, or a kept `version` of it."""
        key = self.key if version is None else self._versioned(version)
        fields: dict[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
        if not fields and version is not None:
            raise NoSnapshotError(
                f"pipeline {self.pipeline!r} has no model snapshot v{version}; the versions "
                f"kept are {self.versions() or 'none yet'}"
            )
        if not fields:
            raise NoSnapshotError(
                f"pipeline {self.pipeline!r} has no model snapshot yet (its learner publishes "
                "one at each checkpoint)"
            )
        found = int(fields.get(b"format", b"0"))
        if found != SNAPSHOT_FORMAT:
            raise SnapshotFormatError(
                f"the model snapshot of {self.pipeline!r} has format {found}; this version of "
                f"Headwater reads format {SNAPSHOT_FORMAT}: run readers and the learner at the "
                "same version"
            )
        snapshot = loads(fields[b"blob"], fields[b"mac"], self.keys, what=f"snapshot {key}")
        if not isinstance(snapshot, ModelSnapshot):
            raise SnapshotFormatError(f"{key} does not hold a model snapshot")
        return snapshot
