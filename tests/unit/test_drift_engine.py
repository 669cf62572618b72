"""The monitor's pure logic on River's synthetic streams, with drifts at known positions."""

from __future__ import annotations

import itertools
import pickle
import random
from collections.abc import Iterator
from dataclasses import replace

import pytest
from river import linear_model, preprocessing
from river.datasets import synth

from services.monitor.engine import MAX_SIGNALS, DriftEngine
from services.monitor.windows import TwoSampleWindow
from shared.messages import DriftAlert, Lineage, Outcome
from shared.spec import SpecError, parse_spec
from shared.spec.drift import DistributionDriftSpec, DriftSpec

DRIFT_AT = 20_000


def outcomes(stream: Iterator[tuple[dict, bool]], n: int) -> Iterator[tuple[Outcome, dict]]:
    """Test-then-train with River's StandardScaler | LogisticRegression, as the learner
    does: each event's outcome (prediction made before learning) and its features."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for i, (x, y) in enumerate(itertools.islice(stream, n)):
        p = model.predict_one(x)
        model.learn_one(x, y)
        yield (
            Outcome(
                f"e{i}",
                "u",
                float(i),
                "p",
                "lr",
                1,
                "binary",
                p,
                None,
                y,
                "inline",
                0,
                Lineage("features", 0, i),
            ),
            x,
        )


def scored(i: int, task: str, prediction: object, label: object) -> Outcome:
    """Outcome i of model "m", at offset i of the outcomes topic."""
    return Outcome(
        f"e{i}", "u", float(i), "p", "m", 0, task, prediction, None, label, "inline", 0,
        Lineage("outcomes", 0, i),
    )  # fmt: skip


def abrupt(variant_after: int = 2) -> Iterator[tuple[dict, bool]]:
    before = synth.SEA(seed=42, variant=0)
    return itertools.chain(
        itertools.islice(before, DRIFT_AT), synth.SEA(seed=7, variant=variant_after)
    )


def run(engine: DriftEngine, records: Iterator[tuple[Outcome, dict]]) -> list[DriftAlert]:
    alerts = []
    for o, x in records:
        alerts += engine.observe_features(o.event_id, o.ts, x, o.lineage)
        alerts += engine.observe_outcome(o, o.lineage)
    return alerts


def at(alert: DriftAlert) -> int:
    return int(alert.event_id[1:])


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_abrupt_concept_drift_is_alerted_within_1000_events_and_not_before(variant):
    engine = DriftEngine("p", "binary", DriftSpec())
    alerts = run(engine, outcomes(abrupt(variant), 2 * DRIFT_AT))
    concept = [a for a in alerts if a.kind == "concept"]
    assert concept, engine.counts
    assert DRIFT_AT <= at(concept[0]) < DRIFT_AT + 1000
    assert all(at(a) >= DRIFT_AT for a in alerts), [(a.kind, a.signal, at(a)) for a in alerts]
    first = concept[0]
    assert (first.model, first.model_version, first.signal, first.detector) == (
        "lr",
        1,
        "error",
        "ADWIN",
    )
    assert first.statistics["error_after"] > first.statistics["error_before"]
    assert first.lineage == Lineage("features", 0, at(first))
    # the inputs did not move: SEA's features are uniform before and after
    assert not [a for a in alerts if a.kind == "covariate"]


def test_a_stationary_stream_of_100k_events_raises_nothing():
    engine = DriftEngine("p", "binary", DriftSpec())
    alerts = run(engine, outcomes(synth.SEA(seed=3, variant=0), 100_000))
    assert alerts == []
    assert engine.counts["outcomes"] == 100_000
    # every kind of watcher ran: 1 model's error and predictions, SEA's 3 features
    kinds = sorted(k[1] for k in engine.signals)
    assert kinds == ["concept", "covariate", "covariate", "covariate", "prediction"]


def shifted_features(n: int, shift_at: int, feature: str) -> Iterator[tuple[str, float, dict]]:
    rng = random.Random(5)
    for i in range(n):
        x = {name: rng.gauss(0.0, 1.0) for name in ("a", "b", "c")}
        x["flag"] = rng.random() < 0.5  # a boolean is not a numeric feature
        x["city"] = "Oslo"
        if i >= shift_at:
            x[feature] += 1.0  # one standard deviation
        yield f"e{i}", float(i), x


def test_a_covariate_shift_of_one_feature_is_alerted_for_that_feature_only():
    engine = DriftEngine("p", "binary", DriftSpec())
    alerts = []
    for event_id, ts, x in shifted_features(20_000, 8_000, "b"):
        alerts += engine.observe_features(event_id, ts, x, Lineage("features", 0, int(ts)))
    assert [(a.kind, a.signal, a.model, a.model_version) for a in alerts] == [
        ("covariate", "b", None, None)
    ]
    alert = alerts[0]
    assert 8_000 <= at(alert) < 9_000
    assert alert.detector == "ks_2samp"
    assert alert.statistics["p_value"] < 1e-6
    assert alert.statistics["window_mean"] - alert.statistics["reference_mean"] > 0.5
    assert {k[2] for k in engine.signals} == {"a", "b", "c"}


def test_covariate_drift_watches_only_the_features_the_spec_names():
    spec = replace(DriftSpec(), covariate=replace(DistributionDriftSpec(), features=("a",)))
    engine = DriftEngine("p", "binary", spec)
    for event_id, ts, x in shifted_features(12_000, 4_000, "b"):
        assert engine.observe_features(event_id, ts, x, Lineage("f", 0, int(ts))) == []
    assert {k[2] for k in engine.signals} == {"a"}


def test_the_same_stream_gives_the_same_alerts_and_a_restored_engine_goes_on_alike():
    records = list(outcomes(abrupt(), 2 * DRIFT_AT))
    first = run(DriftEngine("p", "binary", DriftSpec()), iter(records))
    again = run(DriftEngine("p", "binary", DriftSpec()), iter(records))
    assert first
    assert first == again
    assert len({a.alert_id for a in first}) == len(first)
    # checkpointed just before the drift, restored, fed the rest: the same alerts
    engine = DriftEngine("p", "binary", DriftSpec())
    head = run(engine, iter(records[: DRIFT_AT - 5]))
    restored = pickle.loads(pickle.dumps(engine))
    assert head + run(restored, iter(records[DRIFT_AT - 5 :])) == first


def test_alerts_of_one_signal_are_spaced_by_its_cooldown():
    spec = parse_spec(
        """
