"""The query API against a running local stack: features and learner services on a real
broker and Redis, the API as `headwater api` in a process of its own, every route called
over HTTP, and schemathesis over its OpenAPI document."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest

from services.launch import start_service
from services.replay.datasets import dataset_events
from services.replay.recorded import write_events
from services.replay.replayer import replay_file
from shared.alert_store import AlertStore
from shared.checkpoint.store import CheckpointStore
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.keys import PipelineKeys
from shared.messages import DriftAlert, Event, Lineage
from shared.redis_store import RedisStore
from shared.settings import Settings
from shared.stack.processes import ManagedProcess, free_port, wait_for_port

from .conftest import ROOT, _fresh_topics, _settings, service_env
from .helpers import wait_until

pytestmark = pytest.mark.integration

SPEC = ROOT / "ops/pipelines/phishing-windows.yaml"
PIPELINE, MODEL = "phishing-windows", "logreg"
TOKEN = "s3cret-token"
N = 1000


@dataclass
class Running:
    settings: Settings
    url: str
    events: list[Event]
    learner: ManagedProcess
    api: ManagedProcess

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def store(self) -> CheckpointStore:
        client = RedisStore.from_settings(self.settings).client
        key = self.settings.checkpoint_key.get_secret_value().encode()
        return CheckpointStore(client, PIPELINE, "learner", key)

    def status(self) -> dict[str, str]:
        redis = RedisStore.from_settings(self.settings)
        return redis.get_hash(PipelineKeys(PIPELINE).learner_status)


@pytest.fixture(scope="module")
def running(stack, request, tmp_path_factory) -> Iterator[Running]:
    """Features and learner on Phishing with windowed features; then the API."""
    settings = _settings(stack, _fresh_topics(stack, request, direct=True))
    events = list(dataset_events("Phishing", limit=N, entities=20, interval=1.0))
    stream = tmp_path_factory.mktemp("api") / "phishing.jsonl"
    write_events(stream, events)
    env = {
        **service_env(settings),
        "HEADWATER_CHECKPOINT_INTERVAL_S": "1",
        "HEADWATER_API_TOKEN": TOKEN,
    }
    features = start_service("features", SPEC, env)
    learner = start_service("learner", SPEC, env)
    port = free_port()
    api = ManagedProcess(
        "api",
        [sys.executable, "-m", "services.cli.main", "api", "--port", str(port)],
        env=env,
    )
    try:
        producer = SafeProducer(settings.kafka_bootstrap)
        replay_file(stream, producer, settings.topics)
        producer.close()
        running = Running(settings, f"http://127.0.0.1:{port}", events, learner, api)
        wait_until(
            lambda: any(v.meta.get("events_seen") == N for v in running.store().versions()),
            f"a checkpoint after {N} events",
            learner,
            timeout=120,
        )
        wait_until(
            lambda: running.status().get("events_seen") == str(N),
            f"the learner's status after {N} events",
            learner,
        )
        assert wait_for_port(port, 30), api.log_tail(20)
        yield running
    finally:
        codes = [p.stop() for p in (api, learner, features)]
    assert codes == [0, 0, 0], api.log_tail(20) + learner.log_tail(20)


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"]
    return str(body["error"]["code"])


def test_health_and_readiness(running):
    assert running.get("/healthz").json() == {"status": "ok"}
    ready = running.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "redis": True, "stale_checkpoints": []}


def test_pipelines_models_and_a_models_state(running):
    assert PIPELINE in running.get("/pipelines").json()["pipelines"]
    assert running.get(f"/pipelines/{PIPELINE}/models").json() == {
        "pipeline": PIPELINE,
        "models": [MODEL],
    }
    # Kafka's watermark comes from the API's background refresher: null until it is heard
    states: list[dict] = []

    def heard() -> bool:
        states.append(running.get(f"/pipelines/{PIPELINE}/models/{MODEL}").json())
        return all(i["high_watermark"] is not None for i in states[-1]["inputs"])

    wait_until(heard, "the API's watermarks", running.api, timeout=30)
    state = states[-1]
    newest = running.store().versions()[0]
    assert state["version"] >= newest.version  # a newer one may have come since
    assert state["task"] == "binary"
    assert state["spec"]["name"] == MODEL
    assert state["spec"]["kind"] == "river"
    assert state["learning"] == "learning"
    assert state["running"] is True
    assert state["events_seen"] == N
    assert state["labels_learned"] == N  # Phishing's labels are inline
    assert state["pending_labels"] == 0
    assert set(state["metrics"]["overall"]) == {"Accuracy"}
    assert set(state["metrics"]["rolling"]) == {"Accuracy (last 1000)"}
    assert 0.5 < state["metrics"]["overall"]["Accuracy"] <= 1.0
    checkpoint = state["last_checkpoint"]
    assert checkpoint["version"] == state["version"]
    assert 0 <= checkpoint["age_seconds"] < 120
    (inputs,) = state["inputs"]  # the features topic, one partition
    assert inputs["topic"] == running.settings.topics.features
    assert inputs["next_offset"] == N
    assert inputs["high_watermark"] is not None
    assert inputs["lag"] == 0
    assert 0 <= inputs["high_watermark_age_seconds"] <= 5
    assert state["drift"]["alerts"] == 0


def test_versions_hold_the_checkpoint_history_with_metrics(running):
    body = running.get(f"/pipelines/{PIPELINE}/models/{MODEL}/versions").json()
    versions = body["versions"]
    assert [v["version"] for v in versions] == sorted(
        (v["version"] for v in versions), reverse=True
    )
    stored = {i.version: i for i in running.store().versions()}
    for v in versions:
        assert v["events_seen"] == stored[v["version"]].meta["events_seen"]
        assert v["learned"] == stored[v["version"]].meta["learned"][MODEL]
    assert versions[0]["metrics"]["overall"]["Accuracy"] > 0.5


def test_predict_answers_from_the_newest_checkpoint_without_learning(running):
    from shared.models.inputs import model_input

    data = running.events[-1].data
    before = running.store().versions()[0]
    answer = running.post(f"/pipelines/{PIPELINE}/models/{MODEL}/predict", json={"data": data})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    _, state = running.store().load(body["version"])
    model = state.core.models[MODEL]
    # the features service adds windowed features to an event; with the raw data only, the
    # model sees the passthrough fields, as it would for an entity it has never seen
    expected, proba = model.predict(model_input(data, False))
    assert body["prediction"] == expected
    assert {str(c): p for c, p in body["proba"]} == pytest.approx({str(c): p for c, p in proba})
    assert body["version"] >= before.version
    again = running.post(f"/pipelines/{PIPELINE}/models/{MODEL}/predict", json={"data": data})
    assert again.json()["prediction"] == body["prediction"]  # nothing was learned
    bad = running.post(
        f"/pipelines/{PIPELINE}/models/{MODEL}/predict", json={"data": {"x": {"nested": 1}}}
    )
    assert bad.status_code == 422
    assert error_code(bad) == "invalid_request"


def test_latest_features_of_an_entity(running):
    last = running.events[-1]
    body = running.get(f"/pipelines/{PIPELINE}/features/{last.entity}").json()
    assert body["entity"] == last.entity
    assert body["features"]["long_url"] == last.data["long_url"]
    assert any(name.endswith("_1m") for name in body["features"])
    assert body["event_time"] == pytest.approx(
        max(e.ts for e in running.events if e.entity == last.entity)
    )
    assert body["age_seconds"] > 0
    assert 0 < body["expires_in_seconds"] <= 3600


def test_recent_drift_alerts(running):
    client = RedisStore.from_settings(running.settings).client
    alerts = [
        DriftAlert(
            f"a{i}",
            PIPELINE,
            MODEL,
            1,
            "concept",
            "error",
            "ADWIN",
            {"width": 10.0 + i},
            f"e{i}",
            1_700_000_000.0 + i,
            "none",
            Lineage("outcomes", 0, i),
        )
        for i in range(5)
    ]
    AlertStore(client, PIPELINE).add(alerts)
    body = running.get(f"/pipelines/{PIPELINE}/drift", params={"limit": 3}).json()
    assert [a["alert_id"] for a in body["alerts"]] == ["a4", "a3", "a2"]
    state = running.get(f"/pipelines/{PIPELINE}/models/{MODEL}").json()
    assert state["drift"]["alerts"] == 5
    assert state["drift"]["latest"]["alert_id"] == "a4"
    too_many = running.get(f"/pipelines/{PIPELINE}/drift", params={"limit": 5000})
    assert too_many.status_code == 422


def test_the_metric_history_holds_a_point_per_run_of_labels(running):
    """N labels, one point every 1,000: its values are the learner's metrics then (the
    last labels, so those in its status now)."""
    body = running.get(f"/pipelines/{PIPELINE}/history").json()
    assert body["pipeline"] == PIPELINE
    assert body["every"] == 1000
    [point] = body["points"]
    assert (point["labels"], point["events"]) == (N, N)
    status = running.status()
    expected = {
        name: float(value)
        for key, value in status.items()
        if key.startswith(f"metric:{MODEL}:")
        for name in [key.split(":", 2)[2]]
    }
    assert point["values"][MODEL] == expected


def test_the_page_data_is_each_route_s_answer_in_one(running):
    page = running.get(f"/pipelines/{PIPELINE}/page").json()
    assert page["history"] == running.get(f"/pipelines/{PIPELINE}/history").json()
    assert (
        page["versions"]
        == running.get(f"/pipelines/{PIPELINE}/models/{MODEL}/versions").json()["versions"]
    )
    assert [m["model"] for m in page["models"]] == [MODEL]
    assert page["rollout"]["state"] is None
    ui = running.get("/ui")
    assert ui.status_code == 200
    assert ui.headers["content-type"].startswith("text/html")
    assert "function chart(" in ui.text  # the charts are drawn by its own script
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", ui.text)  # nothing from elsewhere


def test_unknown_names_are_404_with_a_json_error(running):
    p, m = PIPELINE, MODEL
    for path in (
        "/pipelines/nope/models",
        "/pipelines/nope/models/x",
        f"/pipelines/{p}/models/nope",
        f"/pipelines/{p}/models/nope/versions",
        "/pipelines/nope/drift",
        "/pipelines/nope/history",
        "/pipelines/nope/page",
        "/pipelines/nope/features/u1",
        f"/pipelines/{p}/features/never-seen",
        "/pipelines/NOT%20A%20NAME/models",
        "/no/such/route",
    ):
        response = running.get(path)
        assert response.status_code == 404, (path, response.text)
        error_code(response)
    predict = running.post(f"/pipelines/{p}/models/nope/predict", json={"data": {}})
    assert predict.status_code == 404
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for action in ("pause", "resume"):
        response = running.post(f"/pipelines/nope/models/{m}/{action}", headers=auth)
        assert response.status_code == 404
    rollback = running.post(
        f"/pipelines/{p}/models/{m}/rollback", headers=auth, json={"version": 999_999}
    )
    assert rollback.status_code == 404
    assert error_code(rollback) == "unknown_version"


def test_admin_routes_need_the_bearer_token(running):
    for action, body in (("pause", None), ("resume", None), ("rollback", {"version": 1})):
        path = f"/pipelines/{PIPELINE}/models/{MODEL}/{action}"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = running.post(path, headers=headers, json=body)
            assert response.status_code == 401, (action, headers, response.text)
            assert error_code(response) == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
    assert running.get(f"/pipelines/{PIPELINE}/models/{MODEL}").json()["learning"] == "learning"


def test_pause_resume_and_rollback_reach_the_learner(running):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    base = f"/pipelines/{PIPELINE}/models/{MODEL}"
    paused = running.post(f"{base}/pause", headers=auth)
    assert paused.status_code == 202, paused.text
    assert running.get(base).json()["learning"] == "paused"
    wait_until(
        lambda: running.status().get("paused") == MODEL, "the learner pausing", running.learner
    )
    # more labelled events: scored, but not learned
    learned_before = int(running.status()["labels_skipped_paused"])
    producer = SafeProducer(running.settings.kafka_bootstrap)
    extra = dataset_events("Phishing", limit=50, entities=20, interval=1.0, start=2e9)
    for i, event in enumerate(extra):
        event = msgspec.structs.replace(event, event_id=f"extra-{i}")
        producer.produce(
            running.settings.topics.events_valid, encode(event.to_wire()), event.entity.encode()
        )
    producer.close()
    wait_until(
        lambda: int(running.status().get("labels_skipped_paused", 0)) == learned_before + 50,
        "50 labels skipped while paused",
        running.learner,
    )
    resumed = running.post(f"{base}/resume", headers=auth)
    assert resumed.status_code == 202
    wait_until(
        lambda: running.status().get("paused") == "", "the learner resuming", running.learner
    )
    assert running.get(base).json()["learning"] == "learning"

    oldest = running.store().versions()[-1].version
    accepted = running.post(f"{base}/rollback", headers=auth, json={"version": oldest})
    assert accepted.status_code == 202, accepted.text
    wait_until(
        lambda: str(running.store().versions()[0].meta.get("reason", "")).startswith("rollback"),
        "the learner applying the rollback",
        running.learner,
    )


def test_schemathesis_finds_no_server_error(running, tmp_path):
    """Generated requests on every route (admin ones with the token): never a 5xx."""
    # The real names, so generated requests reach past the 404s into each route's logic
    entity = running.events[-1].entity
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'parameters = {{ pipeline = "{PIPELINE}", model = "{MODEL}", entity = "{entity}" }}\n'
    )
    deadline = time.monotonic() + 240
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(config),
            "run",
            f"{running.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--workers",
            "1",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--phases",
            "examples,coverage,fuzzing",
        ],
        capture_output=True,
        text=True,
        timeout=max(30.0, deadline - time.monotonic()),
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "16 selected / 16 total" in result.stdout  # every operation
    assert "Missing test data" not in result.stdout  # they got past the 404s
    assert re.search(r"(\d+) generated, \1 passed", result.stdout), result.stdout[-2000:]


def test_a_body_over_the_limit_is_refused_before_it_is_read(running):
    """413 with a JSON error, whether the body declares its length or streams in without
    one; /healthz meanwhile answers at once."""
    path = f"/pipelines/{PIPELINE}/models/{MODEL}/predict"
    big = b'{"data": {' + b",".join(b'"f%d": 1' % i for i in range(200_000)) + b"}}"
    assert len(big) > running.settings.api_max_body_bytes
    headers = {"content-type": "application/json"}
    declared = running.post(path, content=big, headers=headers)
    assert declared.status_code == 413, declared.text
    assert error_code(declared) == "too_large"
    assert "HEADWATER_API_MAX_BODY_BYTES" in declared.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:
        for at in range(0, len(big), 65_536):
            yield big[at : at + 65_536]

    streamed = running.post(path, content=chunks(), headers=headers)
    assert streamed.status_code == 413, streamed.text
    assert error_code(streamed) == "too_large"
    started = time.monotonic()
    assert running.get("/healthz").status_code == 200
    assert time.monotonic() - started < 1.0
