"""Concept drift on a model's error stream: the one rule the monitor alerts by and the
learner reacts by, so both see a drift at the same outcome.

Pure logic: the caller feeds errors in stream order; counts are in observations, never
wall-clock time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

from shared.codec import is_finite_number


def is_number(value: Any) -> TypeGuard[int | float]:
    """A finite number that is not a boolean (shared.codec's test, typed as a guard)."""
    return is_finite_number(value)


def prediction_error(task: str, prediction: Any, label: Any) -> float | None:
    """0/1 for classification (no prediction is an error), the absolute error for
    regression; None where a regression has no number to compare."""
    if task == "regression":
        if not (is_number(prediction) and is_number(label)):
            return None
        return abs(float(prediction) - float(label))
    return 0.0 if prediction == label and prediction is not None else 1.0


def detect_rise(detector: Any, error: float) -> tuple[bool, dict[str, float] | None]:
    """Feed one error. Returns (drift detected, figures): figures only for a rise of the
    error. ADWIN also flags a fall (a model that got better), which is no concept drift to
    alert on or react to: (True, None)."""
    before = getattr(detector, "estimation", None)
    detector.update(error)
    if not detector.drift_detected:
        return False, None
    after = getattr(detector, "estimation", None)
    if before is not None and after is not None and after <= before:
        return True, None
    figures = detector_statistics(detector)
    if before is not None and after is not None:
        figures.update(error_before=float(before), error_after=float(after))
    return True, figures


def detector_statistics(detector: Any) -> dict[str, float]:
    """The detector's public numeric figures (ADWIN: width, estimation, variance, …)."""
    out: dict[str, float] = {}
    for name in dir(detector):
        if name.startswith("_"):
            continue
        try:
            value = getattr(detector, name)
        except Exception:  # a property that cannot answer now
            continue
        if is_number(value):
            out[name] = float(value)
    return out


@dataclass
class CoolDown:
    """At most one alert per `events` observations of one signal."""

    events: int
    seen: int = 0
    quiet_until: int = 0  # no alert before this many observations

    def tick(self) -> None:
        self.seen += 1

    def allow(self) -> bool:
        """Whether an alert may be raised now; if so, the cool-down starts."""
        if self.seen < self.quiet_until:
            return False
        self.quiet_until = self.seen + self.events
        return True
