"""The online feature store: the latest features of each entity in Redis, with a TTL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from shared.codec import decode, encode

# One call per batch: SET every key with its TTL (a pipeline of SETs costs redis-py far more).
_WRITE = """
local ttl = ARGV[#ARGV]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i], 'PX', ttl)
end
return #KEYS
"""


class FeatureStore:
    """`headwater:<pipeline>:features:<entity>` -> MessagePack {features, ts, event_id}."""

    def __init__(self, client: redis.Redis, pipeline: str, ttl_s: float) -> None:
        self.client = client
        self.prefix = f"headwater:{pipeline}:features:"
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._write = client.register_script(_WRITE)

    def write_latest(self, latest: Mapping[str, tuple[dict[str, Any], float, str]]) -> None:
        """The last features of each entity in a batch, in one round trip."""
        if not latest:
            return
        keys = [self.prefix + entity for entity in latest]
        values: list[Any] = [
            encode({"features": features, "ts": ts, "event_id": event_id})
            for features, ts, event_id in latest.values()
        ]
        self._write(keys=keys, args=[*values, self.ttl_ms])

    def read(self, entity: str) -> dict[str, Any] | None:
        """{features, ts (event time they were computed at), event_id}, or None."""
        raw = self.client.get(self.prefix + entity)
        if raw is None:
            return None
        value: dict[str, Any] = decode(raw)  # type: ignore[arg-type]
        return value
