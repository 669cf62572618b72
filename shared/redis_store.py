"""Thin Redis adapter: connection with timeouts, health check, key naming."""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis


class RedisUnavailableError(RuntimeError):
    pass


class RedisStore:
    """Keys live under `headwater:<pipeline>:…` so several pipelines share one Redis."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    @staticmethod
    def key(pipeline: str, *parts: str) -> str:
        return ":".join(("headwater", pipeline, *parts))

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise RedisUnavailableError(f"Redis at {self.url} is unreachable: {exc}") from exc

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ping()
                return
            except RedisUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def put_hash(self, key: str, fields: Mapping[str, str | int | float]) -> None:
        self.client.hset(key, mapping=dict(fields))  # type: ignore[arg-type]

    def get_hash(self, key: str) -> dict[str, str]:
        raw: dict[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()}

    def close(self) -> None:
        self.client.close()
