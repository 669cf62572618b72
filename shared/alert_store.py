"""The latest drift alerts of a pipeline in Redis, for the API and operators.

Keyed by alert id, so an alert re-emitted after a restart or a replay is stored once.
Writing alerts registers the pipeline (shared/keys.py PIPELINES), as a status write does:
the monitor keeps no status hash.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from shared.keys import PIPELINES, PipelineKeys
from shared.messages import DriftAlert


class AlertStore:
    def __init__(self, client: redis.Redis, pipeline: str, keep: int = 1000) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.client = client
        self.keep = keep
        self.pipeline = pipeline
        base = PipelineKeys(pipeline).monitor_alerts
        self._index = base  # sorted set: alert id by event time
        self._data = f"{base}:data"  # hash: alert id -> the alert as JSON

    def add(self, alerts: list[DriftAlert]) -> None:
        """Store alerts and keep only the newest `keep` (by event time), in one step."""
        if not alerts:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._data, mapping={a.alert_id: json.dumps(a.to_wire()) for a in alerts})
        pipe.zadd(self._index, {a.alert_id: a.ts for a in alerts})
        pipe.zrange(self._index, 0, -self.keep - 1)  # the ones to drop, oldest first
        pipe.sadd(PIPELINES, self.pipeline)
        dropped: list[bytes] = pipe.execute()[-2]
        if dropped:
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(self._index, *dropped)
            pipe.hdel(self._data, *dropped)
            pipe.execute()

    def queue_version(self, pipe: Any) -> None:
        """Queue, on a Redis pipeline, three reads whose answers together change whenever
        the alerts stored do (a reader's cache check): `add` only adds (an id is one alert,
        stored again unchanged) and drops the oldest past `keep`, so the count, the oldest
        and the newest tell every change apart."""
        pipe.zcard(self._index)
        pipe.zrange(self._index, 0, 0, withscores=True)
        pipe.zrange(self._index, -1, -1, withscores=True)

    def latest(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        if limit < 1:
            return []
        ids: list[bytes] = self.client.zrevrange(self._index, 0, limit - 1)  # type: ignore[assignment]
        if not ids:
            return []
        raw: list[bytes | None] = self.client.hmget(self._data, ids)  # type: ignore[assignment]
        return [json.loads(r) for r in raw if r is not None]
