import pytest
from confluent_kafka import TopicPartition
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.kafka.consumer import group_settings
from shared.kafka.lag import ConsumerLag
from shared.metrics import CheckpointMetrics, ServiceMetrics, StreamMetrics
from shared.settings import Settings, SettingsError, load_settings


def test_settings_come_from_headwater_variables(monkeypatch):
    monkeypatch.setenv("HEADWATER_KAFKA_BOOTSTRAP", "broker:9093")
    monkeypatch.setenv("HEADWATER_REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("HEADWATER_TOPICS__EVENTS", "clicks")
    settings = load_settings()
    assert settings.kafka_bootstrap == "broker:9093"
    assert settings.redis_url.get_secret_value() == "redis://cache:6380/2"
    assert settings.topics.events == "clicks"
    assert settings.topics.predictions == "predictions"


def test_bad_configuration_names_the_variable(monkeypatch):
    monkeypatch.setenv("HEADWATER_BATCH_SIZE", "0")
    monkeypatch.setenv("HEADWATER_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "HEADWATER_BATCH_SIZE: Input should be greater than or equal to 1 (got '0')" in str(
        info.value
    )
    assert "HEADWATER_LOG_FORMAT" in str(info.value)


def test_the_group_protocol_is_classic_or_consumer(monkeypatch):
    assert load_settings().group_protocol == "classic"
    monkeypatch.setenv("HEADWATER_GROUP_PROTOCOL", "consumer")
    assert load_settings().group_protocol == "consumer"
    monkeypatch.setenv("HEADWATER_GROUP_PROTOCOL", "eager")
    with pytest.raises(SettingsError, match="HEADWATER_GROUP_PROTOCOL"):
        load_settings()


def test_the_consumer_protocol_sends_no_client_session_settings():
    """librdkafka refuses session.timeout.ms and heartbeat.interval.ms with it (KIP-848)."""
    assert group_settings("consumer", 6000) == {"group.protocol": "consumer"}
    assert group_settings("classic", 6000) == {
        "group.protocol": "classic",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 2000,
    }
    with pytest.raises(ValueError, match="group protocol 'eager'"):
        group_settings("eager", 6000)


def test_metric_names_follow_prometheus_conventions():
    metrics = ServiceMetrics("learner")
    metrics.counter("records_total", "Records.", ("outcome",)).labels("scored").inc(3)
    metrics.histogram("batch_seconds", "Batch time.").observe(0.01)
    text = generate_latest(metrics.registry).decode()
    assert 'headwater_learner_records_total{outcome="scored"} 3.0' in text
    assert "headwater_learner_batch_seconds_bucket" in text
    with pytest.raises(ValueError, match="must end with _total"):
        metrics.counter("records", "Records.")
    with pytest.raises(ValueError, match="must end with a unit"):
        metrics.histogram("latency", "Latency.")


def test_histograms_may_count_events_and_still_need_a_unit():
    metrics = ServiceMetrics("learner")
    metrics.histogram("label_lag_events", "Lag.", buckets=(0, 1, 5)).observe(3)
    metrics.histogram("blob_bytes", "Size.").observe(10)
    for bad in ("latency", "lag_records", "events_lag", "seconds_total"):
        with pytest.raises(ValueError, match="must end with a unit"):
            metrics.histogram(bad, "Bad.")
        with pytest.raises(ValueError, match="must end with a unit"):
            metrics.bulk_histogram(bad, "Bad.", (1.0,))
    text = generate_latest(metrics.registry).decode()
    assert 'headwater_learner_label_lag_events_bucket{le="5.0"} 1.0' in text


def test_a_bulk_histogram_takes_a_batch_of_observations_at_once():
    metrics = ServiceMetrics("learner")
    lag = metrics.bulk_histogram("label_lag_events", "Lag.", (0, 1, 5, 10))
    lag.observe(0, 1000)  # a batch's inline labels
    lag.observe_all([1, 3, 3, 7, 50])
    lag.observe(2, 0)  # nothing
    (family,) = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    assert (family.name, family.type) == ("headwater_learner_label_lag_events", "histogram")
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("headwater_learner_label_lag_events_bucket", "0.0")] == 1000
    assert samples[("headwater_learner_label_lag_events_bucket", "1.0")] == 1001
    assert samples[("headwater_learner_label_lag_events_bucket", "5.0")] == 1003
    assert samples[("headwater_learner_label_lag_events_bucket", "10.0")] == 1004
    assert samples[("headwater_learner_label_lag_events_bucket", "+Inf")] == 1005
    assert samples[("headwater_learner_label_lag_events_count", None)] == 1005
    assert samples[("headwater_learner_label_lag_events_sum", None)] == 64
    assert lag.count() == 1005


