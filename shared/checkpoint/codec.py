"""Checkpoint blobs: pickled state, authenticated with HMAC-SHA256 before any unpickling.

Unpickling runs code named by the blob, so a blob whose MAC does not verify is refused
without being touched. River trees pickle deeply nested, hence the raised recursion limit.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.checkpoint import fast_restore
from shared.checkpoint.keys import CheckpointKeys

DEEP_RECURSION = 20_000


class CheckpointTamperedError(RuntimeError):
    """The blob's MAC does not match: it was altered, or signed with a key not configured."""


class CheckpointFormatError(RuntimeError):
    """The MAC verifies but the state will not unpickle: the blob was written by a version
    of Headwater (or of River, vowpal-wabbit-next) whose classes have changed since."""


# What pickle raises when a class was renamed, moved or reshaped since the blob was written.
_INCOMPATIBLE = (
    pickle.UnpicklingError,
    ImportError,
    AttributeError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    EOFError,
)


@contextmanager
def deep_recursion() -> Iterator[None]:
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, DEEP_RECURSION))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def dumps(state: Any) -> bytes:
    """Pickled so that restored models run at full speed (see fast_restore); the learner's
    model process ships its state this way too."""
    with deep_recursion():
        return fast_restore.dumps(state, protocol=5)


def loads(blob: bytes, mac: bytes, keys: CheckpointKeys, *, what: str = "checkpoint") -> Any:
    """Verify, then unpickle; a bad MAC raises before pickle sees a byte."""
    if not keys.verifies(blob, mac):
        raise CheckpointTamperedError(
            f"{what} failed HMAC verification (tampered, or signed with a key that is neither "
            "HEADWATER_CHECKPOINT_KEY nor in HEADWATER_CHECKPOINT_OLD_KEYS); refusing to load it"
        )
    with deep_recursion():
        try:
            return pickle.loads(blob)
        except _INCOMPATIBLE as exc:
            raise CheckpointFormatError(
                f"{what} is authentic but cannot be read by this version of Headwater or its "
                f"libraries ({type(exc).__name__}: {exc}); run the version that wrote it, or "
                "remove the service's checkpoints and run it with --reset to start over "
                "deliberately"
            ) from exc
