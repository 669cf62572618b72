"""Ingest's fast path: a well-formed MessagePack event that needs no repair travels as it
came. The decoder is shared (shared/messages/fast_event.py); ingest bounds times at year
9999, as its full route does."""

from __future__ import annotations

from services.ingest.normalize import MAX_TS
from shared.messages.fast_event import WireEvent
from shared.messages.fast_event import fast_event as _fast_event


def fast_event(raw: bytes) -> WireEvent | None:
    """The event if `raw` needs no normalisation; None sends it down the full route."""
    return _fast_event(raw, MAX_TS)
