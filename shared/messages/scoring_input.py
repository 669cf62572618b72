"""What a model scores: an event from `events.valid`, or the event a features record was
computed from with its features as the data. The learner and the scorers read the same
input, so both decode it here."""

from __future__ import annotations

from typing import Any

from shared.messages.event import Event
from shared.messages.features import FeatureRecord
from shared.messages.lineage import Lineage


def scoring_event(obj: Any, from_features: bool) -> tuple[Event, Lineage | None]:
    """The event to score, and for a features record the lineage of its upstream event
    (a features service re-emits records after a restart: readers drop them by it).
    Raises MessageError for a record that is not one."""
    if from_features:
        record = FeatureRecord.from_wire(obj)
        e = record.event
        return Event(e.event_id, e.entity, e.ts, record.features, e.label), record.lineage
    return Event.from_wire(obj), None
