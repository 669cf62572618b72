"""Each model's metrics over the stream, as the learner keeps them: the pipeline page's
curves (issue 27)."""

from __future__ import annotations

import json

from fastapi import APIRouter

from services.api import models as m
from services.api.context import ERRORS, Context, Ctx, PipelineName, known_pipeline
from shared.keys import PipelineKeys

router = APIRouter()


@router.get(
    "/pipelines/{pipeline}/history",
    response_model=m.HistoryView,
    tags=["models"],
    responses=ERRORS,
)
def history(ctx: Ctx, pipeline: PipelineName) -> m.HistoryView:
    """The series of metric points the learner took, one per run of labels; empty before
    its first point."""
    return read_history(ctx, pipeline)


def read_history(ctx: Context, pipeline: str) -> m.HistoryView:
    known_pipeline(ctx, pipeline)
    raw = ctx.reader.client.get(PipelineKeys(pipeline).learner_history)
    if raw is None:
        return m.HistoryView(pipeline=pipeline, every=None, points=[])
    series = json.loads(raw)
    return m.HistoryView(pipeline=pipeline, every=series["every"], points=series["points"])
