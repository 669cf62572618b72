"""An entity's latest features."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path

from services.api import models as m
from services.api.context import ERRORS, ApiError, Ctx, PipelineName, known_pipeline
from shared.feature_store import FeatureStore
from shared.messages import MessageError

router = APIRouter()


@router.get(
    "/pipelines/{pipeline}/features/{entity}",
    response_model=m.FeaturesResponse,
    tags=["features"],
    responses=ERRORS,
)
def entity_features(
    ctx: Ctx,
    pipeline: PipelineName,
    entity: Annotated[str, Path(min_length=1, max_length=256)],
) -> m.FeaturesResponse:
    """The entity's latest features from the online store, and how fresh they are."""
    known_pipeline(ctx, pipeline)
    store = FeatureStore(ctx.reader.client, pipeline, 1.0)
    try:
        latest = store.read(entity)
    except MessageError as exc:
        raise ApiError(503, "bad_feature_record", str(exc)) from exc
    if latest is None:
        raise ApiError(
            404, "unknown_entity", f"no features for entity {entity!r} (never seen, or expired)"
        )
    ttl_ms = ctx.reader.client.pttl(store.prefix + entity)
    return m.FeaturesResponse(
        pipeline=pipeline,
        entity=entity,
        features=latest["features"],
        event_id=latest["event_id"],
        event_time=latest["ts"],
        age_seconds=time.time() - latest["ts"],
        expires_in_seconds=ttl_ms / 1000 if isinstance(ttl_ms, int) and ttl_ms >= 0 else None,
    )
