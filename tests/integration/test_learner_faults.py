"""Exactly-once effect across crashes (DESIGN §4), hot standby, fencing and tampering."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
import redis

from services.launch import start_service
from services.learner.core import LearnerCore
from services.replay.datasets import dataset_events
from services.replay.plan import plan
from services.replay.recorded import write_events
from services.replay.replayer import replay_file
from shared.checkpoint.store import CheckpointStore
from shared.kafka import SafeProducer
from shared.messages import Label, Lineage, Prediction
from shared.models.fingerprint import fingerprint
from shared.redis_store import redis_client
from shared.settings import Settings
from shared.spec import load_spec
from tests.reference import process, process_label

from .conftest import service_env
from .helpers import read_until

SPEC = """
name: fault
task: binary
models:
  - name: logreg
    river:
      pipeline: [river.preprocessing.StandardScaler, river.linear_model.LogisticRegression]
  - name: vw
    vw: {args: "-l 0.5"}
labels: {horizon_events: 1000}
"""
DELAY = 5


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "fault.yaml"
    path.write_text(SPEC)
    return path


def learner_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **service_env(settings),
        "HEADWATER_CHECKPOINT_EVERY_RECORDS": "2000",
        "HEADWATER_CHECKPOINT_INTERVAL_S": "60",
        "HEADWATER_LEASE_TTL_S": "1",
        **extra,
    }


def load_stream(settings: Settings, tmp_path: Path, n: int) -> None:
    stream = tmp_path / "sea.jsonl"
    write_events(stream, dataset_events("SEA", limit=n))
    producer = SafeProducer(settings.kafka_bootstrap)
    replay_file(stream, producer, settings.topics, label_delay=DELAY)
    producer.close()


def uninterrupted(spec_file: Path, n: int) -> LearnerCore:
    """The same stream, in the merge's order, through the pure core in one go."""
    core = LearnerCore.from_spec(load_spec(spec_file))
    for offset, send in enumerate(plan(dataset_events("SEA", limit=n), DELAY)):
        if isinstance(send.message, Label):
            process_label(core, send.message)
        else:
            process(core, send.message, Lineage("events", 0, offset))
    return core


def status(settings: Settings) -> dict[bytes, bytes]:
    return redis_client(settings).hgetall("headwater:fault:learner:status")


