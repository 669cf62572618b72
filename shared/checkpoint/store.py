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
import time
from dataclasses import dataclass
from typing import Any

import redis

from shared.checkpoint.codec import dumps, loads
from shared.checkpoint.keys import CheckpointKeys
from shared.keys import PipelineKeys

_WRITE = """
local base = KEYS[1]
local current = tonumber(redis.call('GET', base .. ':epoch') or '0')
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


class StaleEpochError(RuntimeError):
    """Another owner took over: this writer is fenced off."""


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
    ) -> None:
        """`key`: the deployment's keys, or one key (tests, tools) that both signs and verifies."""
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.client = client
        self.base = PipelineKeys(pipeline).checkpoint(service)
        self.keys = key if isinstance(key, CheckpointKeys) else CheckpointKeys(key)
        self.keep = keep
        self._write = client.register_script(_WRITE)
        self.last_bytes = 0  # size of the blob this store last wrote (0: none yet)

    def new_epoch(self) -> int:
        """Claim ownership: every older epoch's writes fail from now on."""
        return int(self.client.incr(f"{self.base}:epoch"))

    def current_epoch(self) -> int:
        return int(self.client.get(f"{self.base}:epoch") or 0)

    def write(self, epoch: int, state: Any, meta: dict[str, Any]) -> int:
        """One atomic, fenced step; returns the new version."""
        blob = dumps(state)
        meta = {**meta, "created_at": time.time(), "epoch": epoch, "bytes": len(blob)}
        try:
            version = self._write(
                keys=[self.base],
                args=[epoch, blob, self.keys.sign(blob), json.dumps(meta), self.keep],
            )
        except redis.ResponseError as exc:
            if "STALE_EPOCH" in str(exc):
                raise StaleEpochError(str(exc).replace("STALE_EPOCH ", "")) from None
            raise
        self.last_bytes = len(blob)
        return int(version)

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
                f"(use noeviction), or delete {self.base}:* to start over deliberately"
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
