"""Rollout through Kafka (the learner and scorers as subprocesses): a canary challenger on
River's SEA stream with a concept drift is promoted after the drift and not before, with
the same decision records on two replays; each entity is served by one model until then;
a shadow challenger served by scorers never reaches the predictions topic; an operator's
switch (CLI) and the rollout view and change (API) work on the running learner."""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml
from river.datasets import synth

from services.launch import start_service
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.messages import Event
from shared.redis_store import redis_client
from shared.rollout.canary import serves_challenger
from shared.rollout.state import Routing
from shared.rollout.store import RolloutStore
from shared.settings import Settings
from shared.stack.processes import ManagedProcess, free_port, wait_for_port

from .conftest import ROOT, headwater, service_env
from .helpers import dedupe_by_lineage, read_until
from .test_kafka_broker import PARTITIONS, fresh_pipeline, learner_status, stop_all, wait

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600, method="thread")]

SPEC = ROOT / "ops/pipelines/sea-rollout.yaml"
PIPELINE = "sea-rollout"
DRIFT_AT, EVENTS, ENTITIES = 10_000, 20_000, 2_000
TOKEN = "rollout-token"


def sea_events(n: int = EVENTS, seed: int = 1) -> list[Event]:
    """SEA, concept 2 then 3 from DRIFT_AT on, 10% label noise; labels inline."""
    stream = itertools.chain(
        synth.SEA(variant=2, seed=seed, noise=0.1).take(min(n, DRIFT_AT)),
        synth.SEA(variant=3, seed=seed + 100, noise=0.1).take(max(0, n - DRIFT_AT)),
    )
    return [
        Event(
            f"sea-{i:06d}",
            f"u{i % ENTITIES}",
            1_704_067_200.0 + i,
            {f"x{k}": v for k, v in x.items()},
            y,
        )
        for i, (x, y) in enumerate(itertools.islice(stream, n))
    ]


def produce(settings: Settings, events: list[Event]) -> None:
    """Straight to events.valid, as ingest would pass them, keyed by entity."""
    producer = SafeProducer(settings.kafka_bootstrap)
    for e in events:
        producer.produce(settings.topics.events_valid, encode(e.to_wire()), e.entity.encode())
    producer.close()


def env_of(settings: Settings) -> dict[str, str]:
    return {**service_env(settings), "HEADWATER_CHECKPOINT_INTERVAL_S": "1"}


def model_events(settings: Settings, n: int) -> list[dict]:
    return read_until(
        settings.kafka_bootstrap,
        settings.topics.model_events,
        lambda got: len(got) >= n,
        f"{n} model events",
        timeout=60,
        partitions=PARTITIONS,
    )


def decided(settings: Settings) -> int:
    state, _ = RolloutStore(redis_client(settings), PIPELINE).read(1)
    return 0 if state is None else int(state["decisions"])


def run_learner(stack, run: str, events: list[Event], logs: Path) -> tuple[list[dict], list[dict]]:
    """The learner alone on a fresh pipeline: its decision records and predictions."""
    settings = fresh_pipeline(stack, run)
    produce(settings, events)
    procs = {"learner": start_service("learner", SPEC, env_of(settings))}
    try:
        wait_learned(settings, len(events), procs)
        wait(lambda: decided(settings) >= 1, "a decision in the rollout state", procs, timeout=30)
        decisions = model_events(settings, decided(settings))
        records = read_until(
            settings.kafka_bootstrap,
            settings.topics.predictions,
            lambda got: len({r["event_id"] for r in got}) >= len(events),
            "a prediction for every event",
            timeout=120,
            partitions=PARTITIONS,
            settle=1.0,
        )
    finally:
        stop_all(procs, logs / run)
    served, _ = dedupe_by_lineage(records)
    return decisions, served


def wait_learned(settings: Settings, n: int, procs: dict) -> None:
    """Until the learner's status says it has learned `n` labels."""
    wait(
        lambda: learner_status(settings, PIPELINE).get(b"labels_learned") == str(n).encode(),
        f"the learner to learn {n} labels",
        procs,
    )


def replayable(decision: dict) -> dict:
    """A decision record as two runs of one stream must agree on it: all but the topic
    names (each run has its own) and the model version (checkpoints come by the clock)."""
    lineage = decision["lineage"]
    return {
        **decision,
        "model_version": None,
        "lineage": None if lineage is None else (lineage["partition"], lineage["offset"]),
    }


