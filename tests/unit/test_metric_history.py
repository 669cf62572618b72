"""The learner's metric history: bounded, even over the whole stream, restorable."""

import itertools
import pickle

import pytest

from services.learner.metric_history import MetricHistory


def values(labels: int) -> dict[str, dict[str, float]]:
    return {"logreg": {"Accuracy": labels / 1e6}}


def test_a_point_is_taken_once_per_run_of_labels_even_when_labels_come_in_batches():
    history = MetricHistory(every=100, capacity=50)
    taken = [n for n in range(0, 1001, 30) if history.observe(n, 2 * n, 0.0, None, values(n))]
    assert taken == [120, 210, 300, 420, 510, 600, 720, 810, 900]
    assert [p.events for p in history.points] == [2 * n for n in taken]
    assert history.points[0].values == {"logreg": {"Accuracy": 120 / 1e6}}


def test_the_series_stays_bounded_and_covers_the_whole_stream():
    history = MetricHistory(every=10, capacity=64)
    end = 1_000_000
    for n in range(0, end + 1, 7):
        history.observe(n, n, float(n), float(n), values(n))
        assert len(history.points) <= 64
    labels = [p.labels for p in history.points]
    assert labels == sorted(labels)
    assert labels[0] <= 2 * 10  # the start of the stream is still there
    assert end - labels[-1] <= history.every  # and its end
    gaps = [b - a for a, b in itertools.pairwise(labels)]
    assert max(gaps) <= 2 * history.every  # evenly: no gap wider than two runs
    assert len(history.points) >= 64 // 2


def test_a_restored_history_goes_on_as_the_original():
    original = MetricHistory(every=5, capacity=8)
    copy = None
    for n in range(200):
        if n == 77:
            copy = pickle.loads(pickle.dumps(original))
        if copy is not None:
            copy.observe(n, n, 0.0, None, values(n))
        original.observe(n, n, 0.0, None, values(n))
    assert copy is not None
    assert copy.to_wire() == original.to_wire()


def test_values_are_copied_when_taken():
    history = MetricHistory(every=1, capacity=4)
    live = {"m": {"Accuracy": 0.5}}
    history.observe(1, 1, 0.0, None, live)
    live["m"]["Accuracy"] = 0.9
    assert history.points[0].values == {"m": {"Accuracy": 0.5}}


def test_a_history_that_cannot_hold_a_curve_is_refused():
    with pytest.raises(ValueError, match="every >= 1 and capacity >= 2"):
        MetricHistory(every=0)
    with pytest.raises(ValueError, match="every >= 1 and capacity >= 2"):
        MetricHistory(capacity=1)


def test_labels_counted_as_they_are_applied_say_when_a_point_is_due():
    history = MetricHistory(every=10, capacity=8)
    due = []
    for n in (3, 3, 3, 3, 9, 1):  # as the publisher counts them
        history.labels += n
        if history.labels >= history.next_due:
            due.append(history.labels)
            history.observe(history.labels, 0, 0.0, None, values(history.labels))
    assert due == [12, 21]
    assert history.labels == 22
