"""Composition root of the query API (FastAPI): a thin reader of Redis.

`create_app(settings)` builds the app from the routers in services/api/routes/ (one per
resource); Redis, the Kafka watermarks' refresher and the predictor are made in the lifespan and
reached through dependencies (services/api/context.py), so nothing connects at import time
and tests can run the real app against their own Redis and broker.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import redis
from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.context import ApiError, Context, error_response
from services.api.lag import Watermarks
from services.api.limits import BodyLimit, RequestMetrics, too_large_message
from services.api.predictor import Predictor
from services.api.readers import StateReader
from services.api.registry import RegistryFill
from services.api.routes import (
    admin,
    drift,
    features,
    health,
    history,
    models,
    page,
    rollout,
)
from shared.kafka.connection import KafkaConnection
from shared.metrics import ServiceMetrics
from shared.redis_store import redis_client
from shared.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, reader_factory: Callable[[Settings], StateReader] | None = None
) -> FastAPI:
    def make_reader(s: Settings) -> StateReader:
        return StateReader(redis_client(s), s.checkpoint_keys(), s.checkpoints_kept)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The threads `def` routes, dependencies and run_in_threadpool share
        to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        metrics = ServiceMetrics("api")
        ctx = Context(
            settings,
            (reader_factory or make_reader)(settings),
            Watermarks(KafkaConnection.from_settings(settings), settings.api_lag_cache_s).start(),
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
        fill = RegistryFill(ctx.reader.client).start()  # pipelines an older Headwater wrote
        try:
            yield
        finally:
            fill.stop()
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

    @app.exception_handler(ApiError)
    async def apierror_response(request: Request, exc: ApiError) -> JSONResponse:
        extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return error_response(exc.status, exc.code, exc.message, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        message = str(exc.detail)
        if exc.status_code == 413:
            message = too_large_message(settings.api_max_body_bytes)
        return error_response(exc.status_code, code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return error_response(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("Redis unavailable", extra={"fields": {"error": str(exc)}})
        return error_response(503, "redis_unavailable", f"Redis is unavailable: {exc}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed", extra={"fields": {"path": request.url.path}})
        return error_response(500, "internal_error", f"{type(exc).__name__}: the server failed")

    routers = (health, models, features, drift, admin, rollout, history, page)
    for router in (r.router for r in routers):
        app.include_router(router)
    app.add_middleware(RequestMetrics)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)  # the outermost
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