def test_checkpoint_age_counts_from_the_start_then_from_the_last_checkpoint():
    now = [100.0]
    metrics = ServiceMetrics("features")
    checkpoint = CheckpointMetrics(metrics, clock=lambda: now[0])

    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"headwater_features_{name}")

    now[0] = 107.5
    assert value("checkpoint_age_seconds") == 7.5  # none yet: since the start
    checkpoint.written(0.02, 4096)
    now[0] = 110.0
    assert value("checkpoint_age_seconds") == 2.5
    assert value("checkpoint_bytes") == 4096
    assert value("checkpoint_seconds_count") == 1
    # With the service's count of unsaved records: an idle service has nothing at risk
    unsaved = [0]
    checkpoint.unsaved = lambda: unsaved[0]
    now[0] = 500.0
    assert value("checkpoint_age_seconds") == 0.0
    unsaved[0] = 3
    assert value("checkpoint_age_seconds") == 392.5  # since the checkpoint at 107.5


class _Consumer:
    """What ConsumerLag reads of a BatchConsumer: its assignment and cached watermarks."""

    def __init__(self, marks: dict[tuple[str, int], tuple[int, int] | None]) -> None:
        self.marks = marks

    @property
    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.marks]

    def cached_watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        return self.marks[(topic, partition)]


def test_consumer_lag_is_set_once_per_interval_and_forgets_revoked_partitions():
    now = [0.0]
    service = ServiceMetrics("ingest")
    lag = ConsumerLag(
        StreamMetrics.create(service, "in").consumer_lag, interval_s=1.0, clock=lambda: now[0]
    )
    consumer = _Consumer({("a", 0): (0, 100), ("a", 1): (0, 0), ("b", 0): None, ("c", 0): (5, 9)})
    asked = []

    def handled() -> dict[tuple[str, int], int]:
        asked.append(now[0])
        return {("a", 0): 60, ("a", 1): -2, ("c", 0): 12}  # c: past a trailing watermark

    def gauge(topic: str, partition: int) -> float | None:
        labels = {"topic": topic, "partition": str(partition)}
        return service.registry.get_sample_value("headwater_ingest_consumer_lag", labels)

    lag.update(consumer, handled)
    assert (gauge("a", 0), gauge("a", 1), gauge("b", 0), gauge("c", 0)) == (40, 0, None, 0)
    now[0] = 0.5
    consumer.marks[("a", 0)] = (0, 200)
    lag.update(consumer, handled)  # not due: not even asked
    assert asked == [0.0]
    assert gauge("a", 0) == 40
    now[0] = 1.0
    del consumer.marks[("a", 1)]  # revoked
    lag.update(consumer, handled)
    assert (gauge("a", 0), gauge("a", 1)) == (140, None)


def test_a_blank_api_token_is_no_token():
    """Compose passes HEADWATER_API_TOKEN through empty when the shell has it empty; an
    empty header must never match it."""
    assert Settings(api_token="").api_token is None
    assert Settings(api_token="   ").api_token is None
    token = Settings(api_token="s3cret").api_token
    assert token is not None
    assert token.get_secret_value() == "s3cret"
