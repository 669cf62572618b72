"""The fast path for a features/v1 record, what the learner and the scorers read behind the
features service: one C-level decode-and-check by msgspec, as shared/messages/fast_event.py
does for events. Decoding it with msgpack and checking it in Python was the learner's largest
cost on a features topic (about a quarter of its thread's time).

Only a fast path: whenever it declines, the caller takes the full route
(`FeatureRecord.from_wire(decode(raw))`), which names the defect. Property tests check that
whatever it accepts, the full route accepts with the same fields.
"""

from __future__ import annotations

import math
from typing import Annotated

import msgspec
from msgspec import Meta

from shared.messages.event import Event
from shared.messages.fast_event import Value, WireEvent, bad_keys
from shared.messages.fields import MAX_DATA_FIELDS
from shared.messages.lineage import Lineage

Offset = Annotated[int, Meta(ge=0)]  # MessagePack carries none past the full route's bound


class WireLineage(msgspec.Struct, forbid_unknown_fields=True):
    topic: Annotated[str, Meta(min_length=1)]
    partition: Offset
    offset: Offset


class WireFeatures(msgspec.Struct, forbid_unknown_fields=True):
    event: WireEvent
    features: Annotated[dict[str, Value], Meta(max_length=MAX_DATA_FIELDS)]
    late_windows: list[str]
    lineage: WireLineage


_DECODER = msgspec.msgpack.Decoder(WireFeatures)


def fast_features_event(raw: bytes | None, max_bytes: int) -> tuple[Event, Lineage] | None:
    """What `scoring_event(decode(raw), from_features=True)` returns (the event with its
    features as the data, and the lineage), or None: take the full route."""
    if not raw or len(raw) > max_bytes or raw[0] < 0x80:  # JSON or nothing: the full route
        return None
    try:
        record = _DECODER.decode(raw)
    except Exception:  # DecodeError, ValidationError, bad UTF-8…: the full route says which
        return None
    e, size = record.event, len(raw)
    if type(e.ts) is not float or not 0.0 <= e.ts < math.inf:  # ints are rewritten as floats
        return None
    if bad_keys(e.data, size) or bad_keys(record.features, size):
        return None
    lineage = record.lineage
    return (
        Event(e.event_id, e.entity, e.ts, record.features, e.label),
        Lineage(lineage.topic, lineage.partition, lineage.offset),
    )
