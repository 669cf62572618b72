"""The pipeline page (`/ui`) and what it shows of a pipeline in one answer
(`/pipelines/{p}/page`), which `headwater report` embeds in a file of its own (issue 27)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from services.api import models as m
from services.api.context import ERRORS, ApiError, Context, Ctx, PipelineName
from services.api.page_html import render_page
from services.api.routes.history import read_history
from services.api.routes.models import read_versions, state_of_model
from services.api.routes.rollout import read_rollout
from shared.served_versions import read_served

router = APIRouter()

ALERTS_SHOWN = 500  # the newest drift alerts a page marks on its charts


def page_data(ctx: Context, pipeline: str) -> m.PageData:
    """Everything the page draws for one pipeline, from the same reads as the JSON routes
    (the pipeline's view read once, for all its models)."""
    view = ctx.reader.view(pipeline)
    if view is None:
        raise ApiError(404, "unknown_pipeline", f"no pipeline {pipeline!r}")
    names = view.models
    spec = view.spec or {}
    return m.PageData(
        pipeline=pipeline,
        read_at=time.time(),
        running=ctx.reader.learner_running(view.status),
        champion=spec.get("champion"),
        serving_by=str((spec.get("serving") or {}).get("by", "learner")),
        scorers=read_served(ctx.reader.client, pipeline),
        status=None if view.status is None else view.status.fields(),
        models=[state_of_model(ctx, view, pipeline, n) for n in names],
        history=read_history(ctx, pipeline),
        alerts=ctx.reader.alerts(pipeline, ALERTS_SHOWN),
        rollout=read_rollout(ctx, pipeline, 100),
        versions=read_versions(ctx, pipeline, names[0]).versions if names else [],
    )


@router.get(
    "/pipelines/{pipeline}/page",
    response_model=m.PageData,
    tags=["pipelines"],
    responses=ERRORS,
)
def page(ctx: Ctx, pipeline: PipelineName) -> m.PageData:
    """The pipeline page's data in one answer: model states, metric history, drift alerts,
    rollout and checkpoints (each as its own route gives it)."""
    return page_data(ctx, pipeline)


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
def ui() -> HTMLResponse:
    """The page: one HTML document with its styles and script inline, fetching the JSON
    routes every few seconds."""
    return HTMLResponse(render_page(None))
