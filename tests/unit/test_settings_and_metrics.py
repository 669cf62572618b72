import pytest
from prometheus_client import generate_latest

from shared.metrics import ServiceMetrics
from shared.settings import SettingsError, load_settings


def test_settings_come_from_headwater_variables(monkeypatch):
    monkeypatch.setenv("HEADWATER_KAFKA_BOOTSTRAP", "broker:9093")
    monkeypatch.setenv("HEADWATER_REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("HEADWATER_TOPICS__EVENTS", "clicks")
    settings = load_settings()
    assert settings.kafka_bootstrap == "broker:9093"
    assert settings.redis_url == "redis://cache:6380/2"
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
