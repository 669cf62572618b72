"""`headwater report`: the pipeline page of one pipeline, with what the services kept in
Redis embedded, as one HTML file that opens with no server and no network."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from services.api.context import ApiError, Context
from services.api.lag import Watermarks
from services.api.page_html import render_page
from services.api.predictor import Predictor
from services.api.readers import StateReader
from services.api.routes.page import page_data
from shared.kafka.connection import KafkaConnection
from shared.metrics import ServiceMetrics
from shared.redis_store import redis_client
from shared.settings import Settings


class ReportError(RuntimeError):
    pass


def report_data(settings: Settings, pipeline: str) -> dict[str, Any]:
    """The page's data as the API would answer it, less Kafka's high watermarks (a report
    reads no broker: its lag columns are unknown)."""
    client = redis_client(settings)
    try:
        ctx = Context(
            settings,
            StateReader(client, settings.checkpoint_keys(), settings.checkpoints_kept),
            Watermarks(KafkaConnection.from_settings(settings)),  # never started: no Kafka
            Predictor(),
            ServiceMetrics("report"),
        )
        try:
            page = page_data(ctx, pipeline)
        except ApiError as exc:
            known = ", ".join(ctx.reader.pipelines()) or "none"
            raise ReportError(f"{exc.message} in Redis (pipelines there: {known})") from exc
    finally:
        client.close()
    return {
        "source": "report",
        "read_at": time.time(),
        "pipelines": {pipeline: _finite(page.model_dump(mode="json"))},
    }


def write_report(settings: Settings, pipeline: str, out: Path) -> int:
    """Write the report; its size in bytes."""
    html = render_page(report_data(settings, pipeline), title=f"Headwater report: {pipeline}")
    out.write_text(html, encoding="utf-8")
    return len(html.encode())


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity (a metric before its first label): null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
