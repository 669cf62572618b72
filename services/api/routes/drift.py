"""A pipeline's drift alerts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.api import models as m
from services.api.context import ERRORS, Ctx, PipelineName, known_pipeline

router = APIRouter()


@router.get(
    "/pipelines/{pipeline}/drift",
    response_model=m.DriftList,
    tags=["drift"],
    responses=ERRORS,
)
def drift(
    ctx: Ctx,
    pipeline: PipelineName,
    limit: Annotated[int, Query(ge=1, le=1000, description="Newest alerts to return.")] = 100,
) -> m.DriftList:
    """Recent drift alerts (drift-alert/v1), newest first."""
    known_pipeline(ctx, pipeline)
    return m.DriftList(pipeline=pipeline, alerts=ctx.reader.alerts(pipeline, limit))
