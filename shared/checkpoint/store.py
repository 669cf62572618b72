"""Fenced, atomic checkpoint writes to Redis, with the last K versions kept (DESIGN §4).

Layout under `headwater:<pipeline>:<owner>:ckpt` (shared/keys.py):
  :epoch      owner epoch; a new owner INCRs it, and only a write carrying it succeeds
  :seq        last version number handed out
  :latest     newest version
  :versions   version numbers, newest first (at most `keep`)
  :v:<n>      hash: blob (pickled state), mac (HMAC-SHA256 of blob), meta (JSON), epoch
  :rollback   a pending rollback request (JSON), taken by the running service

One Lua script checks the epoch and writes everything, so a stale owner can never
overwrite a newer checkpoint and a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import KafkaException

from shared.checkpoint.codec import dumps, loads
from shared.checkpoint.keys import CheckpointKeys
from shared.checkpoint.log import CheckpointLog, SavedCheckpoint, chunk_count, new_chunk_id
from shared.kafka.admin import TopicError
from shared.kafka.producer import DeliveryError
from shared.keys import PipelineKeys

log = logging.getLogger(__name__)

_WRITE = """
local base = KEYS[1]
local current = tonumber(redis.call('GET', base .. ':epoch') or '0')
if tonumber(ARGV[1]) > current then
  return redis.error_reply(
    'STATE_LOST owner epoch is ' .. current .. ', writer has ' .. ARGV[1])
end
if tonumber(ARGV[1]) ~= current then
  return redis.error_reply(
    'STALE_EPOCH owner epoch is ' .. current .. ', writer has ' .. ARGV[1])
end
local v = redis.call('INCR', base .. ':seq')
local vkey = base .. ':v:' .. v
redis.call('HSET', vkey, 'blob', ARGV[2], 'mac', ARGV[3], 'meta', ARGV[4], 'epoch', ARGV[1])
redis.call('LPUSH', base .. ':versions', v)
redis.call('SET', base .. ':latest', v)
local keep = tonumber(ARGV[5])
while redis.call('LLEN', base .. ':versions') > keep do
  local old = redis.call('RPOP', base .. ':versions')
  redis.call('DEL', base .. ':v:' .. old)
end
return v
"""

# Puts back a copy from the checkpoint log into a store Redis has never seen (or lost): the
# copy's epoch becomes the current one, so the owner's new epoch fences the copy's writer.
_SEED = """
local base = KEYS[1]
if redis.call('EXISTS', base .. ':epoch') == 1 then
  return 0
end
local v = ARGV[1]
redis.call('SET', base .. ':epoch', ARGV[2])
redis.call('SET', base .. ':seq', v)
redis.call('HSET', base .. ':v:' .. v, 'blob', ARGV[3], 'mac', ARGV[4], 'meta', ARGV[5],
  'epoch', ARGV[2])
redis.call('DEL', base .. ':versions')
redis.call('LPUSH', base .. ':versions', v)
redis.call('SET', base .. ':latest', v)
return 1
"""


class StaleEpochError(RuntimeError):
    """Another owner took over: this writer is fenced off."""


class StoreResetError(StaleEpochError):
    """The store's epoch went back below the writer's: Redis lost the state (a restart
    without persistence, a replaced instance), so nobody else took over."""


class CheckpointNotFoundError(LookupError):
    pass


class CheckpointLostError(RuntimeError):
    """The newest checkpoint is named but gone (evicted, deleted): starting fresh would
    silently throw the learned state away, so a service refuses to."""


@dataclass(frozen=True)
class CheckpointInfo:
    version: int
    epoch: int
    meta: dict[str, Any]

    @property
    def created_at(self) -> float:
        return float(self.meta.get("created_at", 0.0))

    @classmethod
    def read(cls, version: int, meta: bytes | str, epoch: bytes | str | None) -> CheckpointInfo:
        """From a version hash's `meta` (JSON) and `epoch` fields."""
        return cls(version, int(epoch or 0), json.loads(meta))


def versions_key(base: str) -> str:
    """The list of kept versions, newest first, of the owner whose keys start with `base`."""
    return f"{base}:versions"


def version_key(base: str, version: int) -> str:
    """One version's hash: blob, mac, meta, epoch."""
    return f"{base}:v:{version}"


