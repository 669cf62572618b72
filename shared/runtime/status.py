"""The status hash an instance keeps in Redis for operators and the API; each write also
registers the instance's pipeline (shared/keys.py PIPELINES), which is how readers know the
pipelines without scanning Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import redis

from shared.keys import PIPELINES, pipeline_of

log = logging.getLogger(__name__)

Fields = Mapping[str, str | int | float]


class StatusWriter:
    """Writes a hash at most once per `interval_s` (or when forced), replacing the last;
    it expires `ttl_s` after the last write, so a stopped instance's status goes away.
    `key` is one of shared/keys.py's, under its pipeline: the pipeline is registered with
    every write (an SADD in the same transaction, a no-op after the first)."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        interval_s: float = 1.0,
        ttl_s: int | None = 300,
    ) -> None:
        self.client = client
        self.key = key
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.pipeline = pipeline_of(key)
        self._at = float("-inf")

    def due(self, force: bool = False) -> bool:
        """True at most once per interval (always when forced); the caller then writes."""
        now = time.monotonic()
        if not force and now - self._at < self.interval_s:
            return False
        self._at = now
        return True

    def write(self, fields: Fields) -> None:
        """A Redis error is logged, not raised: a blip must not stop the stream, and the
        next write follows a second later."""
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.key)
            mapping: dict[str, str | int | float] = {**fields, "updated_at": time.time()}
            pipe.hset(self.key, mapping=mapping)  # type: ignore[arg-type]
            if self.ttl_s is not None:
                pipe.expire(self.key, self.ttl_s)
            pipe.sadd(PIPELINES, self.pipeline)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("status not written to Redis", extra={"fields": {"error": str(exc)}})
