"""A reference window against the most recent one: has a distribution moved?

Used for covariate drift (one per numeric feature) and prediction drift (one per model).
Pure and deterministic: the same values in the same order give the same answers, and the
state pickles with the monitor's checkpoint.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import numpy as np
from scipy import stats

from shared.spec.drift import DistributionDriftSpec


class TwoSampleWindow:
    """Skips `warmup` values, collects `reference_size` as the reference, then keeps the
    last `window_size` and tests them against it every `check_every` values: two-sample
    Kolmogorov-Smirnov for numbers, chi-square for classes. A test below `alpha` is a
    drift; the reference is then collected anew from the values after it, so one shift
    is reported once."""

    def __init__(self, spec: DistributionDriftSpec, numeric: bool) -> None:
        self.numeric = numeric
        self.warmup = spec.warmup
        self.reference_size = spec.reference_size
        self.window_size = spec.window_size
        self.check_every = spec.check_every
        self.alpha = spec.alpha
        self.seen = 0
        self._collecting: list[Any] = []
        self._reference: np.ndarray[Any, Any] | Counter[Any] | None = None
        self._recent: deque[Any] = deque(maxlen=spec.window_size)
        self._recent_counts: Counter[Any] = Counter()
        self._since_check = 0

    @property
    def test(self) -> str:
        return "ks_2samp" if self.numeric else "chi2"

    def update(self, value: Any) -> dict[str, float] | None:
        """The test's figures when this value completes a window that has drifted."""
        self.seen += 1
        if self.seen <= self.warmup:
            return None
        if self._reference is None:
            self._collecting.append(value)
            if len(self._collecting) == self.reference_size:
                self._reference = (
                    np.sort(np.asarray(self._collecting, dtype=float))
                    if self.numeric
                    else Counter(self._collecting)
                )
                self._collecting = []
            return None
        if not self.numeric:
            if len(self._recent) == self.window_size:
                self._recent_counts[self._recent[0]] -= 1
            self._recent_counts[value] += 1
        self._recent.append(value)
        self._since_check += 1
        if len(self._recent) < self.window_size or self._since_check < self.check_every:
            return None
        self._since_check = 0
        figures = self._numeric_test() if self.numeric else self._class_test()
        if figures["p_value"] >= self.alpha:
            return None
        self._reference = None  # collected anew after the shift
        self._recent.clear()
        self._recent_counts.clear()
        return figures

    def _numeric_test(self) -> dict[str, float]:
        reference = self._reference
        assert isinstance(reference, np.ndarray)
        recent = np.asarray(self._recent, dtype=float)
        result = stats.ks_2samp(reference, recent)
        return {
            "statistic": float(result.statistic),
            "p_value": float(result.pvalue),
            "reference_mean": float(reference.mean()),
            "window_mean": float(recent.mean()),
            "reference_std": float(reference.std()),
            "window_std": float(recent.std()),
            "reference_size": float(len(reference)),
            "window_size": float(len(recent)),
        }

    def _class_test(self) -> dict[str, float]:
        reference = self._reference
        assert isinstance(reference, Counter)
        recent = self._recent_counts
        classes = sorted(
            {c for c, n in reference.items() if n} | {c for c, n in recent.items() if n}, key=repr
        )
        figures = {
            "classes": float(len(classes)),
            "reference_size": float(sum(reference.values())),
            "window_size": float(len(self._recent)),
        }
        if len(classes) < 2:  # one class on both sides: nothing has moved
            return {"statistic": 0.0, "p_value": 1.0, "dof": 0.0, **figures}
        table = [[reference[c] for c in classes], [recent[c] for c in classes]]
        result = stats.chi2_contingency(table, correction=False)
        return {
            "statistic": float(result.statistic),
            "p_value": float(result.pvalue),
            "dof": float(result.dof),
            **figures,
        }
