import itertools

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing, tree

from services.learner.core import LearnerCore
from services.replay.datasets import dataset_events
from shared.messages import Event, Label, Lineage, MessageError
from shared.spec import load_spec, parse_spec
from tests.reference import process, process_label

from .test_spec import ROOT


def run_core(core, events):
    out = []
    for offset, ev in enumerate(events):
        out.extend(process(core, ev, Lineage("events", 0, offset))[0])
    return out


def test_phishing_matches_river_progressive_val_score():
    core = LearnerCore.from_spec(load_spec(ROOT / "ops/pipelines/phishing.yaml"))
    predictions = run_core(core, dataset_events("Phishing"))
    river_lr = evaluate.progressive_val_score(
        datasets.Phishing(),
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.Accuracy(),
    )
    river_tree = evaluate.progressive_val_score(
        datasets.Phishing(), tree.HoeffdingTreeClassifier(grace_period=50), metrics.Accuracy()
    )
    values = core.metric_values()
    assert values["logreg"]["Accuracy"] == pytest.approx(river_lr.get(), abs=0)
    assert values["hoeffding-tree"]["Accuracy"] == pytest.approx(river_tree.get(), abs=0)
    assert f"{values['logreg']['Accuracy']:.2%}" == "89.28%"
    assert len(predictions) == 3 * 1250
    assert core.labels_learned == 1250
    lr = [p for p in predictions if p.model == "logreg"]
    assert all(p.proba is not None and abs(sum(v for _, v in p.proba) - 1) < 1e-9 for p in lr[1:])


def test_regression_and_multiclass_match_river():
    core = LearnerCore.from_spec(load_spec(ROOT / "ops/pipelines/trump-approval.yaml"))
    run_core(core, dataset_events("TrumpApproval"))
    model = preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=0.1)
    expected = evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    assert core.metric_values()["linreg"]["MAE"] == expected.get()

    spec = load_spec(ROOT / "ops/pipelines/image-segments.yaml")
    core = LearnerCore.from_spec(spec)
    events = list(itertools.islice(dataset_events("ImageSegments"), 500))
    predictions = run_core(core, events)
    assert {p.prediction for p in predictions if p.model == "knn"} <= {e.label for e in events} | {
        None
    }


def test_unlabelled_events_are_scored_but_not_learned():
    core = LearnerCore.from_spec(
        parse_spec(
            "name: p\ntask: binary\nmodels: [{name: m, river: river.tree.HoeffdingTreeClassifier}]"
        )
    )
    out = process(core, Event("e1", "u", 0.0, {"x": 1.0, "gone": None}), Lineage("events", 0, 0))[0]
    assert out[0].prediction is None or isinstance(out[0].prediction, bool)
    assert core.events_seen == 1
    assert core.labels_learned == 0


@pytest.mark.parametrize(
    ("task", "label"),
    [("regression", "high"), ("regression", True), ("multiclass", 1.5), ("binary", 0.5)],
)
def test_labels_the_task_cannot_learn_are_rejected(task, label):
    model = (
        "river.linear_model.LinearRegression"
        if task == "regression"
        else "river.tree.HoeffdingTreeClassifier"
    )
    core = LearnerCore.from_spec(
        parse_spec(f"name: p\ntask: {task}\nmodels: [{{name: m, river: {model}}}]\n")
    )
    with pytest.raises(MessageError) as info:
        process(core, Event("e1", "u", 0.0, {"x": 1.0}, label), Lineage("events", 0, 0))
    assert info.value.reason == "bad_label"
    assert core.events_seen == 0


