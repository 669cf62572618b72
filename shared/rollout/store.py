"""The rollout in Redis: the learner's state and newest decisions for readers, and the
operators' requests for the learner (shared/keys.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis

from shared.keys import PipelineKeys

KEPT_EVENTS = 100


class RolloutStore:
    def __init__(self, client: redis.Redis, pipeline: str) -> None:
        self.client = client
        keys = PipelineKeys(pipeline)
        self.state_key = keys.learner_rollout
        self.events_key = keys.learner_rollout_events
        self.requests_key = keys.learner_rollout_requests

    def write_state(self, state: dict[str, Any]) -> None:
        self.client.set(self.state_key, json.dumps(state))

    def add_events(self, events: Iterable[dict[str, Any]]) -> None:
        """Newer than the newest kept only: a learner restored from a checkpoint emits its
        decisions since then again."""
        head: bytes | None = self.client.lindex(self.events_key, 0)  # type: ignore[assignment]
        newest = -1 if head is None else int(json.loads(head)["seq"])
        values = [json.dumps(e) for e in events if e["seq"] > newest]
        if values:
            pipe = self.client.pipeline(transaction=True)
            pipe.lpush(self.events_key, *values)
            pipe.ltrim(self.events_key, 0, KEPT_EVENTS - 1)
            pipe.execute()

    def read(self, limit: int = KEPT_EVENTS) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The state (None: no learner with a rollout wrote one) and the newest decisions."""
        raw: bytes | None = self.client.get(self.state_key)  # type: ignore[assignment]
        events: list[bytes] = self.client.lrange(self.events_key, 0, limit - 1)  # type: ignore[assignment]
        return (None if raw is None else json.loads(raw)), [json.loads(e) for e in events]

    def request(self, request: dict[str, Any]) -> None:
        self.client.rpush(self.requests_key, json.dumps(request))

    def take_request(self) -> dict[str, Any] | None:
        raw: bytes | None = self.client.lpop(self.requests_key)  # type: ignore[assignment]
        if raw is None:
            return None
        request = json.loads(raw)
        return request if isinstance(request, dict) else {"action": None}
