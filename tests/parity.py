"""The models of the River-parity tests, as a spec and as River code: Phishing and
ImageSegments, each under `StandardScaler | LogisticRegression`, `HoeffdingTreeClassifier`
and `GaussianNB` with River's defaults (tests/integration/test_parity_through_kafka.py runs
them through Kafka; tests/unit/test_river_parity.py checks River's own results are
independent of the hash seed, so nothing needs pinning).

River's `LogisticRegression` is binary-only (on ImageSegments River fails with a
ValueError, and Headwater refuses such a multiclass spec); the multiclass model is River's
own `OneVsRestClassifier` around it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from river import datasets, linear_model, multiclass, naive_bayes, preprocessing, tree

DATASETS = ("Phishing", "ImageSegments")
_LOGREG = {
    "Phishing": "river.linear_model.LogisticRegression",
    "ImageSegments": (
        "{class: river.multiclass.OneVsRestClassifier, "
        "params: {classifier: {class: river.linear_model.LogisticRegression}}}"
    ),
}


def pipeline_name(dataset: str) -> str:
    return f"parity-{dataset.lower()}"


def spec_text(dataset: str) -> str:
    """The three models as one pipeline spec."""
    task = "binary" if dataset == "Phishing" else "multiclass"
    return (
        f"name: {pipeline_name(dataset)}\n"
        f"task: {task}\n"
        "models:\n"
        "  - name: logreg\n"
        f"    river: {{pipeline: [river.preprocessing.StandardScaler, {_LOGREG[dataset]}]}}\n"
        "  - name: hoeffding-tree\n"
        "    river: river.tree.HoeffdingTreeClassifier\n"
        "  - name: gaussian-nb\n"
        "    river: river.naive_bayes.GaussianNB\n"
        "metrics: [river.metrics.Accuracy]\n"
    )


def river_models(dataset: str) -> dict[str, Any]:
    """The same definitions, written as River users write them."""
    logreg = linear_model.LogisticRegression()
    return {
        "logreg": preprocessing.StandardScaler()
        | (multiclass.OneVsRestClassifier(logreg) if dataset == "ImageSegments" else logreg),
        "hoeffding-tree": tree.HoeffdingTreeClassifier(),
        "gaussian-nb": naive_bayes.GaussianNB(),
    }


def river_probas(dataset: str, model: Any) -> list[dict[Any, float]]:
    """The probabilities a fresh copy of `model` gives at each step, test then train."""
    fresh = model.clone()
    out = []
    for x, y in getattr(datasets, dataset)():
        out.append(fresh.predict_proba_one(x))
        fresh.learn_one(x, y)
    return out


def digest() -> str:
    """One line per dataset and model: a hash of River's every probability and prediction
    (`python -c 'from tests.parity import digest; print(digest())'`)."""
    lines = []
    for dataset in DATASETS:
        for name, model in river_models(dataset).items():
            probas = river_probas(dataset, model)
            text = repr([list(p.items()) for p in probas])  # the model's class order too
            lines.append(f"{dataset} {name} {hashlib.sha256(text.encode()).hexdigest()[:16]}")
    return "\n".join(lines)
