"""One C-level decode-and-check for the commonest record: a well-formed MessagePack event.

msgspec decodes and type-checks a record in one pass, several times faster than MessagePack
decoding followed by the Python validator. It is only a fast path: whenever it declines (JSON,
anything it refuses, an integer time, NaN or infinity, a time at or past `max_ts`), the caller
takes its full route, which gives the reason or repairs the record. Property tests check that
whatever the fast path accepts, the full route accepts unchanged, with the same fields.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Annotated

import msgspec
from msgspec import Meta

from shared.messages.event import Event
from shared.messages.fields import MAX_DATA_FIELDS, MAX_ID_LEN, MAX_STRING_VALUE_LEN

Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LEN)]
# A finite float: msgspec refuses NaN and the infinities in C (every comparison fails for NaN)
Finite = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
Value = Finite | int | bool | None | Annotated[str, Meta(max_length=MAX_STRING_VALUE_LEN)]


class WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    event_id: Id
    entity: Id
    ts: float | int
    # Keys are checked by `bad_keys`, not by an `Id` constraint: msgspec reuses the string
    # objects of the keys it decodes unless they are constrained, and a constrained key cost
    # ~0.5 µs a record here plus ~1 µs in every model, whose dict lookups then compare fresh
    # strings by value instead of by identity.
    data: Annotated[dict[str, Value], Meta(max_length=MAX_DATA_FIELDS)]
    label: bool | Finite | int | Id | None = None


_DECODER = msgspec.msgpack.Decoder(WireEvent)


# A record holds at least 39 bytes besides one data key (field names, ids, time, value), so
# a key over MAX_ID_LEN characters needs a record longer than this: shorter ones skip the scan.
_LONG_KEY_POSSIBLE = MAX_ID_LEN + 32


def bad_keys(data: Mapping[str, object], size: int) -> bool:
    """A key that `Id` refuses: empty, or longer than MAX_ID_LEN."""
    return "" in data or (
        size > _LONG_KEY_POSSIBLE and bool(data) and max(map(len, data)) > MAX_ID_LEN
    )


def fast_event(raw: bytes | None, max_ts: float) -> WireEvent | None:
    """The event if `raw` is a well-formed MessagePack event with a float time in
    [0, max_ts) and no NaN or infinity anywhere; else None (take the full route)."""
    if not raw or raw[0] < 0x80:  # JSON (or nothing): the full route
        return None
    try:
        event = _DECODER.decode(raw)
    except Exception:  # DecodeError, ValidationError, bad UTF-8…: the full route says which
        return None
    ts = event.ts
    if type(ts) is not float or not 0.0 <= ts < max_ts:  # ints are rewritten as floats
        return None
    if bad_keys(event.data, len(raw)):
        return None
    return event


def fast_valid_wire(raw: bytes | None, max_bytes: int) -> WireEvent | None:
    """An event/v1 record as `Event.from_wire(decode(raw))` would read it, by the fast path,
    as the decoded Struct (an Event's fields: a caller that only reads them skips the
    copy); None when the fast path declines (the caller then takes the full route)."""
    # `fast_event(raw, math.inf)` (the full route bounds no time from above), its body
    # inline: the learner's thread runs this for every event (the calls it saves, with the
    # learner's own: 2.1% of its instructions, callgrind). Tests hold both to the full route.
    if raw is None or not raw or len(raw) > max_bytes or raw[0] < 0x80:
        return None
    try:
        event = _DECODER.decode(raw)
    except Exception:
        return None
    ts = event.ts
    if type(ts) is not float or not 0.0 <= ts < math.inf:
        return None
    data = event.data
    if "" in data or (
        len(raw) > _LONG_KEY_POSSIBLE and bool(data) and max(map(len, data)) > MAX_ID_LEN
    ):
        return None
    return event


def fast_valid_event(raw: bytes | None, max_bytes: int) -> Event | None:
    """`fast_valid_wire`, as an Event."""
    wire = fast_valid_wire(raw, max_bytes)
    if wire is None:
        return None
    return Event(wire.event_id, wire.entity, wire.ts, wire.data, wire.label)
