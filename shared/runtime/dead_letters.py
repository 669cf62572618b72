"""Dead letters: a record a service cannot use goes to the dead-letter topic with its reason."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from shared.codec import encode
from shared.messages import DeadLetter, Lineage
from shared.metrics import StreamMetrics

log = logging.getLogger(__name__)

LOG_EVERY = 1000  # per reason, the first dead letter is logged, then every this many

Produce = Callable[[str, bytes, bytes | None], object]  # (topic, value, key)


class DeadLetters:
    """Builds the dlq/v1 envelope, sends it (keyed as the original was), counts it."""

    def __init__(
        self,
        service: str,
        topic: str,
        metrics: StreamMetrics,
        produce: Produce | None = None,
        count_records: bool = True,
    ) -> None:
        """`produce` None: the caller sends `envelope`'s bytes itself (an async producer).
        `count_records` False: the service counts records_total{dead_lettered} and
        dead_letters_total itself (ingest, from its checkpointed counts)."""
        self.service = service
        self.topic = topic
        self._produce = produce
        self._count_records = count_records
        self.metrics = metrics  # series made at the first dead letter, not before
        self.sent = 0
        self.by_reason: Counter[str] = Counter()

    def send(
        self, lineage: Lineage, raw: bytes | None, key: bytes | None, reason: str, message: str
    ) -> None:
        assert self._produce is not None, "no producer: send `envelope(...)` yourself"
        self._produce(self.topic, self.envelope(lineage, raw, reason, message), key)

    def envelope(self, lineage: Lineage, raw: bytes | None, reason: str, message: str) -> bytes:
        """The encoded envelope, counted as sent."""
        envelope = DeadLetter.of(
            lineage.topic, lineage.partition, lineage.offset, reason, message, self.service, raw
        )
        self.sent += 1
        self.by_reason[reason] += 1
        metrics = self.metrics
        metrics.records_out.labels(self.topic).inc()
        if self._count_records:
            metrics.records.labels("dead_lettered").inc()
            metrics.dead_letters.labels(reason).inc()
        n = self.by_reason[reason]
        if n == 1 or n % LOG_EVERY == 0:
            log.warning(
                "record dead-lettered",
                extra={
                    "fields": {
                        "reason": reason,
                        "error": message,
                        "topic": lineage.topic,
                        "partition": lineage.partition,
                        "offset": lineage.offset,
                        "dead_lettered_for_this_reason": n,
                    }
                },
            )
        return encode(envelope.to_wire())
