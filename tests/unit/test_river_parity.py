"""Predictions equal River's own `predict_one`, ties included (River keeps the first of the
greatest probabilities in the model's own class order)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from river import datasets, linear_model, naive_bayes, preprocessing, tree

from shared.models.river_model import RiverModel, binary_proba, canonical_proba


def test_a_tie_goes_to_the_first_class_in_the_models_order():
    assert binary_proba({True: 0.5, False: 0.5})[0] is True
    assert binary_proba({False: 0.5, True: 0.5})[0] is False
    assert binary_proba({False: float("nan"), True: 0.5})[0] is False  # as `max` does
    assert canonical_proba({"b": 0.4, "a": 0.4, "c": 0.2})[0] == "b"
    assert canonical_proba({"b": 0.4, "a": 0.4, "c": 0.2})[1][0] == ("a", 0.4)  # listed sorted
    assert canonical_proba({}) == (None, ())


@pytest.mark.parametrize(
    ("make", "dataset", "task"),
    [
        (
            lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
            "Phishing",
            "binary",
        ),
        (lambda: tree.HoeffdingTreeClassifier(grace_period=50), "Phishing", "binary"),
        (naive_bayes.GaussianNB, "Phishing", "binary"),
        (lambda: tree.HoeffdingTreeClassifier(grace_period=50), "ImageSegments", "multiclass"),
        (naive_bayes.GaussianNB, "ImageSegments", "multiclass"),
    ],
)
def test_every_prediction_equals_rivers_predict_one(make, dataset, task):
    ours, theirs = RiverModel("m", make(), task), make()
    for x, y in getattr(datasets, dataset)():
        assert ours.predict(x)[0] == theirs.predict_one(x)
        ours.learn(x, y)
        theirs.learn_one(x, y)


def test_rivers_results_in_the_kafka_parity_test_do_not_depend_on_the_hash_seed():
    """River's figures there need no PYTHONHASHSEED pinned: every probability, in the
    model's own class order (which decides ties), is the same under different seeds."""
    root = Path(__file__).resolve().parents[2]
    code = "from tests.parity import digest; print(digest())"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in ("0", "1")
    ]
    digests = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert len(digests[0].splitlines()) == 6
    assert digests[1] == digests[0]
