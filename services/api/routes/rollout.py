"""The rollout: what serves which entities and why (anyone), and operators' changes
(bearer token), which the learner applies between two batches."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.api import models as m
from services.api.context import (
    ADMIN_ERRORS,
    ApiError,
    Context,
    Ctx,
    PipelineName,
    admin,
    known_pipeline,
)
from shared.rollout.state import RolloutError, Routing, check_request
from shared.rollout.store import RolloutStore

router = APIRouter()


def _store(ctx: Context, pipeline: str) -> RolloutStore:
    known_pipeline(ctx, pipeline)
    return RolloutStore(ctx.reader.client, pipeline)


@router.get("/pipelines/{pipeline}/rollout", response_model=m.RolloutView, tags=["rollout"])
def rollout(ctx: Ctx, pipeline: PipelineName, limit: int = 20) -> m.RolloutView:
    """The routing, the phase and the running test's evidence, the champion's and the
    challenger's metrics and their difference, and the newest decisions; `state` null for
    a pipeline without a rollout."""
    return read_rollout(ctx, pipeline, limit)


def read_rollout(ctx: Context, pipeline: str, limit: int) -> m.RolloutView:
    state, decisions = _store(ctx, pipeline).read(max(1, min(limit, 100)))
    if state is None:  # no serving.rollout in its spec, or its learner has not run with one
        return m.RolloutView(pipeline=pipeline, state=None, metrics={}, deltas={}, decisions=[])
    routing = state["routing"]
    status = ctx.reader.status(pipeline)
    every = status.metrics if status is not None else {}
    pair = [name for name in (routing["champion"], routing["challenger"]) if name in every]
    metrics = {name: every[name] for name in pair}
    deltas = {}
    if len(pair) == 2:
        champion, challenger = metrics[pair[0]], metrics[pair[1]]
        deltas = {k: challenger[k] - champion[k] for k in champion if k in challenger}
    return m.RolloutView(
        pipeline=pipeline, state=state, metrics=metrics, deltas=deltas, decisions=decisions
    )


@router.post(
    "/pipelines/{pipeline}/rollout",
    response_model=m.AdminAccepted,
    status_code=202,
    tags=["admin"],
    responses=ADMIN_ERRORS,
    dependencies=[Depends(admin)],
)
def change_rollout(ctx: Ctx, pipeline: PipelineName, body: m.RolloutChange) -> m.AdminAccepted:
    """Switch, roll back, or set the policy, challenger or share; the learner applies it
    within a second or so and publishes the decision (model.events, `GET .../rollout`)."""
    store = _store(ctx, pipeline)
    request = body.model_dump(exclude_none=True)
    state, _ = store.read(1)
    if state is None:
        raise ApiError(
            409,
            "no_rollout",
            f"pipeline {pipeline!r} has no rollout: its spec has no serving.rollout section, "
            "or its learner has not run with one",
        )
    routing = Routing.from_wire(state["routing"])
    try:
        check_request(request, ctx.reader.models(pipeline), routing)
    except RolloutError as exc:
        raise ApiError(422, "bad_rollout_request", str(exc)) from exc
    store.request(request)
    return m.AdminAccepted(
        pipeline=pipeline,
        model=routing.champion,
        action=f"rollout {body.action}",
        detail="requested; the learner applies it between two batches and publishes the "
        "decision on the model-events topic",
    )
