"""The online feature store: the latest features of each entity in Redis, with a TTL."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgpack
import redis

from shared.codec import decode
from shared.keys import PipelineKeys
from shared.messages import FeatureRecord

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


_WRITE_SHA = hashlib.sha1(_WRITE.encode()).hexdigest()


class FeatureStore:
    """`headwater:<pipeline>:features:<entity>` -> the entity's last features/v1 record, the
    same bytes the features topic carried (written once, sent twice).

    Writes are pipelined across batches: a batch's write is sent without waiting for its
    reply, which is read when the next batch is written (or at `flush`), so Redis applies
    one batch while the service computes the next. At most one write is in flight.
    """

    def __init__(self, client: redis.Redis, pipeline: str, ttl_s: float) -> None:
        self.client = client
        self.prefix = PipelineKeys(pipeline).entity_features
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._in_flight: tuple[Any, bytes] | None = None  # (connection, packed items)

    def write_latest(self, latest: Mapping[str, bytes]) -> None:
        """Send the last features/v1 record of each entity in a batch in one command, after
        settling the previous batch's write (whose Redis error, if any, is raised here)."""
        self.flush()
        if not latest:
            return
        items: list[str | bytes] = []
        prefix = self.prefix
        for entity, record in latest.items():
            items.append(prefix + entity)
            items.append(record)
        # MessagePack's old format (no str8, no bin types): what Redis' cmsgpack reads
        packed = msgpack.packb(items, use_bin_type=False)
        pool = self.client.connection_pool
        connection: Any = pool.get_connection()  # redis-py leaves it unannotated
        try:
            connection.send_command("EVALSHA", _WRITE_SHA, 0, packed, self.ttl_ms)
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            raise
        self._in_flight = (connection, packed)

    def flush(self) -> None:
        """Wait for the write in flight, if any; raises its Redis error."""
        if self._in_flight is None:
            return
        connection, packed = self._in_flight
        self._in_flight = None
        pool = self.client.connection_pool
        try:
            try:
                connection.read_response()
            except redis.exceptions.NoScriptError:  # a new or restarted Redis: load it now
                self.client.eval(_WRITE, 0, packed, self.ttl_ms)
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def read(self, entity: str) -> dict[str, Any] | None:
        """{features, ts (event time they were computed at), event_id}, or None."""
        raw = self.client.get(self.prefix + entity)
        if raw is None:
            return None
        record = FeatureRecord.from_wire(decode(raw))  # type: ignore[arg-type]
        return {
            "features": record.features,
            "ts": record.event.ts,
            "event_id": record.event.event_id,
        }
