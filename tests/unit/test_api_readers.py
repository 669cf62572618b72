"""What the model-state route makes of what it reads: which models a pipeline has, and the
drift alerts per model."""

from services.api.readers import DriftSummary, models_of
from shared.checkpoint.store import CheckpointInfo
from shared.status import LearnerStatus

SPEC = {"models": [{"name": "logreg"}, {"name": "tree"}, "not a section", {"kind": "x"}]}
INFO = CheckpointInfo(3, 1, {"learned": {"vw": 10, "logreg": 12}})
STATUS = LearnerStatus(metrics={"b": {"Accuracy": 0.9}, "a": {"Accuracy": 0.8}})


def test_models_come_from_the_spec_else_the_checkpoint_else_the_status():
    assert models_of(SPEC, INFO, STATUS) == ["logreg", "tree"]
    assert models_of({"models": "broken"}, INFO, STATUS) == ["vw", "logreg"]
    assert models_of(None, CheckpointInfo(1, 1, {}), STATUS) == ["a", "b"]
    assert models_of(None, None, None) == []


def test_drift_is_counted_per_model_with_its_newest_alert():
    alerts = [  # newest first, as the alert store gives them
        {"alert_id": "a3", "model": "logreg"},
        {"alert_id": "a2", "model": None},  # covariate drift: no model
        {"alert_id": "a1", "model": "logreg"},
        {"alert_id": "a0", "model": "tree"},
    ]
    summary = DriftSummary.of(alerts)
    assert summary.of_model("logreg") == (2, alerts[0])
    assert summary.of_model("tree") == (1, alerts[3])
    assert summary.of_model("vw") == (0, None)
    assert DriftSummary.of([]).of_model("logreg") == (0, None)
