"""`headwater replay`: validate a recorded stream whole, then send it to Kafka."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.replay.pacing import Pacer
from services.replay.plan import plan
from services.replay.recorded import read_events, scan
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.settings import TopicNames


@dataclass
class ReplayResult:
    events: int = 0
    labels: int = 0


class ReplayInterruptedError(Exception):
    """Ctrl-C during a replay: what was queued has been delivered; `result` says how much."""

    def __init__(self, delivered: int) -> None:
        super().__init__(f"replay interrupted after {delivered} records were delivered")
        self.delivered = delivered


def replay_file(
    path: str | Path,
    producer: SafeProducer,
    topics: TopicNames,
    *,
    label_delay: int | None = None,
    pacer: Pacer | None = None,
    on_validated: Callable[[int], None] = lambda total: None,
    on_sent: Callable[[int], None] = lambda n: None,
) -> ReplayResult:
    """Nothing is sent unless every line is valid; returns counts once all are delivered."""
    pacer = pacer or Pacer(None)
    result = ReplayResult()
    try:
        on_validated(scan(path))
        _send_all(path, producer, topics, label_delay, pacer, on_sent, result)
    except KeyboardInterrupt:
        producer.flush()
        raise ReplayInterruptedError(producer.delivered) from None
    producer.flush()
    return result


def _send_all(
    path: str | Path,
    producer: SafeProducer,
    topics: TopicNames,
    label_delay: int | None,
    pacer: Pacer,
    on_sent: Callable[[int], None],
    result: ReplayResult,
) -> None:
    for send in plan(read_events(path), label_delay):
        pacer.wait_for(send.at)
        is_event = send.kind == "event"
        producer.produce(
            topics.events if is_event else topics.labels,
            encode(send.message.to_wire()),
            send.key,
        )
        if is_event:
            result.events += 1
            on_sent(1)
        else:
            result.labels += 1
