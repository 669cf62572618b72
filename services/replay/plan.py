"""What replay sends, in order — pure, so label delays and pacing are testable without Kafka.

With `label_delay = k`, labels go to the labels topic: the label of event j is sent just
before event j + k and stamped with that event's time, River's `simulate_qa` order (where
a delay of 0 behaves as 1: a label cannot precede its own question). Labels still pending
when the stream ends are sent after it, stamped just after the last event time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from shared.messages import Event, Label


@dataclass(frozen=True, slots=True)
class Send:
    kind: str  # "event" or "label"
    message: Event | Label
    at: float  # event time that paces this send

    @property
    def key(self) -> bytes:
        return self.message.entity.encode()


def plan(events: Iterable[Event], label_delay: int | None) -> Iterator[Send]:
    """`label_delay=None` keeps labels inline; otherwise they move to the labels topic."""
    if label_delay is None:
        for event in events:
            yield Send("event", event, event.ts)
        return
    if label_delay < 0:
        raise ValueError("label delay must be >= 0")
    delay = max(1, label_delay)
    pending: deque[tuple[int, Event]] = deque()
    last_ts: float | None = None
    for index, event in enumerate(events):
        while pending and index - pending[0][0] >= delay:
            _, labelled = pending.popleft()
            yield Send("label", _label(labelled, event.ts), event.ts)
        yield Send("event", event.without_label(), event.ts)
        if event.label is not None:
            pending.append((index, event))
        last_ts = event.ts
    if last_ts is not None:
        end = math.nextafter(last_ts, math.inf)
        for _, labelled in pending:
            yield Send("label", _label(labelled, end), end)


def _label(event: Event, ts: float) -> Label:
    return Label(event_id=event.event_id, entity=event.entity, ts=ts, label=event.label)
