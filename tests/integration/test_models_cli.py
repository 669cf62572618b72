"""`headwater models list` and `rollback` against a running learner."""

import time

from services.learner.app import run_learner
from services.replay.datasets import dataset_events
from services.replay.recorded import write_events
from services.replay.replayer import replay_file
from shared.checkpoint.store import CheckpointStore
from shared.kafka import SafeProducer
from shared.models.fingerprint import fingerprint
from shared.redis_store import redis_client
from shared.spec import load_spec

from .conftest import ROOT, ThreadedService, headwater, service_env


def test_rollback_makes_the_running_learner_continue_from_an_old_version(settings, tmp_path):
    settings = settings.model_copy(update={"checkpoint_interval_s": 0.3})
    events = list(dataset_events("Phishing", limit=600))
    write_events(tmp_path / "first.jsonl", events[:300])
    write_events(tmp_path / "second.jsonl", events[300:])
    learner = ThreadedService(
        run_learner, settings, load_spec(ROOT / "ops/pipelines/phishing.yaml")
    )
    learner.start()
    store = CheckpointStore(redis_client(settings), "phishing", "learner", b"headwater-dev-key")
    try:

        def replay_and_wait(name: str, seen: int) -> None:
            producer = SafeProducer(settings.kafka_bootstrap)
            replay_file(tmp_path / name, producer, settings.topics)
            producer.close()
            deadline = time.monotonic() + 60
            while not store.versions() or store.versions()[0].meta["events_seen"] < seen:
                assert time.monotonic() < deadline
                time.sleep(0.1)

        replay_and_wait("first.jsonl", 300)
        first = store.versions()[0]
        replay_and_wait("second.jsonl", 600)
        env = service_env(settings)
        listed = headwater("models", "list", "phishing", env=env)
        assert listed.returncode == 0, listed.stderr
        assert "Accuracy (last 1000)" in listed.stdout
        assert str(first.version) in listed.stdout
        rolled = headwater("models", "rollback", "phishing", "logreg", str(first.version), env=env)
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr
        assert "applied" in rolled.stdout
        _, old = store.load(first.version)
        _, now = store.load()
        assert now.core.events_seen == 600  # the input position did not move back
        assert fingerprint(now.core.models["logreg"]) == fingerprint(old.core.models["logreg"])
        assert fingerprint(now.core.models["vw-logistic"]) != fingerprint(
            old.core.models["vw-logistic"]
        )
        unknown = headwater("models", "rollback", "phishing", "nope", str(first.version), env=env)
        assert unknown.returncode == 2
        assert "has no model 'nope'" in unknown.stderr
        missing = headwater("models", "rollback", "phishing", "logreg", "9999", env=env)
        assert missing.returncode == 1
        assert "not found" in missing.stderr
    finally:
        learner.join()
