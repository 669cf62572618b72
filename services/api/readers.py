"""What the API reads of the Redis state the services write (Kafka's watermarks, for lag,
are services/api/lag.py's).

The API is a reader: it never writes model state. Its only writes are requests the learner
applies itself (a rollback request, the set of paused models), so the learner stays the one
owner of its checkpoints (DESIGN §4).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from services.api.registry import PIPELINE_NAME, valid_names
from shared.alert_store import AlertStore
from shared.checkpoint.keys import CheckpointKeys
from shared.checkpoint.store import CheckpointInfo, CheckpointStore, version_key, versions_key
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


def models_of(
    spec: Mapping[str, Any] | None, latest: CheckpointInfo | None, status: LearnerStatus | None
) -> list[str]:
    """A pipeline's models: from its spec, else its newest checkpoint, else the learner's
    status."""
    if spec and isinstance(spec.get("models"), list):
        return [m["name"] for m in spec["models"] if isinstance(m, dict) and "name" in m]
    if latest is not None and isinstance(latest.meta.get("learned"), dict):
        return list(latest.meta["learned"])
    return sorted(status.metrics) if status is not None else []


@dataclass(frozen=True)
class DriftSummary:
    """Per model, how many of the newest 1000 alerts name it, and the newest of them."""

    by_model: Mapping[str | None, tuple[int, dict[str, Any]]]

    @classmethod
    def of(cls, alerts: Sequence[dict[str, Any]]) -> DriftSummary:
        """From alerts newest first."""
        counts: dict[str | None, int] = {}
        newest: dict[str | None, dict[str, Any]] = {}
        for alert in alerts:
            model = alert.get("model")
            counts[model] = counts.get(model, 0) + 1
            newest.setdefault(model, alert)
        return cls({model: (count, newest[model]) for model, count in counts.items()})

    def of_model(self, model: str) -> tuple[int, dict[str, Any] | None]:
        count, newest = self.by_model.get(model, (0, None))
        return count, newest


@dataclass(frozen=True)
class PipelineView:
    """What the model-state route reads of a registered pipeline, in two round trips."""

    spec: dict[str, Any] | None
    status: LearnerStatus | None
    latest: CheckpointInfo | None
    paused: frozenset[str]
    drift: DriftSummary

    @property
    def models(self) -> list[str]:
        return models_of(self.spec, self.latest, self.status)


ALERTS_READ = 1000  # the newest alerts the model-state route counts


class StateReader:
    """Reads of one Redis holding any number of pipelines' state.

    What rarely changes is parsed once and kept per pipeline while its bytes stay the
    same: the spec's JSON, the newest checkpoint's metadata, and the alerts' summary (kept
    while `AlertStore.queue_version`'s answers stay the same)."""

    def __init__(self, client: redis.Redis, checkpoint_key: CheckpointKeys, keep: int) -> None:
        self.client = client
        self._key = checkpoint_key
        self._keep = keep
        self._specs: dict[str, tuple[Any, dict[str, Any] | None]] = {}  # raw JSON, parsed
        self._infos: dict[str, tuple[Any, CheckpointInfo]] = {}  # (version, meta, epoch), info
        self._drifts: dict[str, tuple[Any, DriftSummary]] = {}  # alerts' version, summary

    def view(self, pipeline: str) -> PipelineView | None:
        """The pipeline's spec, status, newest checkpoint, paused models and alerts; None
        for a pipeline not registered. One round trip, and one for the checkpoint's
        metadata (a third when alerts came since the last request)."""
        if not PIPELINE_NAME.match(pipeline):
            return None
        keys = PipelineKeys(pipeline)
        base = keys.checkpoint("learner")
        alerts = AlertStore(self.client, pipeline)
        pipe = self.client.pipeline(transaction=False)
        pipe.sismember(PIPELINES, pipeline)
        pipe.get(keys.learner_spec)
        pipe.hgetall(keys.learner_status)
        pipe.lindex(versions_key(base), 0)
        pipe.smembers(keys.learner_paused)
        alerts.queue_version(pipe)
        registered, spec, status, newest, paused, *version = pipe.execute()
        if not registered:
            return None
        return PipelineView(
            self._spec(pipeline, spec),
            LearnerStatus.parse(status),
            self._newest(pipeline, base, newest),
            frozenset(m.decode() for m in paused),
            self._drift(alerts, (version[0], tuple(version[1]), tuple(version[2]))),
        )

    def _spec(self, pipeline: str, raw: Any) -> dict[str, Any] | None:
        cached = self._specs.get(pipeline)
        if cached is not None and cached[0] == raw:
            return cached[1]
        spec = json.loads(raw) if raw else None
        parsed = spec if isinstance(spec, dict) else None
        self._specs[pipeline] = (raw, parsed)
        return parsed

    def _newest(self, pipeline: str, base: str, raw: bytes | None) -> CheckpointInfo | None:
        if raw is None:
            return None
        version = int(raw)
        meta, epoch = self.client.hmget(version_key(base, version), ["meta", "epoch"])
        if meta is None:  # dropped since (a newer version came)
            return self.latest(pipeline)
        key = (version, meta, epoch)
        cached = self._infos.get(pipeline)
        if cached is not None and cached[0] == key:
            return cached[1]
        info = CheckpointInfo.read(version, meta, epoch)
        self._infos[pipeline] = (key, info)
        return info

    def _drift(self, alerts: AlertStore, version: Any) -> DriftSummary:
        cached = self._drifts.get(alerts.pipeline)
        if cached is not None and cached[0] == version:
            return cached[1]
        summary = DriftSummary.of(alerts.latest(ALERTS_READ))
        self._drifts[alerts.pipeline] = (version, summary)
        return summary

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
        return self._spec(pipeline, self.client.get(PipelineKeys(pipeline).learner_spec))

    def latest(self, pipeline: str) -> CheckpointInfo | None:
        return self.checkpoints(pipeline).newest()

    def models(self, pipeline: str) -> list[str]:
        """From the spec, else the newest checkpoint, else the status (`models_of`),
        reading only as far as it must."""
        spec = self.spec(pipeline)
        if spec and isinstance(spec.get("models"), list):
            return models_of(spec, None, None)
        info = self.latest(pipeline)
        if info is not None and isinstance(info.meta.get("learned"), dict):
            return models_of(None, info, None)
        return models_of(None, None, self.status(pipeline))

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