@pytest.mark.parametrize("delay", [0, 10, 100])
def test_delayed_labels_through_the_ordered_merge_match_river(delay):
    """Replay's plan, fetched in a shuffled interleaving, merged, then joined by the core."""
    import random

    from services.replay.plan import plan
    from shared.ordering import OrderedMerge

    spec = load_spec(ROOT / "ops/pipelines/phishing.yaml")
    core = LearnerCore.from_spec(spec)
    sends = list(plan(dataset_events("Phishing"), delay))
    topics = {"event": [], "label": []}
    for send in sends:
        topics[send.kind].append(send.message)
    clock = [0.0]
    merge = OrderedMerge(idle_s=1.0, clock=lambda: clock[0])
    merge.set_inputs(topics)
    rng = random.Random(delay)
    cursors = dict.fromkeys(topics, 0)
    while any(cursors[k] < len(topics[k]) for k in topics):
        kind = rng.choice([k for k in topics if cursors[k] < len(topics[k])])
        for offset in range(
            cursors[kind], min(cursors[kind] + rng.randint(1, 50), len(topics[kind]))
        ):
            msg = topics[kind][offset]
            merge.push(kind, (msg.ts, 0 if kind == "label" else 1, 0, offset), (kind, offset, msg))
            cursors[kind] = offset + 1
        for kind_, offset, msg in merge.pop_ready():
            if kind_ == "label":
                assert process_label(core, msg)[0] == "joined"
            else:
                process(core, msg, Lineage("events", 0, offset))
    clock[0] = 10.0
    for kind_, offset, msg in merge.pop_ready():
        if kind_ == "label":
            assert process_label(core, msg)[0] == "joined"
        else:
            process(core, msg, Lineage("events", 0, offset))
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    expected = evaluate.progressive_val_score(
        datasets.Phishing(), model, metrics.Accuracy(), delay=delay
    )
    assert core.metric_values()["logreg"]["Accuracy"] == expected.get()
    assert core.labels_learned == 1250
    assert not core.pending


def test_labels_past_the_horizon_or_unknown_only_count():
    spec = parse_spec(
        "name: p\ntask: binary\nmodels: [{name: m, river: river.linear_model.LogisticRegression}]\n"
        "labels: {horizon_events: 2, default: false}\n"
    )
    core = LearnerCore.from_spec(spec)

    def event(i):
        process(core, Event(f"e{i}", "u", float(i), {"x": float(i)}), Lineage("events", 0, i))

    for i in range(4):
        event(i)
    assert list(core.pending) == ["e2", "e3"]
    assert core.expired_defaulted == 2  # e0 and e1 learned the default label
    assert core.labels_learned == 2
    assert (
        process_label(core, Label("e0", "u", 5.0, True))[0] == "early"
    )  # too late: waits, in vain
    assert process_label(core, Label("zz", "u", 5.0, True))[0] == "early"  # never seen
    assert process_label(core, Label("e3", "u", 5.0, True))[0] == "joined"
    assert core.labels_learned == 3
    event(4)
    assert core.labels_unmatched == 0
    event(5)
    assert core.labels_unmatched == 2
    assert not core.early


def test_a_label_before_its_event_is_joined_when_the_event_comes():
    core = LearnerCore.from_spec(load_spec(ROOT / "ops/pipelines/phishing.yaml"))
    assert process_label(core, Label("e1", "u", 1.0, True))[0] == "early"
    process(core, Event("e1", "u", 1.0, {"x": 1.0}), Lineage("events", 0, 0))
    assert core.labels_learned == 1
    assert not core.pending
    assert not core.early


class _Refuses:
    """A model that cannot take a record: at predict (`at="predict"`) or at learn."""

    def __init__(self, at):
        self.at = at

    def predict(self, x):
        if self.at == "predict":
            raise ValueError("no")
        return True, None

    def learn(self, x, y):
        raise ValueError("no")

    def predict_learn(self, x, y):
        self.predict(x)
        self.learn(x, y)


def _two_models(refuses_at):
    spec = parse_spec(
        """
name: two
task: binary
models:
  - name: logreg
    river: river.linear_model.LogisticRegression
  - name: refuses
    river: river.linear_model.LogisticRegression
""",
        "two",
    )
    core = LearnerCore.from_spec(spec)
    core.models["refuses"] = _Refuses(refuses_at)
    core._plan = None
    return core


def test_a_model_failing_to_learn_leaves_the_counts_true():
    """The record is dead-lettered; the models before it learned it, the failing one not."""
    core = _two_models("learn")
    with pytest.raises(ValueError, match="no"):
        core.score("e2", "a", 2.0, {"x": 1.0}, True)
    assert core.learned == {"logreg": 1, "refuses": 0}
    assert core.labels_learned == 0  # not every model learned it


