"""Pipelines, their models' state and checkpoint history, and predictions."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from services.api import models as m
from services.api.bodies import PredictRoute
from services.api.context import (
    ERRORS,
    ApiError,
    Context,
    Ctx,
    ModelName,
    PipelineName,
    as_int,
    known_model,
    known_pipeline,
)
from services.api.predictor import NoModelError
from services.api.readers import PipelineView, parse_offsets, split_metrics
from shared.checkpoint.codec import CheckpointFormatError, CheckpointTamperedError
from shared.messages import MessageError
from shared.messages.fields import feature_map
from shared.snapshot import SnapshotFormatError
from shared.status import REACTION_COUNTS

router = APIRouter()

# The learner's drift reaction counts, as the API names them
REACTIONS = (*REACTION_COUNTS, "trials")


@router.get("/pipelines", response_model=m.PipelineList, tags=["pipelines"], responses=ERRORS)
def pipelines(ctx: Ctx) -> m.PipelineList:
    """Pipelines with state in Redis (a learner, its checkpoints, or drift alerts)."""
    return m.PipelineList(pipelines=ctx.reader.pipelines())


@router.get(
    "/pipelines/{pipeline}/models",
    response_model=m.ModelList,
    tags=["models"],
    responses=ERRORS,
)
def models(ctx: Ctx, pipeline: PipelineName) -> m.ModelList:
    known_pipeline(ctx, pipeline)
    return m.ModelList(pipeline=pipeline, models=ctx.reader.models(pipeline))


@router.get(
    "/pipelines/{pipeline}/models/{model}",
    response_model=m.ModelState,
    tags=["models"],
    responses=ERRORS,
)
async def model_state(ctx: Ctx, pipeline: PipelineName, model: ModelName) -> m.ModelState:
    """Version, spec, counters, metrics, last checkpoint, input offsets and lag,
    pending labels and drift status of one model."""
    # Redis is read in a worker thread, explicitly: for a route declared with `def`, FastAPI
    # would check the answer in a second one (two thread hops a request, not one).
    return await run_in_threadpool(read_model_state, ctx, pipeline, model)


def read_model_state(ctx: Context, pipeline: str, model: str) -> m.ModelState:
    view = ctx.reader.view(pipeline)
    if view is None:
        raise ApiError(404, "unknown_pipeline", f"no pipeline {pipeline!r}")
    return state_of_model(ctx, view, pipeline, model)


def state_of_model(ctx: Context, view: PipelineView, pipeline: str, model: str) -> m.ModelState:
    """One model's state from the pipeline's view (read once for all its models)."""
    if model not in view.models:
        raise ApiError(404, "unknown_model", f"pipeline {pipeline!r} has no model {model!r}")
    status, info = view.status, view.latest
    meta = info.meta if info is not None else {}
    spec = view.spec or {}
    section = next(
        (s for s in spec.get("models", []) if isinstance(s, dict) and s.get("name") == model),
        None,
    )
    # The learner's status (written about once a second) unless the newest checkpoint
    # is fresher, as right after a checkpoint on stopping.
    written = info.created_at if info is not None else 0.0
    live = status if status is not None and status.updated_at >= written else None
    values = (live.metrics.get(model) if live else None) or dict(
        meta.get("metrics", {}).get(model, {})
    )
    overall, rolling = split_metrics(values)
    now = time.time()
    checkpoint = (
        None
        if info is None
        else m.Checkpoint(
            version=info.version,
            written_at=info.created_at,
            age_seconds=max(0.0, now - info.created_at),
            reason=str(meta.get("reason", "")),
        )
    )
    inputs = []
    for topic, partition, offset in parse_offsets(meta.get("offsets", {})):
        mark = ctx.watermarks.high(topic, partition)  # cached: never waits on Kafka
        inputs.append(
            m.InputOffset(
                topic=topic,
                partition=partition,
                next_offset=offset,
                high_watermark=mark.high,
                lag=None if mark.high is None else max(0, mark.high - offset),
                high_watermark_age_seconds=mark.age_s,
            )
        )
    alerts, newest = view.drift.of_model(model)
    return m.ModelState(
        pipeline=pipeline,
        model=model,
        version=info.version if info is not None else None,
        task=spec.get("task") or None,
        spec=section,
        learning="paused" if model in view.paused else "learning",
        running=ctx.reader.learner_running(status, now),
        events_seen=live.events_seen if live else as_int(meta.get("events_seen")),
        labels_learned=live.labels_learned if live else as_int(meta.get("labels_learned")),
        pending_labels=live.pending if live else as_int(meta.get("pending")),
        metrics=m.Metrics(overall=overall, rolling=rolling),
        last_checkpoint=checkpoint,
        inputs=inputs,
        drift=m.DriftStatus(
            alerts=alerts,
            latest=newest,
            reactions={
                f"drift_{name}": count
                for name, count in (status.reactions if status else {}).items()
                if name in REACTIONS
            },
        ),
    )


@router.get(
    "/pipelines/{pipeline}/models/{model}/versions",
    response_model=m.VersionList,
    tags=["models"],
    responses=ERRORS,
)
def versions(ctx: Ctx, pipeline: PipelineName, model: ModelName) -> m.VersionList:
    """Checkpoint history, newest first, with the model's metrics at each version."""
    return read_versions(ctx, pipeline, model)


def read_versions(ctx: Context, pipeline: str, model: str) -> m.VersionList:
    known_model(ctx, pipeline, model)
    out = []
    for info in ctx.reader.checkpoints(pipeline).versions():
        meta = info.meta
        overall, rolling = split_metrics(meta.get("metrics", {}).get(model, {}))
        learned = meta.get("learned", {})
        out.append(
            m.Version(
                version=info.version,
                written_at=info.created_at,
                reason=str(meta.get("reason", "")),
                events_seen=as_int(meta.get("events_seen")),
                labels_learned=as_int(meta.get("labels_learned")),
                learned=as_int(learned.get(model)) if isinstance(learned, dict) else None,
                metrics=m.Metrics(overall=overall, rolling=rolling),
            )
        )
    return m.VersionList(pipeline=pipeline, model=model, versions=out)


def predict(
    ctx: Ctx, pipeline: PipelineName, model: ModelName, body: m.PredictRequest
) -> m.PredictResponse:
    """A prediction on an event's data from the newest model snapshot (the learner publishes
    one at each checkpoint); nothing is learned."""
    known_model(ctx, pipeline, model)
    try:
        data = feature_map(body.data, "data")
    except MessageError as exc:
        raise ApiError(422, exc.reason, str(exc)) from exc
    try:
        answer = ctx.predictor.predict(ctx.reader.snapshots(pipeline), model, data)
    except NoModelError as exc:
        raise ApiError(404, "no_checkpoint", str(exc)) from exc
    except (CheckpointTamperedError, CheckpointFormatError, SnapshotFormatError) as exc:
        raise ApiError(503, "checkpoint_unreadable", str(exc)) from exc
    except (ValueError, TypeError, KeyError) as exc:  # a value the model cannot take
        raise ApiError(422, "model_refused", f"{type(exc).__name__}: {exc}") from exc
    return m.PredictResponse(
        pipeline=pipeline,
        model=model,
        version=answer.version,
        prediction=answer.prediction,
        proba=answer.proba,
    )


router.add_api_route(
    "/pipelines/{pipeline}/models/{model}/predict",
    predict,
    methods=["POST"],
    response_model=m.PredictResponse,
    tags=["models"],
    responses={**ERRORS, 422: {"model": m.ErrorResponse, "description": "Bad data."}},
    route_class_override=PredictRoute,  # the body is parsed off the event loop
)
