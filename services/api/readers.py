"""What the API reads of the Redis state the services write (Kafka's watermarks, for lag,
are services/api/lag.py's).

The API is a reader: it never writes model state. Its only writes are requests the learner
applies itself (a rollback request, the set of paused models), so the learner stays the one
owner of its checkpoints (DESIGN §4).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import redis

from services.api.registry import PIPELINE_NAME, valid_names
from shared.alert_store import AlertStore
from shared.checkpoint.keys import CheckpointKeys
from shared.checkpoint.store import CheckpointInfo, CheckpointStore
from shared.keys import PIPELINES, PipelineKeys
from shared.snapshot import SnapshotStore
from shared.status import LearnerStatus

_ROLLING = re.compile(r"^(?P<name>.+) \(last (?P<window>\d+)\)$")
LIVE_S = 30.0  # a learner whose status is older than this is not running


def split_metrics(values: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(overall, rolling): rolling ones are named "Accuracy (last 1000)"."""
    overall: dict[str, float] = {}
    rolling: dict[str, float] = {}
    for name, value in values.items():
        (rolling if _ROLLING.match(name) else overall)[name] = float(value)
    return overall, rolling


def parse_offsets(raw: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """A checkpoint's `offsets` meta ({"topic[p]": next offset}) as (topic, partition, offset)."""
    out = []
    for key, offset in raw.items():
        match = re.match(r"^(?P<topic>.+)\[(?P<p>\d+)\]$", key)
        if match and isinstance(offset, int):
            out.append((match["topic"], int(match["p"]), offset))
    return sorted(out)


class StateReader:
    """Reads of one Redis holding any number of pipelines' state."""

    def __init__(self, client: redis.Redis, checkpoint_key: CheckpointKeys, keep: int) -> None:
        self.client = client
        self._key = checkpoint_key
        self._keep = keep

    def pipelines(self) -> list[str]:
        """The registered pipelines (services/api/registry.py): one SMEMBERS, no scan."""
        members: set[bytes] = self.client.smembers(PIPELINES)  # type: ignore[assignment]
        return valid_names(members)

    def exists(self, pipeline: str) -> bool:
        return bool(PIPELINE_NAME.match(pipeline)) and bool(
            self.client.sismember(PIPELINES, pipeline)
        )

    def checkpoints(self, pipeline: str) -> CheckpointStore:
        return CheckpointStore(self.client, pipeline, "learner", self._key, keep=self._keep)

    def snapshots(self, pipeline: str) -> SnapshotStore:
        return SnapshotStore(self.client, pipeline, self._key)

    def status(self, pipeline: str) -> LearnerStatus | None:
        """The learner's status, None when none was written."""
        raw: dict[bytes, bytes] = self.client.hgetall(PipelineKeys(pipeline).learner_status)  # type: ignore[assignment]
        return LearnerStatus.parse(raw)

    def spec(self, pipeline: str) -> dict[str, Any] | None:
        raw = self.client.get(PipelineKeys(pipeline).learner_spec)
        spec = json.loads(raw) if raw else None
        return spec if isinstance(spec, dict) else None

    def latest(self, pipeline: str) -> CheckpointInfo | None:
        versions = self.checkpoints(pipeline).versions()
        return versions[0] if versions else None

    def models(self, pipeline: str) -> list[str]:
        """The pipeline's models: from its spec, else its newest checkpoint, else the
        learner's status."""
        spec = self.spec(pipeline)
        if spec and isinstance(spec.get("models"), list):
            return [m["name"] for m in spec["models"] if isinstance(m, dict) and "name" in m]
        info = self.latest(pipeline)
        if info is not None and isinstance(info.meta.get("learned"), dict):
            return list(info.meta["learned"])
        status = self.status(pipeline)
        return sorted(status.metrics) if status is not None else []

    def paused(self, pipeline: str) -> set[str]:
        members: set[bytes] = self.client.smembers(PipelineKeys(pipeline).learner_paused)  # type: ignore[assignment]
        return {m.decode() for m in members}

    def set_paused(self, pipeline: str, model: str, paused: bool) -> None:
        key = PipelineKeys(pipeline).learner_paused
        if paused:
            self.client.sadd(key, model)
        else:
            self.client.srem(key, model)

    def alerts(self, pipeline: str, limit: int) -> list[dict[str, Any]]:
        return AlertStore(self.client, pipeline).latest(limit)

    def learner_running(self, status: LearnerStatus | None, now: float | None = None) -> bool:
        return status is not None and status.live(now, LIVE_S)