name: p
task: binary
models: [{name: lr, river: river.linear_model.LogisticRegression}]
drift:
  concept:
    detector: {class: river.drift.binary.DDM, params: {warm_start: 30}}
    cooldown_events: 5000
  covariate: {enabled: false}
  prediction: {enabled: false}
"""
    ).drift
    rng = random.Random(1)
    engine = DriftEngine("p", "binary", spec)
    alerts = []
    for i in range(30_000):
        # the error rate jumps every 1,000 events: DDM fires after most jumps
        rate = 0.05 if (i // 1000) % 2 == 0 else 0.6
        label = rng.random() >= rate
        o = scored(i, "binary", True, label)
        alerts += engine.observe_outcome(o, o.lineage)
    positions = [at(a) for a in alerts]
    assert len(positions) >= 3
    assert all(b - a >= 5000 for a, b in itertools.pairwise(positions))
    assert engine.counts["alerts_suppressed"] > 0


def test_regression_errors_are_absolute_and_missing_predictions_are_skipped():
    engine = DriftEngine("p", "regression", DriftSpec())
    rng = random.Random(2)
    alerts = []
    for i in range(20_000):
        label = rng.gauss(10.0, 1.0)
        prediction = None if i % 100 == 0 else label + rng.gauss(0.0, 0.1 if i < 10_000 else 3.0)
        o = scored(i, "regression", prediction, label)
        alerts += engine.observe_outcome(o, o.lineage)
    concept = [a for a in alerts if a.kind == "concept"]
    assert concept
    assert 10_000 <= at(concept[0]) < 10_500
    # the predictions' spread grew as well: prediction drift, tested as numbers
    prediction = [a for a in alerts if a.kind == "prediction"]
    assert prediction
    assert prediction[0].detector == "ks_2samp"
    assert engine.counts["errors_skipped"] == 200
    assert engine.counts["predictions_skipped"] == 200


def test_prediction_drift_of_classes():
    window = TwoSampleWindow(
        DistributionDriftSpec(warmup=0, reference_size=500, window_size=500, check_every=100), False
    )
    rng = random.Random(4)
    found = []
    for i in range(5000):
        share = 0.2 if i < 2000 else 0.5
        figures = window.update("yes" if rng.random() < share else "no")
        if figures is not None:
            found.append((i, figures))
    assert len(found) == 1
    i, figures = found[0]
    assert 2000 <= i < 2600
    assert figures["classes"] == 2
    assert figures["dof"] == 1
    # one class only on both sides: nothing to test, never an alert
    single = TwoSampleWindow(
        DistributionDriftSpec(warmup=0, reference_size=30, window_size=30, check_every=1), False
    )
    assert all(single.update("yes") is None for _ in range(200))


def test_ever_new_feature_names_stay_bounded():
    engine = DriftEngine("p", "binary", DriftSpec())
    for i in range(MAX_SIGNALS + 10):
        engine.observe_features(f"e{i}", float(i), {f"f{i}": 1.0}, Lineage("f", 0, i))
    assert len(engine.signals) == MAX_SIGNALS
    assert engine.counts["signals_refused"] == 10


def spec_problem(drift: str, task: str = "binary") -> str:
    model = (
        "river.linear_model.LinearRegression"
        if task == "regression"
        else ("river.linear_model.LogisticRegression")
    )
    with pytest.raises(SpecError) as info:
        parse_spec(f"name: p\ntask: {task}\nmodels: [{{name: m, river: {model}}}]\n{drift}")
    return str(info.value)


def test_bad_drift_sections_are_refused_with_the_field_named():
    assert "drift.concept.detector: DDM takes 0/1 errors" in spec_problem(
        "drift: {concept: {detector: river.drift.binary.DDM}}", "regression"
    )
    assert "is not a river.drift detector" in spec_problem(
        "drift: {concept: {detector: river.linear_model.LogisticRegression}}"
    )
    assert "drift.covariate.check_every: 5000 is more than window_size" in spec_problem(
        "drift: {covariate: {check_every: 5000}}"
    )
    assert "drift.prediction.features: only covariate drift" in spec_problem(
        "drift: {prediction: {features: [a]}}"
    )
    assert "drift.covariate.alpha" in spec_problem("drift: {covariate: {alpha: 0}}")
    assert "drift.reaction: 'reset' is not of type 'object'" in spec_problem(
        "drift: {reaction: reset}"
    )


def test_the_default_drift_section():
    spec = parse_spec(
        "name: p\ntask: binary\nmodels: [{name: m, river: river.linear_model.LogisticRegression}]"
    )
    assert spec.drift == DriftSpec()
    assert spec.drift.concept.detector == "river.drift.ADWIN"


def test_a_checkpoint_from_before_the_shared_cool_down_restores_alike():
    """Engines checkpointed when a signal kept `seen` and `quiet_until` itself go on with
    the same counts."""
    records = list(outcomes(abrupt(), DRIFT_AT + 3000))
    reference = DriftEngine("p", "binary", DriftSpec())
    old = DriftEngine("p", "binary", DriftSpec())
    run(reference, iter(records[:DRIFT_AT]))
    run(old, iter(records[:DRIFT_AT]))
    for signal in old.signals.values():  # the old layout
        cool = signal.__dict__.pop("cool")
        signal.__dict__.update(seen=cool.seen, quiet_until=cool.quiet_until)
    restored = pickle.loads(pickle.dumps(old))
    tail = iter(records[DRIFT_AT:])
    assert run(restored, tail) == run(reference, iter(records[DRIFT_AT:]))
    assert {k: s.cool for k, s in restored.signals.items()} == {
        k: s.cool for k, s in reference.signals.items()
    }
