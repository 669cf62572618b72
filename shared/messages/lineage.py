"""Where a record came from: the (topic, partition, offset) of its input (DESIGN §2)."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.messages.errors import MessageError
from shared.messages.fields import check_fields, non_negative_int, require_mapping


class Lineage(msgspec.Struct, frozen=True, order=True):
    topic: str
    partition: int
    offset: int

    def to_wire(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    @classmethod
    def from_wire(cls, obj: Any) -> Lineage:
        m = require_mapping(obj, "lineage")
        check_fields(m, "lineage", ("topic", "partition", "offset"), _FIELDS)
        topic = m["topic"]
        if not isinstance(topic, str) or not topic:
            raise MessageError("wrong_type", "lineage.topic must be a non-empty string")
        return cls(
            topic,
            non_negative_int(m["partition"], "lineage.partition"),
            non_negative_int(m["offset"], "lineage.offset"),
        )


_FIELDS = frozenset({"topic", "partition", "offset"})
