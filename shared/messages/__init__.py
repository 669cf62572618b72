"""Message types on Headwater's topics; each mirrors a file in `schemas/` (a test checks)."""

from shared.messages.dead_letter import DeadLetter
from shared.messages.drift_alert import DriftAlert
from shared.messages.errors import MessageError
from shared.messages.event import Event, Label
from shared.messages.features import FeatureRecord
from shared.messages.lineage import Lineage
from shared.messages.model_event import ModelEvent
from shared.messages.outcome import Outcome
from shared.messages.prediction import Prediction

__all__ = [
    "DeadLetter",
    "DriftAlert",
    "Event",
    "FeatureRecord",
    "Label",
    "Lineage",
    "MessageError",
    "ModelEvent",
    "Outcome",
    "Prediction",
]
