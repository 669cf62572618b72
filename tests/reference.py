"""The learner's steps in one go, as messages: the in-process reference tests compare the
service against (the service itself builds records in services/learner/publisher.py)."""

from __future__ import annotations

from services.learner.core import LearnerCore
from services.learner.outputs import mark_outcomes, outcomes, predictions
from shared.messages import Event, Label, Lineage, Outcome, Prediction
from shared.models.inputs import model_input
from shared.spec.labels import check_label


def process(
    core: LearnerCore, event: Event, lineage: Lineage
) -> tuple[list[Prediction], list[Outcome]]:
    """`score` one event: its predictions, and the outcomes of the labels it met."""
    if event.label is not None:
        check_label(event.label, core.task)
    x = model_input(event.data, core.vw_text)
    scores, joined = core.score(event.event_id, event.entity, event.ts, x, event.label)
    if event.label is not None:
        inline = (event.event_id, event.entity, event.ts, core.model_version, scores)
        joined.insert(0, (*inline, event.label, "inline", 0))
    names, pipeline, task = core.model_names, core.pipeline, core.task
    out = [o for j in joined for o in outcomes(j, names, pipeline, task, lineage)]
    _mark(core, out)
    return predictions(event, core.model_version, scores, names, pipeline, task, lineage), out


def process_label(
    core: LearnerCore, label: Label, lineage: Lineage | None = None
) -> tuple[str, list[Outcome]]:
    """`join` one label: "joined" or "early", and its outcomes (none without a lineage)."""
    status, joined = core.join(label.event_id, label.label)
    names, pipeline, task = core.model_names, core.pipeline, core.task
    out = (
        [o for j in joined for o in outcomes(j, names, pipeline, task, lineage)]
        if lineage is not None
        else []
    )
    _mark(core, out)
    return status, out


def _mark(core: LearnerCore, out: list[Outcome]) -> None:
    if core.marks:
        mark_outcomes(out, core.marks)
        core.marks.clear()