def test_a_canary_challenger_is_promoted_after_the_drift_with_the_same_records_on_replay(
    stack, tmp_path
):
    events = sea_events()
    first, served = run_learner(stack, "rollout-a", events, tmp_path)
    second, _ = run_learner(stack, "rollout-b", events, tmp_path)
    print("decisions:", [(d["kind"], d["event_id"], d["evidence"]) for d in first])
    assert [replayable(d) for d in first] == [replayable(d) for d in second]
    promote = first[0]
    assert promote["kind"] == "promote", first
    promoted_at = int(promote["event_id"].split("-")[1])
    assert DRIFT_AT < promoted_at < DRIFT_AT + 5_000, promoted_at
    assert promote["evidence"]["log_wealth_challenger"] >= promote["evidence"]["bound"]
    assert "rollback" not in [d["kind"] for d in first]
    # one prediction per event: the serving model's
    assert len(served) == len(events)
    assert Counter(r["event_id"] for r in served).most_common(1)[0][1] == 1
    canary = Routing("tree", "retrained", "canary", 0.1)
    before = [r for r in served if int(r["event_id"].split("-")[1]) <= promoted_at]
    after = [r for r in served if int(r["event_id"].split("-")[1]) > promoted_at]
    by_entity: dict[str, set[str]] = {}
    for r in before:
        by_entity.setdefault(r["entity"], set()).add(r["model"])
        assert r["model"] == canary.route(r["entity"])[0], r
    assert all(len(models) == 1 for models in by_entity.values())
    share = sum(models == {"retrained"} for models in by_entity.values()) / len(by_entity)
    expected = sum(serves_challenger(e, 0.1, canary.salt) for e in by_entity) / len(by_entity)
    print(f"canary: {share:.3f} of {len(by_entity)} entities served by the challenger")
    assert share == expected
    assert 0.08 <= share <= 0.12
    assert {r["model"] for r in after} == {"retrained"}  # promoted: it serves everyone


def shadow_spec(tmp_path: Path) -> Path:
    doc = yaml.safe_load(SPEC.read_text())
    doc["serving"] = {"by": "scorers", "rollout": {"challenger": "retrained", "policy": "shadow"}}
    path = tmp_path / "sea-shadow.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_shadow_served_by_scorers_stays_off_the_predictions_topic_and_operators_switch(
    stack, tmp_path
):
    settings = fresh_pipeline(stack, "shadow")
    spec = shadow_spec(tmp_path)
    events = sea_events(3_000)
    n = len(events)
    env = {**env_of(settings), "HEADWATER_API_TOKEN": TOKEN}
    port = free_port()
    procs: dict = {name: start_service(name, spec, env) for name in ("learner", "scorer")}
    procs["api"] = ManagedProcess(
        "api", [sys.executable, "-m", "services.cli.main", "api", "--port", str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        produce(settings, events)
        wait_learned(settings, n, procs)
        topics = settings.topics
        served = read_until(
            settings.kafka_bootstrap,
            topics.predictions,
            lambda got: len(got) >= n,
            "served",
            timeout=60,
            partitions=PARTITIONS,
            settle=1.0,
        )
        shadow = read_until(
            settings.kafka_bootstrap,
            topics.predictions_shadow,
            lambda got: len(got) >= n,
            "shadow",
            timeout=60,
            partitions=PARTITIONS,
            settle=1.0,
        )
        assert {r["model"] for r in served} == {"tree"}
        assert {r["model"] for r in shadow} == {"retrained"}
        assert {r["event_id"] for r in dedupe_by_lineage(served, identical=False)[0]} == {
            e.event_id for e in events
        }
        assert wait_for_port(port, 30)
        wait(
            lambda: (
                decided(settings) == 0
                and httpx.get(f"{url}/pipelines/{PIPELINE}/rollout").status_code == 200
            ),
            "the rollout view",
            procs,
            timeout=30,
        )
        view = httpx.get(f"{url}/pipelines/{PIPELINE}/rollout").json()
        assert view["state"]["routing"]["policy"] == "shadow"
        assert 0.5 < view["state"]["agreement"] <= 1.0
        assert set(view["metrics"]) == {"tree", "retrained"}
        # an operator's switch, by the CLI: the challenger serves, at once
        switched = headwater("rollout", "switch", PIPELINE, env=env)
        assert switched.returncode == 0, switched.stdout + switched.stderr
        assert "applied: champion retrained" in switched.stdout
        (switch,) = model_events(settings, 1)
        assert (switch["kind"], switch["source"], switch["champion"]) == (
            "switch",
            "operator",
            "retrained",
        )
        # and a refused change, by the API
        bad = httpx.post(
            f"{url}/pipelines/{PIPELINE}/rollout",
            json={"action": "set", "challenger": "nobody"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert bad.status_code == 422, bad.text
        assert "not one of the models" in bad.json()["error"]["message"]
        ok = httpx.post(
            f"{url}/pipelines/{PIPELINE}/rollout",
            json={"action": "rollback"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert ok.status_code == 202, ok.text
        wait(lambda: decided(settings) == 2, "the API's rollback applied", procs, timeout=30)
        assert (
            RolloutStore(redis_client(settings), PIPELINE).read(1)[0]["routing"]["champion"]
            == "tree"
        )
    finally:
        codes = stop_all(procs, tmp_path / "logs")
    assert codes["learner"] == 0, codes
