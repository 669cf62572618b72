"""The learner's reaction to concept drift (drift.reaction), and the monitor's alert for it."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterator

import msgspec
import pytest
from river.datasets import synth

from services.learner.core import LearnerCore
from services.learner.outputs import mark_records
from services.learner.reaction import carried_over
from services.learner.worker import EVENT, LABEL, SCORED, serve_batch
from services.monitor.engine import DriftEngine
from shared.codec import encode
from shared.messages import Event, Lineage, Outcome
from shared.messages.errors import MessageError
from shared.messages.outcome import Reaction
from shared.spec import SpecError, parse_spec
from tests.reference import process

DRIFT_AT = 20_000
SPEC = """
name: p
task: binary
models:
  - name: lr
    river: {pipeline: [river.preprocessing.StandardScaler, river.linear_model.LogisticRegression]}
  - name: tree
    river: river.tree.HoeffdingTreeClassifier
drift:
  reaction: {action: %s, trial_labels: 500}
"""


def sea(variant_after: int = 3, n: int = 2 * DRIFT_AT) -> Iterator[tuple[dict, bool]]:
    """SEA with an abrupt drift at DRIFT_AT; named features, as events carry them."""
    stream = itertools.chain(
        itertools.islice(synth.SEA(seed=42, variant=0), DRIFT_AT),
        synth.SEA(seed=7, variant=variant_after),
    )
    for x, y in itertools.islice(stream, n):
        yield {f"x{k}": v for k, v in x.items()}, y


def run(core: LearnerCore, records: list[tuple[dict, bool]], start: int = 0) -> list[Outcome]:
    """Inline labels, through the reference `process`: every outcome, in order."""
    out: list[Outcome] = []
    for i, (x, y) in enumerate(records, start):
        out += process(core, Event(f"e{i}", "u", float(i), x, y), Lineage("features", 0, i))[1]
    return out


def at(event_id: str) -> int:
    return int(event_id[1:])


def marked(outcomes: list[Outcome]) -> list[tuple[int, str, str]]:
    return [(at(o.event_id), o.model, o.reaction.action) for o in outcomes if o.reaction]


def accuracy(outcomes: list[Outcome], model: str, start: int, stop: int) -> float:
    window = [o for o in outcomes if o.model == model and start <= at(o.event_id) < stop]
    return sum(o.prediction == o.label for o in window) / len(window)


@pytest.fixture(scope="module")
def records() -> list[tuple[dict, bool]]:
    return list(sea())


@pytest.fixture(scope="module")
def unreacted(records) -> list[Outcome]:
    return run(LearnerCore.from_spec(parse_spec(SPEC % "none")), records)


def test_reset_happens_where_the_monitor_alone_would_alert_and_the_monitor_says_so(
    records, unreacted
):
    spec = parse_spec(SPEC % "reset")
    core = LearnerCore.from_spec(spec)
    outcomes = run(core, records)
    # Without a reaction the monitor runs the same detector on the same errors: its first
    # concept alert per model is where the learner reacts.
    alone = DriftEngine("p", "binary", parse_spec(SPEC % "none").drift)
    first_alerts: dict[str, int] = {}
    for o in unreacted:
        for a in alone.observe_outcome(o, o.lineage):
            if a.kind == "concept":
                first_alerts.setdefault(a.model or "", at(a.event_id))
    marks = marked(outcomes)
    assert marks, core.reactions
    first_marks: dict[str, int] = {}
    for position, model, action in marks:
        assert action == "reset"
        first_marks.setdefault(model, position)
    assert first_marks == first_alerts
    assert all(DRIFT_AT <= p < DRIFT_AT + 1000 for p in first_marks.values())
    # Up to the first reaction the two runs are the same; the reset model is fresh after.
    first = min(first_marks.values())
    assert [
        msgspec.structs.replace(o, reaction=None) for o in outcomes if at(o.event_id) <= first
    ] == [o for o in unreacted if at(o.event_id) <= first]
    assert outcomes[len(unreacted) // 2 :] != unreacted[len(unreacted) // 2 :]
    assert core.reactions is not None
    assert core.reactions.counts["resets"] == len(marks)
    # SEA 0 -> 3 moves the boundary: the scaled logistic regression, reset, recovers faster
    assert accuracy(outcomes, "lr", DRIFT_AT, DRIFT_AT + 2000) > accuracy(
        unreacted, "lr", DRIFT_AT, DRIFT_AT + 2000
    )
    # With the reaction on, the monitor publishes the learner's marks as its concept alerts.
    monitor = DriftEngine("p", "binary", spec.drift)
    concept = [
        a for o in outcomes for a in monitor.observe_outcome(o, o.lineage) if a.kind == "concept"
    ]
    assert [(at(a.event_id), a.model, a.action) for a in concept] == marks
    mark = next(o for o in outcomes if o.reaction)
    assert concept[0].detector == mark.reaction.detector == "ADWIN"
    assert concept[0].statistics == mark.reaction.statistics
    assert concept[0].statistics["error_after"] > concept[0].statistics["error_before"]


def test_a_fallback_learns_alongside_and_replaces_the_model_only_if_it_did_better(records):
    core = LearnerCore.from_spec(parse_spec(SPEC % "fallback"))
    reactions = core.reactions
    assert reactions is not None
    before_drift = run(core, records[:DRIFT_AT])
    assert marked(before_drift) == []
    kept_lr, kept_tree = core.models["lr"], core.models["tree"]
    outcomes = run(core, records[DRIFT_AT : DRIFT_AT + 300], DRIFT_AT)
    marks = marked(outcomes)
    assert marks
    assert {a for _, _, a in marks} == {"fallback"}
    # on trial, the models still serve: nothing replaced yet
    assert reactions.trials
    assert core.models["lr"] is kept_lr
    assert core.models["tree"] is kept_tree
    marks += marked(run(core, records[DRIFT_AT + 300 : DRIFT_AT + 2000], DRIFT_AT + 300))
    assert reactions.trials == {}  # 500 labels each: every trial is over
    counts = reactions.counts
    assert counts["fallbacks_started"] == len(marks)
    assert counts["fallbacks_promoted"] + counts["fallbacks_dropped"] == len(marks)
    # SEA 0 -> 3 favours a fresh logistic regression over the drifted one
    assert "lr" in {m for _, m, _ in marks}
    assert core.models["lr"] is not kept_lr
    assert counts["fallbacks_promoted"] >= 1


def test_a_restored_core_reacts_alike(records):
    """Checkpointed mid-trial and restored: the same outcomes and reactions as a run that
    was never stopped (the reaction state is part of the checkpoint)."""
    spec = parse_spec(SPEC % "fallback")
    whole = run(LearnerCore.from_spec(spec), records[: DRIFT_AT + 3000])
    core = LearnerCore.from_spec(spec)
    head = run(core, records[: DRIFT_AT + 300])
    assert core.reactions is not None
    assert core.reactions.trials  # mid-trial
    restored = pickle.loads(pickle.dumps(core))
    tail = run(restored, records[DRIFT_AT + 300 : DRIFT_AT + 3000], DRIFT_AT + 300)
    assert head + tail == whole
    assert marked(whole)


def test_delayed_labels_are_reacted_to_at_the_label_and_the_worker_carries_the_marks(records):
    """Labels from the labels topic, 50 events late, through the model side's
    `serve_batch`: the marks come with the label's result, and `mark_records` puts them on
    the encoded outcomes, byte for byte as an outcome built with its reaction."""
    core = LearnerCore.from_spec(parse_spec(SPEC % "reset"))
    core.track_metrics = False
    items: list[tuple] = []
    for i, (x, _) in enumerate(records[: DRIFT_AT + 2000]):
        items.append((EVENT, f"e{i}", "u", float(i), x, None))
        if i >= 50:
            items.append((LABEL, f"e{i - 50}", records[i - 50][1]))
    _, results = serve_batch(core, items)
    with_marks = [(item, r) for item, r in zip(items, results, strict=True) if len(r) > 3]
    assert with_marks, core.reactions
    for item, result in with_marks:
        assert item[0] == LABEL  # the label completed the join
        assert result[0] != SCORED
        event_id = item[1]
        assert at(event_id) >= DRIFT_AT
        for m_event, _, detector, action, _ in result[3]:  # both models may react at once
            assert (m_event, detector, action) == (event_id, "ADWIN", "reset")
        (_, _, _, version, scores, label, source, lag) = result[2][0]
        names = ("lr", "tree")
        plain = [
            Outcome(
                event_id,
                "u",
                float(at(event_id)),
                "p",
                name,
                version,
                "binary",
                pred,
                proba,
                label,
                source,
                lag,
                Lineage("labels", 0, 1),
            )
            for name, (pred, proba) in zip(names, scores, strict=True)
        ]
        encoded: list[tuple[bytes, bytes | None]] = [(encode(o), b"u") for o in plain]
        mark_records(encoded, 0, result[3])
        reactions = {m: Reaction(d, a, s) for _, m, d, a, s in result[3]}
        expected = [
            encode(msgspec.structs.replace(o, reaction=reactions.get(o.model))) for o in plain
        ]
        assert [value for value, _ in encoded] == expected
        decoded = [Outcome.from_wire(msgspec.msgpack.decode(v)) for v, _ in encoded]
        assert [o.reaction for o in decoded] == [reactions.get(n) for n in names]


def test_a_bad_reaction_on_the_wire_is_refused():
    wire = msgspec.msgpack.decode(
        encode(
            Outcome(
                "e1",
                "u",
                1.0,
                "p",
                "m",
                0,
                "binary",
                True,
                None,
                False,
                "inline",
                0,
                Lineage("features", 0, 1),
                Reaction("ADWIN", "reset", {"width": 3.0}),
            )
        )
    )
    assert Outcome.from_wire(wire).reaction == Reaction("ADWIN", "reset", {"width": 3.0})
    for bad, reason in (
        ({"detector": "ADWIN", "action": "retrain", "statistics": {}}, "bad_value"),
        ({"detector": "ADWIN", "action": "reset", "statistics": {"w": "x"}}, "wrong_type"),
        ({"detector": "ADWIN", "action": "reset"}, "missing_field"),
        ("reset", "not_an_object"),
    ):
        with pytest.raises(MessageError) as info:
            Outcome.from_wire({**wire, "reaction": bad})
        assert info.value.reason == reason
    # no reaction: the field is absent on the wire, as before reactions existed
    plain = msgspec.msgpack.decode(
        encode(msgspec.structs.replace(Outcome.from_wire(wire), reaction=None))
    )
    assert "reaction" not in plain


def test_a_stationary_stream_gets_no_reaction():
    records = [
        ({f"x{k}": v for k, v in x.items()}, y)
        for x, y in itertools.islice(synth.SEA(seed=3, variant=0), 30_000)
    ]
    core = LearnerCore.from_spec(parse_spec(SPEC % "reset"))
    assert marked(run(core, records)) == []
    assert core.reactions is not None
    assert core.reactions.counts["resets"] == 0


def spec_problem(drift: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(
            "name: p\ntask: binary\nmodels: [{name: m, river: river.linear_model.Perceptron}]\n"
            + drift
        )
    return str(info.value)


def test_bad_reaction_sections_are_refused_with_the_field_named():
    assert "drift.reaction.action" in spec_problem("drift: {reaction: {action: retrain}}")
    assert "drift.reaction.trial_labels" in spec_problem(
        "drift: {reaction: {action: fallback, trial_labels: 0}}"
    )
    assert "which drift.concept.enabled turns off" in spec_problem(
        "drift: {reaction: {action: reset}, concept: {enabled: false}}"
    )
    assert "drift: Additional properties" in spec_problem("drift: {react: reset}")
    # and the default is no reaction at all: the learner's hot path is untouched
    spec = parse_spec(
        "name: p\ntask: binary\nmodels: [{name: m, river: river.tree.HoeffdingTreeClassifier}]"
    )
    assert spec.drift.reaction.action == "none"
    assert LearnerCore.from_spec(spec).reactions is None


def test_a_restore_keeps_the_reaction_state_only_while_the_spec_asks_for_the_same():
    reset = LearnerCore.from_spec(parse_spec(SPEC % "reset")).reactions
    assert reset is not None
    reset.counts["resets"] = 2  # as a checkpoint would hold it
    same = LearnerCore.from_spec(parse_spec(SPEC % "reset")).reactions
    fallback = LearnerCore.from_spec(parse_spec(SPEC % "fallback")).reactions
    assert carried_over(reset, same) is reset
    assert carried_over(reset, fallback) is fallback  # changed: the spec's, afresh
    assert carried_over(reset, None) is None  # turned off
    assert carried_over(None, same) is same  # turned on (or a checkpoint from before)


def test_a_paused_model_is_never_reset_or_put_on_trial(records):
    """An operator's pause wins: the drifted, paused model stays as it was."""
    for action in ("reset", "fallback"):
        core = LearnerCore.from_spec(parse_spec(SPEC % action))
        run(core, records[:DRIFT_AT])
        kept = core.models["lr"]
        core.set_paused(frozenset({"lr"}))
        outcomes = run(core, records[DRIFT_AT : DRIFT_AT + 3000], DRIFT_AT)
        assert core.models["lr"] is kept, action
        assert "lr" not in {m for _, m, _ in marked(outcomes)}
        assert core.reactions is not None
        assert "lr" not in core.reactions.trials