def test_a_model_failing_to_predict_teaches_no_model_and_loses_no_early_label():
    core = _two_models("predict")
    assert core.join("e1", True) == ("early", [])
    with pytest.raises(ValueError, match="no"):
        core.score("e1", "a", 1.0, {"x": 1.0}, None)
    with pytest.raises(ValueError, match="no"):
        core.score("e2", "a", 2.0, {"x": 1.0}, True)
    assert core.learned == {"logreg": 0, "refuses": 0}
    assert core.models["logreg"].estimator._weights.to_dict() == {}
    assert "e1" in core.early  # still waiting; past the horizon it counts as unmatched


def test_a_paused_model_predicts_and_is_scored_but_learns_nothing():
    """The API's pause: the paused model's state stays as it was while the others learn;
    resumed, it learns again."""
    import pickle

    core = LearnerCore.from_spec(load_spec(ROOT / "ops/pipelines/phishing.yaml"))
    events = list(dataset_events("Phishing"))
    run_core(core, events[:500])
    frozen = pickle.dumps(core.models["logreg"])
    learned = dict(core.learned)
    core.set_paused(frozenset({"logreg", "no-such-model"}))
    assert core.paused == frozenset({"logreg"})
    predictions = run_core(core, events[500:700])
    assert len([p for p in predictions if p.model == "logreg"]) == 200  # still predicting
    assert pickle.dumps(core.models["logreg"]) == frozen
    assert core.learned["logreg"] == learned["logreg"]
    assert core.learned["hoeffding-tree"] == learned["hoeffding-tree"] + 200
    assert core.labels_skipped_paused == 200
    assert core.labels_learned == 700
    # resumed: the same as a model that never saw events 500..699
    core.set_paused(frozenset())
    run_core(core, events[700:800])
    reference = LearnerCore.from_spec(load_spec(ROOT / "ops/pipelines/phishing.yaml"))
    run_core(reference, events[:500] + events[700:800])
    assert pickle.dumps(core.models["logreg"]) == pickle.dumps(reference.models["logreg"])
    assert core.learned["logreg"] == 600


def test_serve_batch_direct_path_matches_score_call_by_call(monkeypatch):
    """`serve_batch` calls a lone model's `predict_learn` itself for labelled events
    (`direct_step`) and counts them per run: the results and the counters are those of
    `score` called for each record, with unlabelled events, labels and a record the model
    refuses (dead-lettered mid-run) in between."""
    from services.learner.worker import EVENT, FAILED, LABEL, serve_batch

    spec = parse_spec(
        "name: p\ntask: binary\nlabels: {horizon_events: 5}\nmodels:\n"
        "  - name: lr\n    river: {pipeline: [river.preprocessing.StandardScaler, "
        "river.linear_model.LogisticRegression]}\n"
    )
    events = list(itertools.islice(dataset_events("Phishing"), 60))
    items: list[tuple] = []
    for i, e in enumerate(events):
        label = None if i % 7 == 3 else e.label
        data = {"bad": "a string"} if i == 11 else e.data
        items.append((EVENT, e.event_id, e.entity, e.ts, data, label))
        if i % 7 == 4:  # the unlabelled one's label, a record later
            items.append((LABEL, events[i - 1].event_id, events[i - 1].label))
        if i == 30:  # a label before its event: early, so no direct run until it is met
            items.append((LABEL, events[32].event_id, events[32].label))

    def served(direct: bool) -> tuple:
        core = LearnerCore.from_spec(spec)
        core.track_metrics = False  # as both workers run it
        if not direct:
            monkeypatch.setattr(core, "direct_step", lambda: None)
        results = [
            r
            for start in range(0, len(items), 25)
            for r in serve_batch(core, items[start : start + 25])[1]
        ]
        counters = (core.events_seen, core.labels_learned, dict(core.learned), len(core.pending))
        return results, counters, core.models["lr"].predict(events[0].data)

    direct, by_score = served(True), served(False)
    assert direct == by_score
    results, counters, _ = direct
    assert [r[0] for r in results].count(FAILED) == 1
    # the refused record is neither seen nor learned; the last unlabelled one still waits
    assert counters[:2] == (59, 58)
    assert counters[3] == 1
