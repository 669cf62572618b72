import math

import pytest
from river import stream

from services.replay.pacing import Pacer, parse_speed
from services.replay.plan import plan
from shared.messages import Event, Label


def events(n, labelled=True):
    return [
        Event(f"e{i}", "u", 100.0 + i, {"x": i}, (i % 2 == 0) if labelled else None)
        for i in range(n)
    ]


def order(sends):
    return [(s.kind, s.message.event_id) for s in sends]


def test_inline_labels_are_sent_as_recorded():
    sends = list(plan(events(3), None))
    assert order(sends) == [("event", "e0"), ("event", "e1"), ("event", "e2")]
    assert sends[0].message.label is True


@pytest.mark.parametrize("delay", [0, 1, 2, 5])
def test_label_order_is_river_simulate_qa(delay):
    evs = events(8)
    sends = list(plan(evs, delay))
    river_order = [
        ("event" if y is None else "label", f"e{i}")
        for i, _, y in stream.simulate_qa(
            ((e.data, e.label) for e in evs), moment=None, delay=delay
        )
    ]
    assert order(sends) == river_order
    assert all(s.message.label is None for s in sends if s.kind == "event")


def test_label_is_stamped_with_the_time_of_the_event_it_precedes():
    sends = list(plan(events(5), 2))
    label_e0 = next(s for s in sends if s.kind == "label" and s.message.event_id == "e0")
    assert isinstance(label_e0.message, Label)
    assert label_e0.message.ts == 102.0  # revealed just before e2
    trailing = [s for s in sends if s.kind == "label"][-1]
    assert trailing.message.event_id == "e4"
    assert trailing.message.ts == math.nextafter(104.0, math.inf)


def test_unlabelled_events_send_no_label():
    assert [s.kind for s in plan(events(3, labelled=False), 1)] == ["event"] * 3


def test_negative_delay_is_refused():
    with pytest.raises(ValueError, match=">= 0"):
        list(plan(events(1), -1))


def test_parse_speed():
    assert parse_speed("max") is None
    assert parse_speed("2.5") == 2.5
    for bad in ("-1", "fast", "nan", "inf2"):
        with pytest.raises(ValueError, match="speed must be"):
            parse_speed(bad)


def test_pacer_keeps_recorded_gaps_divided_by_speed():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    pacer = Pacer(2.0, clock=lambda: now[0], sleep=sleep)
    for t in (10.0, 12.0, 12.0, 16.0):
        pacer.wait_for(t)
    assert slept == [1.0, 2.0]
    assert Pacer(None).wait_for(1e9) == 0.0