def wait_until(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def checkpointed_events(settings: Settings) -> int:
    versions = CheckpointStore(redis_client(settings), "fault", "learner", b"-").versions()
    return int(versions[0].meta["events_seen"]) if versions else 0


def current_epoch(settings: Settings) -> int:
    return int(redis_client(settings).get("headwater:fault:learner:ckpt:epoch") or 0)


def final_state(settings: Settings):
    store = CheckpointStore(redis_client(settings), "fault", "learner", b"headwater-dev-key")
    return store.load()


@pytest.mark.slow
def test_sigkill_at_random_moments_learns_each_label_exactly_once(settings, spec_file, tmp_path):
    n = 50_000
    load_stream(settings, tmp_path, n)
    rng = random.Random(20261121)
    progress_at_kill = []
    # Kills stop short of the stream's end: a learner with fewer than 2,000 records
    # (HEADWATER_CHECKPOINT_EVERY_RECORDS) left would write no checkpoint to wait for.
    while len(progress_at_kill) < 10 and checkpointed_events(settings) < n - 4000:
        before = checkpointed_events(settings)
        learner = start_service("learner", spec_file, learner_env(settings))
        # once this learner has made progress of its own, kill it at a random moment:
        # while scoring, while joining labels, or in the middle of a checkpoint
        wait_until(lambda b=before: checkpointed_events(settings) > b, 60, "progress")
        time.sleep(rng.uniform(0.0, 0.2))
        learner.kill()
        learner.cleanup()
        progress_at_kill.append(checkpointed_events(settings))
    learner = start_service("learner", spec_file, learner_env(settings))
    try:
        wait_until(
            lambda: status(settings).get(b"labels_learned") == str(n).encode(), 180, "all labels"
        )
    except AssertionError:
        print(status(settings), learner.log_tail(60), progress_at_kill)
        raise
    finally:
        assert learner.stop() == 0, learner.log_tail()
    _, state = final_state(settings)
    assert state.core.learned == {"logreg": n, "vw": n}  # every label, once per model
    assert state.core.events_seen == n
    assert state.offsets[(settings.topics.events, 0)] == n
    reference = uninterrupted(spec_file, n)
    for name in ("logreg", "vw"):
        assert fingerprint(state.core.models[name]) == fingerprint(reference.models[name]), name
    assert state.core.metric_values() == reference.metric_values()
    # every event has its predictions once lineage duplicates (re-emitted after kills) are dropped
    records = read_until(
        settings.kafka_bootstrap,
        settings.topics.predictions,
        lambda out: len({(r["model"], r["lineage"]["offset"]) for r in out}) >= 2 * n,
        f"predictions of both models for all {n} events",
        timeout=120,
    )
    unique = {(r["model"], r["lineage"]["offset"]): r for r in records}
    assert len(unique) == 2 * n
    mid_stream = [seen for seen in progress_at_kill if 0 < seen < n]
    print("events in the last checkpoint at each kill:", progress_at_kill)
    assert len(mid_stream) >= 5, progress_at_kill


@pytest.mark.tansu_smoke
@pytest.mark.slow
def test_hot_standby_takes_over_within_ten_seconds_and_loses_nothing(settings, spec_file, tmp_path):
    n = 20_000
    env = learner_env(settings, HEADWATER_LEASE_TTL_S="5")
    active = start_service("learner", spec_file, env)
    wait_until(lambda: status(settings).get(b"role") == b"active", 30, "the first learner")
    standby = start_service("learner", spec_file, env)
    time.sleep(2)  # the standby is up and waiting on the lease
    try:
        load_stream(settings, tmp_path, n)
        wait_until(lambda: int(status(settings).get(b"events_seen", 0)) > 2000, 60, "progress")
        active.kill()
        killed_at = time.monotonic()
        epoch_before = int(redis_client(settings).get("headwater:fault:learner:ckpt:epoch"))
        wait_until(
            lambda: (
                int(redis_client(settings).get("headwater:fault:learner:ckpt:epoch")) > epoch_before
            ),
            15,
            "the standby to take over",
        )
        takeover = time.monotonic() - killed_at
        assert takeover <= 10, takeover
        wait_until(
            lambda: status(settings).get(b"labels_learned") == str(n).encode(), 120, "all labels"
        )
    finally:
        active.stop()
        assert standby.stop() == 0, standby.log_tail()
    _, state = final_state(settings)
    assert state.core.learned == {"logreg": n, "vw": n}
    reference = uninterrupted(spec_file, n)
    assert fingerprint(state.core.models["logreg"]) == fingerprint(reference.models["logreg"])
    print(f"standby took over {takeover:.1f} s after the kill")


@pytest.mark.slow
def test_a_paused_learner_cannot_overwrite_its_successors_checkpoint(settings, spec_file, tmp_path):
    env = learner_env(settings, HEADWATER_CHECKPOINT_INTERVAL_S="0.5")
    stale = start_service("learner", spec_file, env)
    wait_until(lambda: status(settings).get(b"role") == b"active", 30, "the first learner")
    load_stream(settings, tmp_path, 5000)
    wait_until(lambda: int(status(settings).get(b"events_seen", 0)) == 5000, 60, "progress")
    stale.proc.send_signal(signal.SIGSTOP)
    successor = start_service("learner", spec_file, env)
    try:
        client = redis_client(settings)
        wait_until(
            lambda: int(client.get("headwater:fault:learner:ckpt:epoch")) == 2, 30, "takeover"
        )
        time.sleep(1.0)
        stale.proc.send_signal(signal.SIGCONT)
        assert stale.proc.wait(30) != 0  # it finds itself fenced and stops
        assert "another learner" in stale.log_tail() or "lease was lost" in stale.log_tail()
    finally:
        stale.kill()
        assert successor.stop() == 0, successor.log_tail()
    store = CheckpointStore(client, "fault", "learner", b"headwater-dev-key")
    epochs = [info.epoch for info in reversed(store.versions())]
    assert epochs == sorted(epochs)  # nothing from epoch 1 after epoch 2 began
    assert store.load()[0].epoch == 2


def test_a_tampered_checkpoint_is_refused_with_a_clear_error(settings, spec_file, tmp_path):
    from .conftest import headwater

    env = learner_env(settings)
    learner = start_service("learner", spec_file, env)
    wait_until(lambda: status(settings).get(b"role") == b"active", 30, "the learner")
    assert learner.stop() == 0  # writes its shutdown checkpoint
    client = redis_client(settings)
    key = f"headwater:fault:learner:ckpt:v:{int(client.get('headwater:fault:learner:ckpt:latest'))}"
    client.hset(key, "blob", b"\x80\x05cos\nsystem\n(S'touch /tmp/pwned'\ntR.")
    result = headwater("run", "learner", "--spec", str(spec_file), env=env, timeout=60)
    assert result.returncode == 1
    assert "failed HMAC verification" in result.stderr
    assert "Traceback" not in result.stderr
    assert Prediction  # the module under test publishes prediction/v1


def test_losing_redis_stops_the_learner_with_a_clear_error(settings, spec_file, tmp_path):
    """Without Redis the lease cannot be renewed: the learner must stop, saying why."""
    from shared.stack.binaries import redis_server_binary
    from shared.stack.processes import ManagedProcess, free_port, wait_for_port

    port = free_port()
    private = ManagedProcess(
        "redis",
        [str(redis_server_binary()), "--port", str(port), "--save", "", "--appendonly", "no"],
    )
    assert wait_for_port(port, 10, private.proc)
    env = {
        **learner_env(settings, HEADWATER_LEASE_TTL_S="2"),
        "HEADWATER_REDIS_URL": f"redis://127.0.0.1:{port}/0",
    }
    learner = start_service("learner", spec_file, env)
    try:
        client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
        wait_until(
            lambda: client.hget("headwater:fault:learner:status", "role") == b"active", 30, "active"
        )
        private.kill()
        learner.proc.wait(40)
        assert learner.proc.returncode == 1
        tail = learner.log_tail(200)
        assert "Redis unreachable" in tail or "unreachable" in tail, tail
        assert "Traceback" not in tail, tail
    finally:
        learner.kill()
        private.kill()
        private.cleanup()
