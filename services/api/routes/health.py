"""Liveness and readiness."""

from __future__ import annotations

import time
from typing import Any

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.api import models as m
from services.api.context import Ctx, as_int

router = APIRouter()


@router.get("/healthz", response_model=m.Health, tags=["health"])
async def healthz() -> m.Health:
    """The process is up (no dependency checked)."""
    return m.Health(status="ok")


@router.get(
    "/readyz",
    response_model=m.Readiness,
    tags=["health"],
    responses={503: {"model": m.Readiness, "description": "Not ready."}},
)
def readyz(ctx: Ctx) -> Any:
    """Redis answers, and every running learner's newest checkpoint is fresh."""
    try:
        ctx.reader.client.ping()
    except redis.RedisError:
        body = m.Readiness(status="not_ready", redis=False, stale_checkpoints=[])
        return JSONResponse(body.model_dump(), status_code=503)
    stale = []
    now = time.time()
    for pipeline in ctx.reader.pipelines():
        status = ctx.reader.status(pipeline)
        if not ctx.reader.learner_running(status, now):
            continue
        info = ctx.reader.latest(pipeline)
        assert status is not None  # running
        if info is None:
            if status.events_seen:
                stale.append(pipeline)  # records applied, none checkpointed yet
            continue
        # An idle learner's checkpoint may be old and still hold everything it learned
        saved = (as_int(info.meta.get("events_seen")), as_int(info.meta.get("labels_learned")))
        unsaved = (status.events_seen, status.labels_learned) != saved
        if unsaved and now - info.created_at > ctx.settings.api_checkpoint_stale_s:
            stale.append(pipeline)
    body = m.Readiness(
        status="not_ready" if stale else "ready", redis=True, stale_checkpoints=stale
    )
    return JSONResponse(body.model_dump(), status_code=503 if stale else 200)
