"""What the API's routes share: the context made in the lifespan, errors, path parameters
and the checks of pipelines, models and the admin token."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api import models as m
from services.api.lag import Watermarks
from services.api.predictor import Predictor
from services.api.readers import StateReader
from shared.metrics import ServiceMetrics
from shared.settings import Settings


class ApiError(Exception):
    """An error answered as JSON: {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers or None)


@dataclass
class Context:
    """What the routes share, made in the lifespan."""

    settings: Settings
    reader: StateReader
    watermarks: Watermarks
    predictor: Predictor
    metrics: ServiceMetrics


async def context(request: Request) -> Context:
    """`async`: FastAPI runs a `def` dependency in a worker thread, a hop per request."""
    ctx: Context = request.app.state.context
    return ctx


Ctx = Annotated[Context, Depends(context)]
PipelineName = Annotated[str, Path(min_length=1, max_length=63, description="Pipeline name.")]
ModelName = Annotated[str, Path(min_length=1, max_length=256, description="Model name.")]

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": m.ErrorResponse, "description": "Unknown pipeline, model or entity."},
    503: {"model": m.ErrorResponse, "description": "Redis unreachable."},
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": m.ErrorResponse, "description": "Missing or wrong bearer token."},
}

_bearer = HTTPBearer(auto_error=False, description="HEADWATER_API_TOKEN")


def admin(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Admin routes: the bearer token, compared in constant time."""
    token = ctx.settings.api_token
    if token is None:
        raise ApiError(503, "admin_disabled", "admin routes are off: HEADWATER_API_TOKEN is unset")
    given = "" if credentials is None else credentials.credentials
    expected = token.get_secret_value().encode()
    if not given or not hmac.compare_digest(given.encode(), expected):
        raise ApiError(401, "unauthorized", "a valid bearer token is required")


def known_pipeline(ctx: Context, pipeline: str) -> None:
    if not ctx.reader.exists(pipeline):
        raise ApiError(404, "unknown_pipeline", f"no pipeline {pipeline!r}")


def known_model(ctx: Context, pipeline: str, model: str) -> None:
    known_pipeline(ctx, pipeline)
    if model not in ctx.reader.models(pipeline):
        raise ApiError(404, "unknown_model", f"pipeline {pipeline!r} has no model {model!r}")


def as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