class CheckpointStore:
    def __init__(
        self,
        client: redis.Redis,
        pipeline: str,
        service: str,
        key: CheckpointKeys | bytes,
        keep: int = 10,
        copies: CheckpointLog | None = None,
    ) -> None:
        """`key`: the deployment's keys, or one key (tests, tools) that both signs and
        verifies; `copies`: the durable copy (None: Redis is the only one)."""
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.client = client
        self.base = PipelineKeys(pipeline).checkpoint(service)
        self.keys = key if isinstance(key, CheckpointKeys) else CheckpointKeys(key)
        self.keep = keep
        self._write = client.register_script(_WRITE)
        self._seed = client.register_script(_SEED)
        self.last_bytes = 0  # size of the blob this store last wrote (0: none yet)
        self.copies = copies
        self._copied: tuple[str, int] | None = None  # the log's copy: chunk id and count
        self._copied_known = False

    def new_epoch(self) -> int:
        """Claim ownership: every older epoch's writes fail from now on."""
        return int(self.client.incr(f"{self.base}:epoch"))

    def current_epoch(self) -> int:
        return int(self.client.get(f"{self.base}:epoch") or 0)

    def write(self, epoch: int, state: Any, meta: dict[str, Any]) -> int:
        """One atomic, fenced step; returns the new version. Then the copy in the log."""
        blob = dumps(state)
        meta = {**meta, "created_at": time.time(), "epoch": epoch, "bytes": len(blob)}
        copy = (new_chunk_id(), chunk_count(len(blob))) if self.copies is not None else None
        if copy is not None:
            meta["copy"] = list(copy)
            if not self._copied_known:
                self._copied = self._copy_of(self.latest_version())
                self._copied_known = True
        mac, meta_json = self.keys.sign(blob), json.dumps(meta)
        try:
            version = self._write(keys=[self.base], args=[epoch, blob, mac, meta_json, self.keep])
        except redis.ResponseError as exc:
            text = str(exc)
            if text.startswith("STATE_LOST"):
                raise StoreResetError(text.replace("STATE_LOST ", "")) from None
            if text.startswith("STALE_EPOCH"):
                raise StaleEpochError(text.replace("STALE_EPOCH ", "")) from None
            raise
        self.last_bytes = len(blob)
        if copy is not None:
            self._copy(SavedCheckpoint(int(version), epoch, blob, mac, meta_json, *copy))
        return int(version)

    def _copy(self, saved: SavedCheckpoint) -> None:
        """The durable copy. A failure is logged, not raised: Redis has the checkpoint,
        and should Redis be lost too, the log's older copy replays from further back."""
        assert self.copies is not None
        try:
            self.copies.put(self.base, saved, self._copied)
        except (KafkaException, DeliveryError, TopicError, BufferError) as exc:
            log.error(
                "checkpoint not copied to the checkpoint topic",
                extra={"fields": {"checkpoint": self.base, "error": str(exc)}},
            )
            return
        self._copied = (saved.chunk_id, saved.chunks)

    def _copy_of(self, version: int | None) -> tuple[str, int] | None:
        """The log copy's chunk id and count, from a version's meta."""
        if version is None:
            return None
        raw = self.client.hget(f"{self.base}:v:{version}", "meta")
        copy = json.loads(raw).get("copy") if raw else None
        return (str(copy[0]), int(copy[1])) if isinstance(copy, list) and len(copy) == 2 else None

    def recover(self) -> int | None:
        """Put the log's copy back when Redis has never seen this unit (a new one, or its
        state lost); the version put back, or None."""
        if self.copies is None or self.client.exists(f"{self.base}:epoch"):
            return None
        saved = self.copies.latest(self.base)
        if saved is None:
            return None
        seeded = self._seed(
            keys=[self.base],
            args=[saved.version, saved.epoch, saved.blob, saved.mac, saved.meta],
        )
        self._copied, self._copied_known = (saved.chunk_id, saved.chunks), True
        return saved.version if seeded else None

    def latest_version(self) -> int | None:
        raw = self.client.get(f"{self.base}:latest")
        return int(raw) if raw is not None else None

    def load(self, version: int | None = None) -> tuple[CheckpointInfo, Any]:
        """Verify the blob's HMAC, then unpickle it (newest version when none is given)."""
        newest = version is None
        if version is None:
            version = self.latest_version()
            if version is None:
                raise CheckpointNotFoundError(f"no checkpoint under {self.base}")
        fields: dict[bytes, bytes] = self.client.hgetall(f"{self.base}:v:{version}")  # type: ignore[assignment]
        if not fields and newest:
            raise CheckpointLostError(
                f"the newest checkpoint ({self.base}:v:{version}) is missing from Redis (evicted "
                "or deleted?); refusing to start from scratch. Check Redis' maxmemory-policy "
                f"(use noeviction), or delete {self.base}:* and run the service with --reset to "
                "start over deliberately"
            )
        if not fields:
            raise CheckpointNotFoundError(
                f"checkpoint version {version} not found (only the last {self.keep} are kept)"
            )
        info = _info(version, fields)
        state = loads(
            fields[b"blob"], fields[b"mac"], self.keys, what=f"checkpoint {self.base}:v:{version}"
        )
        return info, state

    def versions(self) -> list[CheckpointInfo]:
        """Newest first, from the metadata only (nothing is unpickled)."""
        out = []
        for raw in self.client.lrange(versions_key(self.base), 0, -1):
            version = int(raw)
            fields = self.client.hmget(version_key(self.base, version), ["meta", "epoch"])
            if fields[0] is not None:
                out.append(CheckpointInfo.read(version, fields[0], fields[1]))
        return out

    def newest(self) -> CheckpointInfo | None:
        """`versions()[0]` in two reads, not one per version kept."""
        raw = self.client.lindex(versions_key(self.base), 0)
        if raw is None:
            return None
        meta, epoch = self.client.hmget(version_key(self.base, int(raw)), ["meta", "epoch"])
        if meta is None:  # dropped since (a newer version came): read them all
            versions = self.versions()
            return versions[0] if versions else None
        return CheckpointInfo.read(int(raw), meta, epoch)

    def request_rollback(self, model: str, version: int) -> None:
        if version not in {i.version for i in self.versions()}:
            raise CheckpointNotFoundError(
                f"checkpoint version {version} not found; kept: "
                f"{[i.version for i in self.versions()]}"
            )
        request = {"model": model, "version": version, "requested_at": time.time()}
        self.client.set(f"{self.base}:rollback", json.dumps(request))

    def take_rollback(self) -> dict[str, Any] | None:
        raw = self.client.getdel(f"{self.base}:rollback")
        return json.loads(raw) if raw else None


def _info(version: int, fields: dict[bytes, Any]) -> CheckpointInfo:
    return CheckpointInfo.read(version, fields[b"meta"], fields.get(b"epoch"))
