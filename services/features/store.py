"""The online feature store: the latest features of each entity in Redis, with a TTL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack
import redis

from shared.codec import decode, encode

# One call per batch: SET every key with its TTL. The keys and values travel packed in one
# MessagePack argument (unpacked by Redis' built-in cmsgpack): redis-py's per-argument
# packing of a thousand arguments cost more than the whole write.
_WRITE = """
local items = cmsgpack.unpack(ARGV[1])
local ttl = ARGV[2]
for i = 1, #items, 2 do
  redis.call('SET', items[i], items[i + 1], 'PX', ttl)
end
return #items / 2
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
        items: list[str | bytes] = []
        prefix = self.prefix
        for entity, (features, ts, event_id) in latest.items():
            items.append(prefix + entity)
            items.append(encode({"features": features, "ts": ts, "event_id": event_id}))
        # MessagePack's old format (no str8, no bin types): what Redis' cmsgpack reads
        self._write(keys=[], args=[msgpack.packb(items, use_bin_type=False), self.ttl_ms])

    def read(self, entity: str) -> dict[str, Any] | None:
        """{features, ts (event time they were computed at), event_id}, or None."""
        raw = self.client.get(self.prefix + entity)
        if raw is None:
            return None
        value: dict[str, Any] = decode(raw)  # type: ignore[arg-type]
        return value
