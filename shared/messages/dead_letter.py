"""dlq/v1: the envelope of a record a service could not use (schemas/dlq.v1.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

MAX_ORIGINAL_BYTES = 65_536  # a huge bad record must not make its dead letter undeliverable


@dataclass(frozen=True, slots=True)
class DeadLetter:
    KIND: ClassVar[str] = "dlq/v1"
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "source_topic",
        "partition",
        "offset",
        "reason",
        "message",
        "service",
        "original",
        "original_size",
        "truncated",
    )
    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    source_topic: str
    partition: int
    offset: int
    reason: str
    message: str
    service: str
    original: bytes | None
    original_size: int
    truncated: bool

    @classmethod
    def of(
        cls,
        source_topic: str,
        partition: int,
        offset: int,
        reason: str,
        message: str,
        service: str,
        original: bytes | None,
    ) -> DeadLetter:
        """Keeps at most MAX_ORIGINAL_BYTES of the original, and says so."""
        size = len(original) if original is not None else 0
        kept = original[:MAX_ORIGINAL_BYTES] if original is not None else None
        return cls(
            source_topic,
            partition,
            offset,
            reason,
            message[:4096],
            service,
            kept,
            size,
            size > MAX_ORIGINAL_BYTES,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "source_topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "reason": self.reason,
            "message": self.message,
            "service": self.service,
            "original": self.original,
            "original_size": self.original_size,
            "truncated": self.truncated,
        }
