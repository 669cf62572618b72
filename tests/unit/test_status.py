"""The typed status records: the hash layout operators, tests and the API read."""

from shared.status import FeaturesStatus, IngestStatus, LearnerStatus


def test_the_learner_status_round_trips_through_its_hash():
    status = LearnerStatus(
        role="active",
        updated_at=12.5,
        events_seen=300,
        labels_learned=290,
        pending=10,
        paused=("vw", "logreg"),
        dead_letters=2,
        assigned_partitions=2,
        metrics={"logreg": {"Accuracy": 0.9, "Accuracy (last 1000)": 0.8}},
        reactions={"resets": 1, "trials": 0},
    )
    fields = status.fields()
    # the hash layout is a contract: these names predate the typed record
    assert fields["metric:logreg:Accuracy (last 1000)"] == 0.8
    assert (fields["drift_resets"], fields["drift_trials"], fields["paused"]) == (1, 0, "vw,logreg")
    as_redis_returns = {k.encode(): str(v).encode() for k, v in fields.items()}
    assert LearnerStatus.parse(as_redis_returns) == status


def test_a_status_from_an_older_learner_reads_with_defaults():
    parsed = LearnerStatus.parse({"role": "active", "events_seen": "x", "pending": "3"})
    assert parsed == LearnerStatus(role="active", pending=3)  # the unreadable count: 0
    assert LearnerStatus.parse({}) is None
    assert not parsed.live(now=100.0)


def test_instance_statuses_name_their_fields():
    assert IngestStatus(("events:0",), {"in": 3, "dlq:bad_json": 1}).fields() == {
        "inputs": "events:0",
        "in": 3,
        "dlq:bad_json": 1,
    }
    assert FeaturesStatus((0, 2), 5, 1, 4, 0, 0).fields()["partitions"] == "0,2"


def test_a_learner_s_last_status_on_stopping_says_it_is_not_running():
    assert LearnerStatus(role="active", updated_at=100.0).live(now=110.0)
    assert not LearnerStatus(role="stopped", updated_at=100.0).live(now=110.0)
    assert not LearnerStatus(role="active", updated_at=100.0).live(now=131.0)


def test_the_label_lag_is_a_fraction_of_events():
    status = LearnerStatus(role="active", label_lag_events=12.5)
    raw = {k.encode(): str(v).encode() for k, v in status.fields().items()}
    assert LearnerStatus.parse(raw) == status
