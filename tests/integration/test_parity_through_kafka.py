"""River's own figures, through Kafka: each dataset replayed into `events`, through ingest
to `events.valid`, scored and learned by the learner service (as `headwater demo` runs them),
read back from `predictions` — and compared with `evaluate.progressive_val_score` over the
same dataset and the same model definitions (tests/parity.py), prediction by prediction.

River's results here depend on no hash seed or set order (tests/unit/test_river_parity.py),
so nothing is pinned: the learner's process runs with a random hash seed, as a user's does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from river import datasets, evaluate, metrics

from services.demo.run import collect_predictions, wait_until_assigned
from services.demo.scoring import dedupe, score
from services.launch import start_service
from services.replay.datasets import dataset_events
from services.replay.recorded import write_events
from services.replay.replayer import replay_file
from shared.kafka import SafeProducer
from shared.settings import Settings
from tests.parity import DATASETS, pipeline_name, river_models, river_probas, spec_text

from .conftest import service_env

SIZES = {"Phishing": 1250, "ImageSegments": 2310}


def river_run(dataset: str, model: Any) -> tuple[metrics.Accuracy, list[Any]]:
    """River's progressive_val_score, and its predictions one by one (its own iterator,
    step 1)."""
    dataset_of = getattr(datasets, dataset)
    accuracy = evaluate.progressive_val_score(dataset_of(), model.clone(), metrics.Accuracy())
    steps = evaluate.iter_progressive_val_score(
        dataset_of(), model.clone(), metrics.Accuracy(), step=1, yield_predictions=True
    )
    return accuracy, [step["Prediction"] for step in steps]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("dataset", DATASETS)
def test_three_models_through_kafka_give_rivers_progressive_val_score(
    ingest_settings: Settings, tmp_path: Path, dataset: str
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text(dataset))
    stream = tmp_path / "events.jsonl"
    write_events(stream, dataset_events(dataset))
    labels = {e.event_id: e.label for e in dataset_events(dataset)}
    settings = ingest_settings
    env = service_env(settings)
    ingest = start_service("ingest", spec, env)
    learner = start_service("learner", spec, env)
    try:
        wait_until_assigned(settings.redis_url.get_secret_value(), pipeline_name(dataset), learner)
        producer = SafeProducer(settings.kafka_bootstrap)
        try:
            sent = replay_file(stream, producer, settings.topics)
        finally:
            producer.close()
        assert sent.events == SIZES[dataset]
        got = collect_predictions(
            settings.kafka_bootstrap,
            settings.topics.predictions,
            1,
            sent.events,
            list(river_models(dataset)),
            120,
            lambda: learner.alive() and ingest.alive(),
        )
    finally:
        codes = {p.name: p.stop() for p in (learner, ingest)}
    assert codes == {"learner": 0, "ingest": 0}, learner.log_tail() + ingest.log_tail()

    per_model = dedupe(got)
    assert set(per_model) == set(river_models(dataset))
    for name, model in river_models(dataset).items():
        preds = per_model[name]
        # One prediction per event, in the dataset's order (the lineage is events.valid's).
        assert [p.event_id for p in preds] == list(labels)
        river_accuracy, river_predictions = river_run(dataset, model)
        [ours], unlabelled = score(preds, labels, [metrics.Accuracy()])
        assert unlabelled == 0
        figures = f"{dataset} {name}: River {river_accuracy.get()!r}, Headwater {ours.get()!r}"
        assert ours.get() == river_accuracy.get(), figures
        assert str(ours) == str(river_accuracy), figures
        assert [p.prediction for p in preds] == river_predictions, figures
        # The probabilities too, to the last bit: a change of feature order (sums in another
        # order) shows here before it changes any prediction.
        assert [dict(p.proba or ()) for p in preds] == river_probas(dataset, model), figures
