"""Operator actions (bearer token): rollback, pause, resume."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.api import models as m
from services.api.context import (
    ADMIN_ERRORS,
    ApiError,
    Context,
    Ctx,
    ModelName,
    PipelineName,
    admin,
    known_model,
)
from shared.checkpoint.store import CheckpointNotFoundError

router = APIRouter()


@router.post(
    "/pipelines/{pipeline}/models/{model}/rollback",
    response_model=m.AdminAccepted,
    status_code=202,
    tags=["admin"],
    responses=ADMIN_ERRORS,
    dependencies=[Depends(admin)],
)
def rollback(
    ctx: Ctx, pipeline: PipelineName, model: ModelName, body: m.RollbackRequest
) -> m.AdminAccepted:
    """Ask the running learner to continue the model from a checkpoint version (as
    `headwater models rollback`); it applies the request and writes a new version."""
    known_model(ctx, pipeline, model)
    store = ctx.reader.checkpoints(pipeline)
    try:
        store.request_rollback(model, body.version)
    except CheckpointNotFoundError as exc:
        raise ApiError(404, "unknown_version", str(exc)) from exc
    return m.AdminAccepted(
        pipeline=pipeline,
        model=model,
        action="rollback",
        detail=f"rollback to version {body.version} requested; the learner applies it "
        "and writes a checkpoint whose reason says so",
    )


def _pause(ctx: Context, pipeline: str, model: str, paused: bool) -> m.AdminAccepted:
    known_model(ctx, pipeline, model)
    ctx.reader.set_paused(pipeline, model, paused)
    return m.AdminAccepted(
        pipeline=pipeline,
        model=model,
        action="pause" if paused else "resume",
        detail=(
            "learning paused: the model keeps predicting, labels update its metrics "
            "but teach it nothing"
            if paused
            else "learning resumed"
        ),
    )


@router.post(
    "/pipelines/{pipeline}/models/{model}/pause",
    response_model=m.AdminAccepted,
    status_code=202,
    tags=["admin"],
    responses=ADMIN_ERRORS,
    dependencies=[Depends(admin)],
)
def pause(ctx: Ctx, pipeline: PipelineName, model: ModelName) -> m.AdminAccepted:
    """Stop the model learning (it still predicts); the learner applies it within a
    second or so."""
    return _pause(ctx, pipeline, model, True)


@router.post(
    "/pipelines/{pipeline}/models/{model}/resume",
    response_model=m.AdminAccepted,
    status_code=202,
    tags=["admin"],
    responses=ADMIN_ERRORS,
    dependencies=[Depends(admin)],
)
def resume(ctx: Ctx, pipeline: PipelineName, model: ModelName) -> m.AdminAccepted:
    """Let a paused model learn again."""
    return _pause(ctx, pipeline, model, False)
