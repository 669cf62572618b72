"""A real Prometheus server scraping a running local stack (ingest, features, learner,
monitor, API) with the repository's alert rules loaded, queried for the key series after a
replay of ops/streams/phishing.jsonl.gz."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from services.launch import start_service
from services.replay.replayer import replay_file
from shared.kafka import SafeProducer
from shared.keys import PipelineKeys
from shared.redis_store import RedisStore
from shared.stack.processes import ManagedProcess, free_port, wait_for_port

from .conftest import ROOT, service_env
from .helpers import wait_until

pytestmark = pytest.mark.integration

SPEC = ROOT / "ops/pipelines/phishing-windows.yaml"
STREAM = ROOT / "ops/streams/phishing.jsonl.gz"
PIPELINE = "phishing-windows"
EVENTS = 1250
SERVICES = ("ingest", "features", "learner", "monitor")


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("prometheus not installed: apt-get install prometheus (.ci/run does)")
    return path


@pytest.fixture
def scraped(ingest_settings, tmp_path, prometheus_binary) -> Iterator[tuple[Prometheus, str]]:
    settings = ingest_settings
    ports = {name: free_port() for name in (*SERVICES, "api")}
    env = {**service_env(settings), "HEADWATER_CHECKPOINT_INTERVAL_S": "1"}
    procs: list[ManagedProcess] = []
    for name in SERVICES:
        procs.append(start_service(name, SPEC, {**env, "HEADWATER_METRICS_PORT": str(ports[name])}))
    api_port = free_port()
    procs.append(
        ManagedProcess(
            "api",
            [sys.executable, "-m", "services.cli.main", "api", "--port", str(api_port)],
            env={**env, "HEADWATER_METRICS_PORT": str(ports["api"])},
        )
    )
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "ops/prometheus/rules/headwater.yml")],
        "scrape_configs": [
            {
                "job_name": f"headwater-{name}",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"service": name}}],
            }
            for name, port in ports.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    web = free_port()
    server = ManagedProcess(
        "prometheus",
        [
            prometheus_binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
    )
    procs.append(server)
    try:
        assert wait_for_port(web, 30), server.log_tail(20)
        assert wait_for_port(api_port, 30), procs[-2].log_tail(20)
        yield Prometheus(f"http://127.0.0.1:{web}"), f"http://127.0.0.1:{api_port}"
    finally:
        codes = {p.name: p.stop() for p in reversed(procs)}
    assert set(codes.values()) == {0}, (codes, *(p.log_tail(10) for p in procs))


def test_prometheus_scrapes_every_service_after_a_replay(scraped, ingest_settings):
    prometheus, api = scraped
    settings = ingest_settings
    redis = RedisStore.from_settings(settings)
    producer = SafeProducer(settings.kafka_bootstrap)
    replay_file(STREAM, producer, settings.topics, label_delay=10)
    producer.close()
    wait_until(
        lambda: (
            redis.get_hash(PipelineKeys(PIPELINE).learner_status).get("labels_learned")
            == str(EVENTS)
        ),
        f"the learner learning {EVENTS} labels",
        timeout=120,
    )
    assert httpx.get(f"{api}/pipelines", timeout=10).json()["pipelines"] == [PIPELINE]

    def scraped_value(expr: str, expected: float) -> bool:
        return prometheus.value(expr) == expected

    # every target up, the five jobs
    wait_until(lambda: scraped_value('count(up{job=~"headwater-.+"} == 1)', 5), "five targets up")
    # the last scrape has seen the whole replay
    wait_until(
        lambda: scraped_value("headwater_learner_labels_learned_total", EVENTS),
        "the learner's labels in Prometheus",
    )
    wait_until(
        lambda: scraped_value('sum(headwater_api_requests_total{route="/pipelines"})', 1),
        "the API's request counted",
    )
    value = prometheus.value
    assert value('headwater_ingest_records_total{outcome="valid"}') == 2 * EVENTS  # + labels
    assert value("sum(headwater_ingest_records_out_total)") == 2 * EVENTS
    assert value('headwater_features_records_total{outcome="applied"}') == EVENTS
    assert (
        value(f'headwater_features_records_out_total{{topic="{settings.topics.features}"}}')
        == EVENTS
    )
    assert value('headwater_learner_records_total{outcome="scored"}') == EVENTS
    assert value("sum(headwater_learner_predictions_total)") == EVENTS
    assert value("headwater_learner_event_to_prediction_seconds_count") > 0
    assert value("headwater_learner_label_lag_events_count") == EVENTS
    # the metric gauges follow the learner's status, written about once a second: the
    # whole replay can pass between two writes
    wait_until(
        lambda: (value('headwater_learner_model_metric{metric="Accuracy"}') or 0) > 0.5,
        "the learner's metric in Prometheus",
    )
    wait_until(
        lambda: scraped_value(
            'sum(headwater_monitor_records_total{outcome="applied"})', 2 * EVENTS
        ),
        "the monitor's outcomes and features in Prometheus",
    )
    for name in SERVICES:
        assert value(f"headwater_{name}_checkpoint_age_seconds") is not None, name
        wait_until(
            lambda name=name: scraped_value(f"sum(headwater_{name}_consumer_lag)", 0),
            f"{name} caught up",
        )
    assert value("headwater_learner_checkpoint_bytes") > 0
    # the repository's alert rules loaded and evaluated, none firing on a healthy stack
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {r["name"]: r for g in rules for r in g["rules"]}
    assert {
        "HeadwaterConsumerLagGrowing",
        "HeadwaterCheckpointStale",
        "HeadwaterDeadLetterRate",
        "HeadwaterDriftDetected",
    } <= set(loaded)
    assert all(r["health"] == "ok" for r in loaded.values()), loaded
    firing = [r["name"] for r in loaded.values() if r.get("state") == "firing"]
    assert "HeadwaterServiceDown" not in firing
    assert "HeadwaterCheckpointStale" not in firing
