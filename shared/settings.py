"""Runtime settings, read from `HEADWATER_*` environment variables.

Every service composes these; nothing is read at import time — call `load_settings()`
in a composition root.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TopicNames(BaseModel):
    """Topic names of one deployment (DESIGN §2). Override with HEADWATER_TOPICS__EVENTS etc."""

    model_config = ConfigDict(frozen=True)

    events: str = Field("events", description="Raw events from producers.")
    labels: str = Field("labels", description="Delayed labels from producers.")
    events_valid: str = Field("events.valid", description="Events that passed ingest.")
    labels_valid: str = Field("labels.valid", description="Labels that passed ingest.")
    events_dlq: str = Field("events.dlq", description="Dead-letter envelopes.")
    features: str = Field("features", description="Events plus computed features.")
    predictions: str = Field("predictions", description="prediction/v1 records.")
    outcomes: str = Field("outcomes", description="Predictions joined with their labels.")
    drift_alerts: str = Field("drift.alerts", description="drift-alert/v1 records.")


class Settings(BaseSettings):
    """All of Headwater's configuration; each field maps to `HEADWATER_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="HEADWATER_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL for state.")
    topics: TopicNames = Field(default_factory=lambda: TopicNames())
    consumer_group_prefix: str = Field("headwater", description="Prefix of consumer groups.")
    batch_size: int = Field(500, ge=1, le=100_000, description="Records per consume batch.")
    poll_timeout_s: float = Field(0.2, gt=0, le=30, description="Max wait of one consume.")
    session_timeout_ms: int = Field(
        6000,
        ge=1000,
        description="Consumer group session timeout, classic protocol only (Kafka's brokers "
        "accept 6000-1800000 by default; Tansu wants <= 6000).",
    )
    group_protocol: Literal["classic", "consumer"] = Field(
        "classic",
        description="Consumer group protocol of ingest and features: classic, or consumer "
        "(KIP-848, Apache Kafka 4+; its session timeout is the broker's). The monitor's "
        "faust/aiokafka client always uses classic; the learner joins no group.",
    )
    merge_idle_ms: int = Field(
        500,
        ge=0,
        le=60_000,
        description="How long an input with nothing buffered holds back the ordered merge.",
    )
    checkpoint_key: SecretStr = Field(
        SecretStr("headwater-dev-key"),
        description="HMAC key authenticating checkpoint blobs; set your own in production.",
    )
    # A checkpoint's cost grows with the state (10k entities' windows, a million recent
    # ids), not with the records since the last one: the cadence is time-driven, and the
    # record count only caps a burst. At 10k records, checkpoints took ~30% of the features
    # service's throughput; DESIGN §8 allows 5%.
    checkpoint_every_records: int = Field(
        1_000_000, ge=1, description="Checkpoint after this many input records..."
    )
    checkpoint_interval_s: float = Field(
        10.0, gt=0, description="...or after this many seconds, whichever comes first."
    )
    checkpoints_kept: int = Field(10, ge=1, le=1000, description="Checkpoint versions kept.")
    lease_ttl_s: float = Field(
        5.0,
        ge=0.5,
        le=60,
        description="A dead learner's lease expires after this; standby takes over.",
    )
    learner_model_process: bool = Field(
        True,
        description="Run the learner's models in a process of their own, on a second core "
        "(false: in the service's thread).",
    )
    learner_model_timeout_s: float = Field(
        300.0,
        ge=10,
        le=86_400,
        description="The learner stops when its model process sends nothing for this long "
        "while it waits on it (a hung model; it beats every second while it works): it is "
        "killed and the standby takes over. Its start-up and each control call (restore, "
        "snapshot) must also answer within it.",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus exporter port; 0 disables the exporter."
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token of the API's admin routes (rollback, pause, resume); "
        "unset: those routes answer 503, never run unauthenticated.",
    )
    api_checkpoint_stale_s: float = Field(
        300.0,
        gt=0,
        description="The API's /readyz fails when a running learner's newest checkpoint is "
        "older than this.",
    )

    @field_validator("api_token")
    @classmethod
    def _blank_token_is_unset(cls, token: SecretStr | None) -> SecretStr | None:
        """An empty HEADWATER_API_TOKEN (compose passes one through when the shell has it
        empty) must not become a token that an empty header matches."""
        if token is None or not token.get_secret_value().strip():
            return None
        return token

    log_level: str = Field("INFO", description="Python logging level.")
    log_format: str = Field("json", pattern="^(json|text)$", description="json or text logs.")
    max_message_bytes: int = Field(
        1_000_000,
        ge=1024,
        description="Largest record Headwater accepts or writes; every topic it writes must "
        "take this plus 16 KiB (max.message.bytes; Kafka's default, 1,048,588, does).",
    )


class SettingsError(ValueError):
    """Bad configuration, each problem named by its environment variable."""


def load_settings(**overrides: object) -> Settings:
    """Read the environment (plus explicit overrides, which win)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            f"HEADWATER_{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            f" (got {err.get('input')!r})"
            for err in exc.errors()
        ]
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems)) from None
