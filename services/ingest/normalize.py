"""What producers send, made into event/v1 and label/v1 records — or refused with a reason.

Well-formed records take the validators' fast path untouched. Only a record the validator
refuses is looked at again: an ISO-8601 or integer time is converted, the spec's entity field
is moved into `entity`, and the spec's policy decides about unknown fields and NaN/infinity
in `data`. Whatever is still wrong after that is the record's final answer.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from shared.messages import Event, Label, MessageError
from shared.spec import IngestPolicy

# Later than year 9999 cannot be a real event time; such numbers break window arithmetic.
MAX_TS = 253_402_300_800.0
_EVENT_FIELDS = frozenset(Event.REQUIRED + Event.OPTIONAL)
_LABEL_FIELDS = frozenset(Label.REQUIRED + Label.OPTIONAL)


def normalise_event(obj: Any, policy: IngestPolicy) -> tuple[Event, bool]:
    """The event, and whether it differs from what was sent (then it must be re-encoded)."""
    try:
        event = Event.from_wire(obj)
        changed = type(obj["ts"]) is not float  # an integer time is written back as a float
    except MessageError as first:
        repaired = _repair(obj, first, policy, _EVENT_FIELDS)
        event = Event.from_wire(repaired)
        changed = True
    _check_time(event.ts)
    return event, changed


def normalise_label(obj: Any, policy: IngestPolicy) -> tuple[Label, bool]:
    try:
        label = Label.from_wire(obj)
        changed = type(obj["ts"]) is not float
    except MessageError as first:
        label = Label.from_wire(_repair(obj, first, policy, _LABEL_FIELDS))
        changed = True
    _check_time(label.ts)
    return label, changed


def _check_time(ts: float) -> None:
    if ts >= MAX_TS:
        raise MessageError("bad_value", f"ts {ts!r} is after the year 9999 (UTC epoch seconds)")


def _repair(obj: Any, error: MessageError, policy: IngestPolicy, allowed: frozenset[str]) -> Any:
    """A copy with what the policy allows fixed; anything else is re-raised as it was."""
    if not isinstance(obj, dict):
        raise error
    fixed = dict(obj)
    if (
        policy.entity_field != "entity"
        and "entity" not in fixed
        and policy.entity_field in fixed
        and policy.entity_field not in allowed
    ):
        fixed["entity"] = fixed.pop(policy.entity_field)
    ts = fixed.get("ts")
    if isinstance(ts, str):
        fixed["ts"] = parse_time(ts)
    elif type(ts) is int:
        fixed["ts"] = float(ts)
    if policy.unknown_fields == "drop":
        for key in [k for k in fixed if k not in allowed]:
            del fixed[key]
    data = fixed.get("data")
    if (
        policy.non_finite == "missing"
        and isinstance(data, dict)
        and any(type(v) is float and not math.isfinite(v) for v in data.values())
    ):
        fixed["data"] = {
            k: None if type(v) is float and not math.isfinite(v) else v for k, v in data.items()
        }
    return fixed


def parse_time(text: str) -> float:
    """ISO-8601 to UTC epoch seconds; a time without an offset is taken as UTC."""
    if len(text) > 64:
        raise MessageError("bad_value", "ts: a time string longer than 64 characters")
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        raise MessageError(
            "bad_value", f"ts: {text[:64]!r} is neither epoch seconds nor an ISO-8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
