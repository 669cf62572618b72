"""Request and response bodies of the API, for validation and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Scalar = float | int | bool | str | None


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable reason.")
    message: str = Field(description="What went wrong, for people.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ready or not_ready")
    redis: bool
    stale_checkpoints: list[str] = Field(
        description="Running learners whose newest checkpoint is older than "
        "HEADWATER_API_CHECKPOINT_STALE_S."
    )


class PipelineList(BaseModel):
    pipelines: list[str]


class ModelList(BaseModel):
    pipeline: str
    models: list[str]


class InputOffset(BaseModel):
    topic: str
    partition: int
    next_offset: int = Field(description="The next input offset the checkpoint holds.")
    high_watermark: int | None = Field(
        description="Kafka's, asked in the background; null when Kafka has not answered "
        "in the last HEADWATER_API_LAG_CACHE_S seconds (or before the first request about "
        "the partition was answered)."
    )
    lag: int | None = Field(description="Records not yet in a checkpoint; null if unknown.")
    high_watermark_age_seconds: float | None = Field(
        description="How long ago Kafka gave the high watermark; null with it."
    )


class Metrics(BaseModel):
    overall: dict[str, float] = Field(description="Prequential, over the whole stream.")
    rolling: dict[str, float] = Field(description='Over the last N labels ("(last N)").')


class Checkpoint(BaseModel):
    version: int
    written_at: float = Field(description="Unix time.")
    age_seconds: float
    reason: str


class DriftStatus(BaseModel):
    alerts: int = Field(description="Concept and prediction drift alerts kept for the model.")
    latest: dict[str, Any] | None = Field(description="The newest of them (drift-alert/v1).")
    reactions: dict[str, int] = Field(
        description="What the learner did about concept drift (drift.reaction)."
    )


class ModelState(BaseModel):
    pipeline: str
    model: str
    version: int | None = Field(description="Newest checkpoint version; null before the first.")
    task: str | None
    spec: dict[str, Any] | None = Field(description="The model's section of the pipeline spec.")
    learning: str = Field(description="learning or paused")
    running: bool = Field(
        description="A learner wrote its status in the last 30 s, not on stopping."
    )
    events_seen: int | None
    labels_learned: int | None
    pending_labels: int | None
    metrics: Metrics
    last_checkpoint: Checkpoint | None
    inputs: list[InputOffset]
    drift: DriftStatus


class Version(BaseModel):
    version: int
    written_at: float
    reason: str
    events_seen: int | None
    labels_learned: int | None
    learned: int | None = Field(description="Labels this model had learned.")
    metrics: Metrics


class VersionList(BaseModel):
    pipeline: str
    model: str
    versions: list[Version]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: dict[str, Scalar] = Field(
        description="An event's data: feature name to number, string, bool or null.",
        examples=[{"empty_server_form_handler": 0.0, "popup_window": 1.0}],
    )


class PredictResponse(BaseModel):
    pipeline: str
    model: str
    version: int
    prediction: Scalar
    proba: list[tuple[Scalar, float]] | None


class FeaturesResponse(BaseModel):
    pipeline: str
    entity: str
    features: dict[str, Any]
    event_id: str
    event_time: float
    age_seconds: float = Field(description="Now minus the event time they were computed at.")
    expires_in_seconds: float | None = Field(description="Until the entity's TTL drops them.")


class DriftList(BaseModel):
    pipeline: str
    alerts: list[dict[str, Any]] = Field(description="drift-alert/v1 records, newest first.")


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="A checkpoint version from .../versions.")


class AdminAccepted(BaseModel):
    pipeline: str
    model: str
    action: str
    detail: str


class RolloutChange(BaseModel):
    """An operator's rollout request: `switch` (champion and challenger swap), `rollback`
    (the champion before the last change serves again), or `set` (policy, challenger,
    share; a new challenger starts a new trial when the spec has promotion)."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(description="switch, rollback or set")
    policy: str | None = Field(None, description="set: blue-green, canary or shadow")
    challenger: str | None = Field(None, description="set: a model of the spec")
    share: float | None = Field(None, ge=0, le=1, description="set: the canary's share")


class RolloutView(BaseModel):
    pipeline: str
    state: dict[str, Any] | None = Field(
        description="routing (champion, challenger, policy, share), phase (trial, watch, "
        "settled), previous champion, decisions so far, agreement of champion and "
        "challenger's predictions, the running test's evidence; null without a rollout"
    )
    metrics: dict[str, dict[str, float]] = Field(
        description="Champion's and challenger's prequential metrics, from the learner."
    )
    deltas: dict[str, float] = Field(description="Challenger minus champion, per metric both have.")
    decisions: list[dict[str, Any]] = Field(
        description="The newest model-event/v1 records, newest first."
    )


class MetricPoint(BaseModel):
    labels: int = Field(description="Labels learned when the point was taken.")
    events: int = Field(description="Events seen then.")
    at: float = Field(description="When (UTC epoch seconds).")
    ts: float | None = Field(description="Event time of the record that completed the run.")
    values: dict[str, dict[str, float]] = Field(description="Per model, each metric's value.")


class HistoryView(BaseModel):
    pipeline: str
    every: int | None = Field(
        description="Labels between two points (it doubles as the stream grows); null when "
        "the learner has kept no series yet."
    )
    points: list[MetricPoint] = Field(description="Oldest first, evenly over the stream.")


class PageData(BaseModel):
    """What the pipeline page draws, each part as its own route answers it."""

    pipeline: str
    read_at: float = Field(description="When the API read it (UTC epoch seconds).")
    running: bool = Field(
        description="A learner wrote its status in the last 30 s, not on stopping."
    )
    champion: str | None = Field(description="The spec's champion; null without a spec.")
    serving_by: str = Field(description="Who publishes predictions: learner or scorers.")
    scorers: dict[str, dict[str, Any]] = Field(
        description="Scorer replicas seen in the last 10 s: the snapshot version each "
        "serves (version, pinned, at)."
    )
    status: dict[str, Any] | None = Field(description="The learner's status; null before one.")
    models: list[ModelState]
    history: HistoryView
    alerts: list[dict[str, Any]] = Field(description="Newest drift alerts first (500 at most).")
    rollout: RolloutView
    versions: list[Version] = Field(
        description="Checkpoint history, newest first, with the first model's metrics."
    )
