"""The HMAC keys of checkpoint blobs, with rotation: one key signs, any listed key verifies."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CheckpointKeys:
    """`current` signs new blobs; `old` keys (a rotation in progress) still verify blobs
    written before it, so checkpoints restore while services move to the new key."""

    current: bytes = field(repr=False)
    old: tuple[bytes, ...] = field(default=(), repr=False)

    def sign(self, blob: bytes) -> bytes:
        return hmac.new(self.current, blob, hashlib.sha256).digest()

    def verifies(self, blob: bytes, mac: bytes) -> bool:
        """True when any known key signed `blob`; constant time per key."""
        return any(
            hmac.compare_digest(hmac.new(key, blob, hashlib.sha256).digest(), mac)
            for key in (self.current, *self.old)
        )
