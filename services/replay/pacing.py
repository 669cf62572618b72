"""Pacing: recorded event-time gaps divided by a speed factor, with an injectable clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def parse_speed(text: str) -> float | None:
    """`max` (as fast as possible) -> None; otherwise a positive factor."""
    if text.strip().lower() in ("max", "0", "inf"):
        return None
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(f"speed must be a positive number or 'max', got {text!r}") from None
    if not speed > 0 or speed == float("inf"):
        raise ValueError(f"speed must be a positive number or 'max', got {text!r}")
    return speed


@dataclass
class Pacer:
    """Sleeps so that event time t is sent at wall time start + (t - t0) / speed."""

    speed: float | None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _origin: tuple[float, float] | None = field(default=None, init=False)

    def wait_for(self, event_time: float) -> float:
        """Returns the seconds slept."""
        if self.speed is None:
            return 0.0
        if self._origin is None:
            self._origin = (self.clock(), event_time)
            return 0.0
        wall0, t0 = self._origin
        delay = wall0 + (event_time - t0) / self.speed - self.clock()
        if delay > 0:
            self.sleep(delay)
            return delay
        return 0.0
