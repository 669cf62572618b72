"""A River metric over the last N (truth, prediction) pairs, computed when it is read.

River's `utils.Rolling` reverts the oldest pair and adds the newest on every update: about
1.5 µs a record in the learner's hot path, for a value read about once a second (status,
checkpoints). Here an update only appends the pair; a read replays the window into a fresh
clone of the metric, so the value depends only on the pairs in the window (River's revert
chain accumulates rounding in float metrics; this does not). A read costs O(N), so windows
above `LAZY_MAX` use River's Rolling, whose reads are free.
"""

from __future__ import annotations

import warnings
from collections import deque
from typing import Any

from river import utils

LAZY_MAX = 10_000


class WindowMetric:
    def __init__(self, metric: Any, window_size: int) -> None:
        self.obj = metric.clone()  # never updated itself: the template of each read
        self.window_size = window_size
        self.window: deque[tuple[Any, Any]] = deque(maxlen=window_size)

    @property
    def requires_labels(self) -> bool:
        return bool(getattr(self.obj, "requires_labels", True))

    def update(self, y_true: Any, y_pred: Any) -> None:
        self.window.append((y_true, y_pred))

    def get(self) -> float:
        metric = self.obj.clone()
        for y_true, y_pred in self.window:
            metric.update(y_true, y_pred)
        return float(metric.get())


def rolling(metric: Any, window: int) -> Any:
    """The metric over the last `window` pairs: lazy up to `LAZY_MAX`, River's beyond."""
    if window <= LAZY_MAX:
        return WindowMetric(metric, window)
    with warnings.catch_warnings():  # River prefers a class, but a clone keeps the parameters
        warnings.simplefilter("ignore", DeprecationWarning)
        return utils.Rolling(metric.clone(), window_size=window)
