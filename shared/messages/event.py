"""event/v1 and label/v1 (schemas/event.v1.json, schemas/label.v1.json)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from shared.messages.fields import (
    MAX_ID_LEN,
    Scalar,
    check_fields,
    feature_map,
    id_string,
    label_value,
    require_mapping,
    timestamp,
)


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    """A Struct (built and encoded in C, as the same bytes as `to_wire`, a test checks):
    every service builds one per record. A null label is left out, as in `to_wire`."""

    KIND: ClassVar[str] = "event/v1"
    REQUIRED: ClassVar[tuple[str, ...]] = ("event_id", "entity", "ts", "data")
    OPTIONAL: ClassVar[tuple[str, ...]] = ("label",)

    event_id: str
    entity: str
    ts: float
    data: dict[str, Scalar]
    label: Scalar = None

    @classmethod
    def from_wire(cls, obj: Any) -> Event:
        """Validate a decoded record; raises MessageError with a reason code."""
        if type(obj) is dict and _EVENT_REQUIRED <= obj.keys() <= _EVENT_FIELDS:
            # Hot path for well-formed records: exact types, no error text to build.
            event_id, entity, ts, label = (
                obj["event_id"],
                obj["entity"],
                obj["ts"],
                obj.get("label"),
            )
            if (
                type(event_id) is str
                and 0 < len(event_id) <= MAX_ID_LEN
                and type(entity) is str
                and 0 < len(entity) <= MAX_ID_LEN
                and type(ts) is float
                and 0.0 <= ts < math.inf
                and (
                    label is None
                    or type(label) is bool
                    or (type(label) is str and 0 < len(label) <= MAX_ID_LEN)
                )
            ):
                return cls(event_id, entity, ts, feature_map(obj["data"], "data"), label)
        return cls._checked(obj)

    @classmethod
    def _checked(cls, obj: Any) -> Event:
        m = require_mapping(obj, cls.KIND)
        check_fields(m, cls.KIND, cls.REQUIRED, _EVENT_FIELDS)
        return cls(
            event_id=id_string(m["event_id"], "event_id"),
            entity=id_string(m["entity"], "entity"),
            ts=timestamp(m["ts"], "ts"),
            data=feature_map(m["data"], "data"),
            label=label_value(m.get("label"), "label", nullable=True),
        )

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "entity": self.entity,
            "ts": self.ts,
            "data": self.data,
        }
        if self.label is not None:
            out["label"] = self.label
        return out

    def without_label(self) -> Event:
        return Event(self.event_id, self.entity, self.ts, self.data)


@dataclass(frozen=True, slots=True)
class Label:
    KIND: ClassVar[str] = "label/v1"
    REQUIRED: ClassVar[tuple[str, ...]] = ("event_id", "entity", "ts", "label")
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    event_id: str
    entity: str
    ts: float
    label: Scalar

    @classmethod
    def from_wire(cls, obj: Any) -> Label:
        m = require_mapping(obj, cls.KIND)
        check_fields(m, cls.KIND, cls.REQUIRED, _LABEL_FIELDS)
        return cls(
            event_id=id_string(m["event_id"], "event_id"),
            entity=id_string(m["entity"], "entity"),
            ts=timestamp(m["ts"], "ts"),
            label=label_value(m["label"], "label", nullable=False),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "entity": self.entity,
            "ts": self.ts,
            "label": self.label,
        }


_EVENT_FIELDS = frozenset(Event.REQUIRED + Event.OPTIONAL)
_EVENT_REQUIRED = frozenset(Event.REQUIRED)
_LABEL_FIELDS = frozenset(Label.REQUIRED + Label.OPTIONAL)
