"""Which model snapshot version each scorer replica serves, in one Redis hash: the API's
pipeline page shows them (Prometheus has them too, per replica, but the API reads only
Redis). A replica writes its field at each snapshot poll and deletes it on stopping; one
killed leaves a field whose time stops moving, which readers skip."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from shared.keys import PipelineKeys

log = logging.getLogger(__name__)

FRESH_S = 10.0  # a field older than this is a replica gone
TTL_S = 300  # the hash goes when no replica has written for this long


class ServedVersions:
    def __init__(self, client: redis.Redis, pipeline: str, replica: str) -> None:
        self.client = client
        self.key = PipelineKeys(pipeline).scorers_served
        self.replica = replica

    def write(self, version: int, pinned: bool) -> None:
        """Logged, not raised: the scorer serves on through a Redis blip."""
        value = json.dumps({"version": version, "pinned": pinned, "at": time.time()})
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(self.key, self.replica, value)
            pipe.expire(self.key, TTL_S)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("served version not written", extra={"fields": {"error": str(exc)}})

    def remove(self) -> None:
        try:
            self.client.hdel(self.key, self.replica)
        except redis.RedisError as exc:
            log.warning("served version not removed", extra={"fields": {"error": str(exc)}})


def read_served(client: redis.Redis, pipeline: str, now: float | None = None) -> dict[str, Any]:
    """Replica -> {"version", "pinned", "at"} of the replicas that wrote in the last
    FRESH_S seconds; unreadable fields are skipped."""
    now = time.time() if now is None else now
    raw: dict[bytes, bytes] = client.hgetall(PipelineKeys(pipeline).scorers_served)  # type: ignore[assignment]
    out = {}
    for replica, value in raw.items():
        try:
            entry = json.loads(value)
            fresh = now - float(entry["at"]) <= FRESH_S
        except (ValueError, KeyError, TypeError):
            continue
        if fresh:
            out[replica.decode(errors="replace")] = entry
    return out
