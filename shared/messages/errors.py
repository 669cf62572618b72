"""Validation errors with stable reason codes (used in dead-letter envelopes and logs)."""

from __future__ import annotations


class MessageError(ValueError):
    """`reason` is a short code; the message names the offending field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
