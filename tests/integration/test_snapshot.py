"""The model snapshot (shared/snapshot.py): the versioned contract readers score with."""

from __future__ import annotations

import pytest
from river.linear_model import LogisticRegression

from shared.checkpoint.codec import CheckpointTamperedError
from shared.keys import PipelineKeys
from shared.models.river_model import RiverModel
from shared.redis_store import redis_client
from shared.snapshot import ModelSnapshot, NoSnapshotError, SnapshotFormatError, SnapshotStore


def test_a_published_snapshot_scores_as_its_model_and_a_foreign_one_is_refused(settings):
    client = redis_client(settings)
    store = SnapshotStore(client, "s", b"key")
    with pytest.raises(NoSnapshotError, match="no model snapshot yet"):
        store.load()
    model = RiverModel("m", LogisticRegression(), "binary")
    model.learn({"x": 1.0}, True)
    store.publish(ModelSnapshot("s", "binary", 7, False, {"m": model}))
    assert store.version() == 7
    loaded = store.load()
    assert loaded.version == 7
    assert loaded.predict("m", {"x": 1.0, "y": None}) == model.predict({"x": 1.0})

    with pytest.raises(CheckpointTamperedError):
        SnapshotStore(client, "s", b"another key").load()
    client.hset(PipelineKeys("s").learner_snapshot, "format", 2)
    with pytest.raises(SnapshotFormatError, match="has format 2; this version of Headwater"):
        store.load()
