"""The API's watermark cache: a request reads what the refresher heard, never Kafka; a figure
older than the cache's age is unknown; partitions no request asks about are let go."""

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from services.api.lag import UNKNOWN, Mark, WatermarkCache, Watermarks

P = ("features", 0)


def test_a_partition_is_unknown_until_heard_and_wanted_from_the_first_ask():
    cache = WatermarkCache(max_age_s=4.0)
    assert cache.due(0.0) == []  # nothing asked: nothing to refresh
    assert cache.get(P, 0.0) == (UNKNOWN, True)  # new: worth waking the refresher for
    assert cache.get(P, 0.1) == (UNKNOWN, False)
    assert cache.due(0.2) == [P]
    cache.put(P, 120, 0.5)
    assert cache.get(P, 1.5) == (Mark(120, 1.0), False)


def test_a_figure_is_refreshed_at_half_the_age_and_unknown_past_it():
    cache = WatermarkCache(max_age_s=4.0)
    cache.get(P, 0.0)
    cache.put(P, 7, 0.0)
    assert cache.due(1.9) == []
    assert cache.due(2.0) == [P]
    assert cache.get(P, 4.0) == (Mark(7, 4.0), False)
    assert cache.get(P, 4.01)[0] == UNKNOWN  # Kafka did not answer since: the lag is unknown


def test_partitions_nobody_asks_about_are_forgotten():
    cache = WatermarkCache(max_age_s=4.0, forget_s=60.0)
    other = ("labels", 1)
    cache.get(P, 0.0)
    cache.get(other, 50.0)
    assert cache.due(61.0) == [other]  # P was last asked about 61 s ago
    assert cache.get(P, 62.0) == (UNKNOWN, True)  # asked again: new again


def test_the_age_must_be_positive():
    with pytest.raises(ValueError, match="max_age_s"):
        WatermarkCache(0)


class SlowKafka:
    """A client whose answers take `delay` seconds, or time out."""

    def __init__(self, delay: float, highs: dict[tuple[str, int], int]) -> None:
        self.delay = delay
        self.highs = highs
        self.asked: list[tuple[str, int]] = []
        self.closed = False

    def get_watermark_offsets(self, tp, timeout):
        key = (tp.topic, tp.partition)
        self.asked.append(key)
        time.sleep(min(self.delay, timeout))
        if key not in self.highs:
            code = KafkaError._TIMED_OUT if self.delay >= timeout else KafkaError._UNKNOWN_PARTITION
            raise KafkaException(KafkaError(code))
        return 0, self.highs[key]

    def close(self):
        self.closed = True


def refresher(client: SlowKafka, timeout_s: float = 1.0) -> Watermarks:
    marks = Watermarks("unused:9092", max_age_s=2.0, timeout_s=timeout_s)
    marks._consumer = client  # type: ignore[assignment]
    return marks.start()


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_requests_never_wait_on_a_slow_kafka():
    client = SlowKafka(delay=0.5, highs={P: 42})
    marks = refresher(client)
    try:
        started = time.monotonic()
        first = marks.high(*P)
        assert time.monotonic() - started < 0.05
        assert first == UNKNOWN
        wait_for(lambda: marks.high(*P).high == 42)
        mark = marks.high(*P)
        assert mark.age_s is not None
        assert 0 <= mark.age_s < 2.0
    finally:
        marks.close()
    assert client.closed


def test_one_refused_partition_does_not_starve_the_others_but_silence_ends_the_round():
    refused, fine = ("gone", 0), ("features", 1)
    client = SlowKafka(delay=0.0, highs={fine: 9})
    marks = refresher(client)
    try:
        marks.high(*refused)
        marks.high(*fine)
        wait_for(lambda: marks.high(*fine).high == 9)  # asked after the refused one
        assert marks.high(*refused) == UNKNOWN
    finally:
        marks.close()

    silent = SlowKafka(delay=0.3, highs={})
    marks = refresher(silent, timeout_s=0.2)
    try:
        marks.high(*refused)
        marks.high(*fine)
        wait_for(lambda: len(silent.asked) >= 2)
        # each round stops at the first partition Kafka does not answer for
        assert silent.asked[:2] == [("features", 1), ("features", 1)]
    finally:
        marks.close()


def test_close_stops_the_refresher():
    marks = refresher(SlowKafka(delay=0.0, highs={}))
    marks.close()
    assert not any(t.name == "watermarks" and t.is_alive() for t in threading.enumerate())
