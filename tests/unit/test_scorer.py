"""A scorer's pure part: records scored by one snapshot, routed by its rollout, bad ones
counted, never a crash."""

from __future__ import annotations

from services.scorer.scoring import Scorer
from shared.codec import decode, encode
from shared.messages import Event, FeatureRecord, Lineage
from shared.models import build_model
from shared.rollout.state import Routing
from shared.snapshot import ModelSnapshot

MODELS = ("logreg", "tree")


def snapshot(routing: Routing | None = None) -> ModelSnapshot:
    models = {
        "logreg": build_model(
            "logreg", "river", "river.linear_model.LogisticRegression", "binary", "m"
        ),
        "tree": build_model("tree", "river", "river.tree.HoeffdingTreeClassifier", "binary", "m"),
    }
    for i in range(50):
        for m in models.values():
            m.learn({"x": float(i)}, i % 2 == 0)
    return ModelSnapshot("p", "binary", 7, False, models, routing=routing)


def events(n: int) -> list[tuple[str, int, int, bytes]]:
    return [
        ("events.valid", 0, i, encode(Event(f"e{i}", f"u{i}", float(i), {"x": float(i)}).to_wire()))
        for i in range(n)
    ]


def test_every_model_predicts_each_event_without_a_rollout():
    served, shadow = Scorer(False, 10_000).score(snapshot(), events(10))
    assert shadow == []
    records = [decode(value) for value, _ in served]
    assert [(r["event_id"], r["model"]) for r in records] == [
        (f"e{i}", m) for i in range(10) for m in MODELS
    ]
    assert {r["model_version"] for r in records} == {7}
    assert records[0]["lineage"] == {"topic": "events.valid", "partition": 0, "offset": 0}
    assert served[0][1] == b"u0"  # keyed by entity


def test_a_rollout_serves_one_model_per_event_and_keeps_the_shadow_apart():
    scorer = Scorer(False, 10_000)
    served, shadow = scorer.score(snapshot(Routing("logreg", "tree", "shadow")), events(20))
    assert {decode(v)["model"] for v, _ in served} == {"logreg"}
    assert {decode(v)["model"] for v, _ in shadow} == {"tree"}
    assert len(served) == len(shadow) == 20
    canary = Routing("logreg", "tree", "canary", 0.5)
    served, shadow = scorer.score(snapshot(canary), events(200))
    assert shadow == []
    assert [decode(v)["model"] for v, _ in served] == [canary.route(f"u{i}")[0] for i in range(200)]
    assert scorer.served == {
        "logreg": 20 + sum(canary.route(f"u{i}")[0] == "logreg" for i in range(200)),
        "tree": sum(canary.route(f"u{i}")[0] == "tree" for i in range(200)),
    }


def test_bad_records_are_counted_by_reason_and_the_rest_scored():
    scorer = Scorer(False, 10_000)
    good = events(3)
    bad = [
        ("events.valid", 0, 10, b"\xc1"),  # not MessagePack
        ("events.valid", 0, 11, encode({"event_id": "x"})),  # not an event
        ("events.valid", 0, 12, encode(Event("e", "u", 1.0, {"x": 1.0}, [1]).to_wire())),
    ]
    served, _ = scorer.score(snapshot(), good + bad)
    assert len(served) == 3 * len(MODELS)
    assert scorer.tally["scored"] == 3
    assert sum(n for reason, n in scorer.tally.items() if reason != "scored") == 3


def test_a_features_record_re_emitted_upstream_is_scored_once():
    def record(offset: int, upstream: int) -> tuple[str, int, int, bytes]:
        e = Event(f"e{upstream}", "u", float(upstream), {"x": 1.0})
        value = FeatureRecord(e, {"x": 1.0}, (), Lineage("events.valid", 0, upstream))
        return ("features", 0, offset, encode(value.to_wire()))

    scorer = Scorer(True, 10_000)
    served, _ = scorer.score(snapshot(), [record(0, 5), record(1, 6), record(2, 5)])
    assert [decode(v)["event_id"] for v, _ in served] == ["e5", "e5", "e6", "e6"]
    assert scorer.tally["duplicate"] == 1
