"""Which entities a canary serves: a stable hash of the entity, not a coin per request.

An entity always sees the same model while the share holds, and raising the share only adds
entities (the challenger's entities at 10% stay its entities at 20%), so no entity flips back
and forth as a rollout widens. The salt (the rollout's name) decorrelates two rollouts: the
same 10% of entities are not every challenger's test group.
"""

from __future__ import annotations

import hashlib

SCALE = float(2**64)


def position(entity: str, salt: str) -> float:
    """Where the entity falls in [0, 1) for this rollout: uniform over entities, fixed."""
    digest = hashlib.blake2b(entity.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / SCALE


def serves_challenger(entity: str, share: float, salt: str) -> bool:
    """True for the entities in the challenger's `share` (0 to 1) of this rollout."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a canary share is between 0 and 1, not {share}")
    return position(entity, salt) < share
