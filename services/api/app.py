"""Composition root of the query API (FastAPI): a thin reader of Redis.

`create_app(settings)` builds the app; Redis, the Kafka watermark reader and the predictor
are made in the lifespan and reached through dependencies, so nothing connects at import
time and tests can run the real app against their own Redis and broker.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api import models as m
from services.api.predictor import NoModelError, Predictor
from services.api.readers import StateReader, Watermarks, parse_offsets, split_metrics
from services.api.readers import status_metrics as metrics_of_status
from services.features.store import FeatureStore
from services.learner.reaction import REACTION_COUNTS
from shared.checkpoint.codec import CheckpointFormatError, CheckpointTamperedError
from shared.checkpoint.store import CheckpointNotFoundError
from shared.kafka.connection import KafkaConnection
from shared.messages import MessageError
from shared.messages.fields import feature_map
from shared.metrics import ServiceMetrics
from shared.redis_store import redis_client
from shared.settings import Settings

log = logging.getLogger(__name__)

# The learner's status fields of its drift reaction (services/learner/worker.core_status)
REACTION_FIELDS = (*(f"drift_{name}" for name in REACTION_COUNTS), "drift_trials")


class ApiError(Exception):
    """An error answered as JSON: {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
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


def context(request: Request) -> Context:
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


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def create_app(
    settings: Settings, reader_factory: Callable[[Settings], StateReader] | None = None
) -> FastAPI:
    def make_reader(s: Settings) -> StateReader:
        return StateReader(redis_client(s), s.checkpoint_keys(), s.checkpoints_kept)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = ServiceMetrics("api")
        ctx = Context(
            settings,
            (reader_factory or make_reader)(settings),
            Watermarks(KafkaConnection.from_settings(settings)),
            Predictor(),
            metrics,
        )
        app.state.context = ctx
        app.state.requests = metrics.counter(
            "requests_total",
            "HTTP requests by route, method and status.",
            ("route", "method", "status"),
        )
        app.state.latency = metrics.histogram(
            "request_seconds", "Time to answer a request.", ("route",)
        )
        metrics.serve(settings.metrics_port)
        try:
            yield
        finally:
            ctx.watermarks.close()
            ctx.reader.client.close()

    app = FastAPI(
        title="Headwater API",
        version="1",
        description="Model state, metrics, checkpoint history, predictions, features and "
        "drift alerts of Headwater pipelines, read from Redis. Admin routes need "
        "`Authorization: Bearer $HEADWATER_API_TOKEN`.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Any]) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        if hasattr(request.app.state, "requests"):
            request.app.state.requests.labels(path, request.method, str(response.status_code)).inc()
            request.app.state.latency.labels(path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return _error(exc.status, exc.code, exc.message, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("Redis unavailable", extra={"fields": {"error": str(exc)}})
        return _error(503, "redis_unavailable", f"Redis is unavailable: {exc}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed", extra={"fields": {"path": request.url.path}})
        return _error(500, "internal_error", f"{type(exc).__name__}: the server failed")

    @app.get("/healthz", response_model=m.Health, tags=["health"])
    async def healthz() -> m.Health:
        """The process is up (no dependency checked)."""
        return m.Health(status="ok")

    @app.get(
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
            if info is None:
                if _int(status.get("events_seen")):
                    stale.append(pipeline)  # records applied, none checkpointed yet
                continue
            # An idle learner's checkpoint may be old and still hold everything it learned
            unsaved = any(
                _int(status.get(k)) != _int(info.meta.get(k))
                for k in ("events_seen", "labels_learned")
            )
            if unsaved and now - info.created_at > ctx.settings.api_checkpoint_stale_s:
                stale.append(pipeline)
        body = m.Readiness(
            status="not_ready" if stale else "ready", redis=True, stale_checkpoints=stale
        )
        return JSONResponse(body.model_dump(), status_code=503 if stale else 200)

    @app.get("/pipelines", response_model=m.PipelineList, tags=["pipelines"], responses=ERRORS)
    def pipelines(ctx: Ctx) -> m.PipelineList:
        """Pipelines with state in Redis (a learner, its checkpoints, or drift alerts)."""
        return m.PipelineList(pipelines=ctx.reader.pipelines())

    @app.get(
        "/pipelines/{pipeline}/models",
        response_model=m.ModelList,
        tags=["models"],
        responses=ERRORS,
    )
    def models(ctx: Ctx, pipeline: PipelineName) -> m.ModelList:
        known_pipeline(ctx, pipeline)
        return m.ModelList(pipeline=pipeline, models=ctx.reader.models(pipeline))

    @app.get(
        "/pipelines/{pipeline}/models/{model}",
        response_model=m.ModelState,
        tags=["models"],
        responses=ERRORS,
    )
    def model_state(ctx: Ctx, pipeline: PipelineName, model: ModelName) -> m.ModelState:
        """Version, spec, counters, metrics, last checkpoint, input offsets and lag,
        pending labels and drift status of one model."""
        known_model(ctx, pipeline, model)
        reader = ctx.reader
        status = reader.status(pipeline)
        info = reader.latest(pipeline)
        meta = info.meta if info is not None else {}
        spec = reader.spec(pipeline) or {}
        section = next(
            (s for s in spec.get("models", []) if isinstance(s, dict) and s.get("name") == model),
            None,
        )
        # The learner's status (written about once a second) unless the newest checkpoint
        # is fresher, as right after a checkpoint on stopping.
        written = info.created_at if info is not None else 0.0
        live = status if _float(status.get("updated_at")) >= written else {}
        values = metrics_of_status(live, model) or dict(meta.get("metrics", {}).get(model, {}))
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
            high = ctx.watermarks.high(topic, partition)
            lag = None if high is None else max(0, high - offset)
            inputs.append(
                m.InputOffset(
                    topic=topic,
                    partition=partition,
                    next_offset=offset,
                    high_watermark=high,
                    lag=lag,
                )
            )
        alerts = [a for a in reader.alerts(pipeline, 1000) if a.get("model") == model]
        return m.ModelState(
            pipeline=pipeline,
            model=model,
            version=info.version if info is not None else None,
            task=spec.get("task") or None,
            spec=section,
            learning="paused" if model in reader.paused(pipeline) else "learning",
            running=reader.learner_running(status, now),
            events_seen=_int(live.get("events_seen", meta.get("events_seen"))),
            labels_learned=_int(live.get("labels_learned", meta.get("labels_learned"))),
            pending_labels=_int(live.get("pending", meta.get("pending"))),
            metrics=m.Metrics(overall=overall, rolling=rolling),
            last_checkpoint=checkpoint,
            inputs=inputs,
            drift=m.DriftStatus(
                alerts=len(alerts),
                latest=alerts[0] if alerts else None,
                reactions={k: v for k in REACTION_FIELDS if (v := _int(status.get(k))) is not None},
            ),
        )

    @app.get(
        "/pipelines/{pipeline}/models/{model}/versions",
        response_model=m.VersionList,
        tags=["models"],
        responses=ERRORS,
    )
    def versions(ctx: Ctx, pipeline: PipelineName, model: ModelName) -> m.VersionList:
        """Checkpoint history, newest first, with the model's metrics at each version."""
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
                    events_seen=_int(meta.get("events_seen")),
                    labels_learned=_int(meta.get("labels_learned")),
                    learned=_int(learned.get(model)) if isinstance(learned, dict) else None,
                    metrics=m.Metrics(overall=overall, rolling=rolling),
                )
            )
        return m.VersionList(pipeline=pipeline, model=model, versions=out)

    @app.post(
        "/pipelines/{pipeline}/models/{model}/predict",
        response_model=m.PredictResponse,
        tags=["models"],
        responses={**ERRORS, 422: {"model": m.ErrorResponse, "description": "Bad data."}},
    )
    def predict(
        ctx: Ctx, pipeline: PipelineName, model: ModelName, body: m.PredictRequest
    ) -> m.PredictResponse:
        """A prediction on an event's data from the newest checkpoint; nothing is learned."""
        known_model(ctx, pipeline, model)
        try:
            data = feature_map(body.data, "data")
        except MessageError as exc:
            raise ApiError(422, exc.reason, str(exc)) from exc
        try:
            answer = ctx.predictor.predict(ctx.reader.checkpoints(pipeline), pipeline, model, data)
        except NoModelError as exc:
            raise ApiError(404, "no_checkpoint", str(exc)) from exc
        except (CheckpointTamperedError, CheckpointFormatError) as exc:
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

    @app.get(
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

    @app.get(
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

    @app.post(
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

    @app.post(
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

    @app.post(
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

    return app


def run_api(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM; in-flight requests finish, and the exit status is 0
    (uvicorn's own handling re-raises the signal after its shutdown: status -15)."""
    import signal
    from collections.abc import Iterator
    from contextlib import contextmanager

    import uvicorn

    # Bad security settings stop the API here, with one line, not in uvicorn's start-up.
    settings.checkpoint_keys()
    KafkaConnection.from_settings(settings)

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            stops = (signal.SIGINT, signal.SIGTERM)
            previous = {s: signal.signal(s, self.handle_exit) for s in stops}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_config=None, access_log=False
    )
    Server(config).run()
