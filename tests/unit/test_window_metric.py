import pickle
import random
import warnings

import pytest
from river import metrics, utils

from services.learner.window_metric import LAZY_MAX, WindowMetric, rolling


def river_rolling(metric, window):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return utils.Rolling(metric.clone(), window_size=window)


@pytest.mark.parametrize("window", [1, 7, 100])
def test_classification_window_equals_rivers_rolling(window):
    """Accuracy exactly; MacroF1 up to the order in which its per-class scores are summed
    (the classes' order depends on the string hash seed)."""
    rng = random.Random(window)
    ours = WindowMetric(metrics.Accuracy(), window)
    f1 = WindowMetric(metrics.MacroF1(), window)
    theirs, their_f1 = (
        river_rolling(metrics.Accuracy(), window),
        river_rolling(metrics.MacroF1(), window),
    )
    for i in range(500):
        y, p = rng.choice("abc"), rng.choice("abc")
        for m in (ours, f1, theirs, their_f1):
            m.update(y, p)
        if i % 37 == 0:
            assert ours.get() == theirs.get()
            assert f1.get() == pytest.approx(their_f1.get(), rel=1e-12)
    assert ours.get() == theirs.get()
    assert f1.get() == pytest.approx(their_f1.get(), rel=1e-12)


def test_float_window_is_the_metric_of_the_last_pairs():
    rng = random.Random(3)
    pairs = [(rng.gauss(0, 1e6), rng.gauss(0, 1e6)) for _ in range(1000)]
    ours, theirs = WindowMetric(metrics.MAE(), 50), river_rolling(metrics.MAE(), 50)
    for y, p in pairs:
        ours.update(y, p)
        theirs.update(y, p)
    fresh = metrics.MAE()
    for y, p in pairs[-50:]:
        fresh.update(y, p)
    assert ours.get() == fresh.get()  # exactly: no revert chain
    assert ours.get() == pytest.approx(theirs.get(), rel=1e-9)


def test_probabilistic_metrics_take_the_probability_map():
    ours, theirs = WindowMetric(metrics.LogLoss(), 10), river_rolling(metrics.LogLoss(), 10)
    assert ours.requires_labels is False
    for i in range(30):
        y, proba = i % 3 == 0, {True: 0.2 + i / 100, False: 0.8 - i / 100}
        ours.update(y, proba)
        theirs.update(y, proba)
    assert ours.get() == pytest.approx(theirs.get(), rel=1e-12)


def test_a_restored_window_continues_alike():
    m = WindowMetric(metrics.Accuracy(), 5)
    for i in range(8):
        m.update(i % 2, 1)
    restored = pickle.loads(pickle.dumps(m))
    for metric in (m, restored):
        metric.update(1, 1)
    assert restored.get() == m.get() == 0.6
    assert len(restored.window) == 5


def test_large_windows_use_rivers_rolling():
    assert isinstance(rolling(metrics.Accuracy(), LAZY_MAX), WindowMetric)
    assert isinstance(rolling(metrics.Accuracy(), LAZY_MAX + 1), utils.Rolling)
