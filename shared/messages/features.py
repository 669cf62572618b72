"""features/v1: an event with its computed features (schemas/features.v1.json)."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from shared.messages.errors import MessageError
from shared.messages.event import Event
from shared.messages.fields import (
    Scalar,
    check_fields,
    feature_map,
    require_mapping,
)
from shared.messages.lineage import Lineage


class FeatureRecord(msgspec.Struct, frozen=True):
    """Encoded directly (the same bytes as `to_wire`, a test checks)."""

    KIND: ClassVar[str] = "features/v1"
    REQUIRED: ClassVar[tuple[str, ...]] = ("event", "features", "late_windows", "lineage")
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    event: Event
    features: dict[str, Scalar]
    late_windows: tuple[str, ...]
    lineage: Lineage  # the events.valid record it was computed from

    def to_wire(self) -> dict[str, Any]:
        return {
            "event": self.event.to_wire(),
            "features": self.features,
            "late_windows": list(self.late_windows),
            "lineage": self.lineage.to_wire(),
        }

    @classmethod
    def from_wire(cls, obj: Any) -> FeatureRecord:
        m = require_mapping(obj, cls.KIND)
        check_fields(m, cls.KIND, cls.REQUIRED, _FIELDS)
        late = m["late_windows"]
        if not isinstance(late, list) or not all(isinstance(w, str) for w in late):
            raise MessageError("wrong_type", "late_windows must be a list of window names")
        return cls(
            Event.from_wire(m["event"]),
            feature_map(m["features"], "features"),
            tuple(late),
            Lineage.from_wire(m["lineage"]),
        )


_FIELDS = frozenset(FeatureRecord.REQUIRED + FeatureRecord.OPTIONAL)
