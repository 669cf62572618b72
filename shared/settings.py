"""Runtime settings, read from `HEADWATER_*` environment variables.

Every service composes these; nothing is read at import time — call `load_settings()`
in a composition root.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.checkpoint.keys import CheckpointKeys


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
    predictions_shadow: str = Field(
        "predictions.shadow", description="A shadow challenger's prediction/v1 records."
    )
    model_events: str = Field("model.events", description="model-event/v1 records.")


DEV_CHECKPOINT_KEY = "headwater-dev-key"


class Settings(BaseSettings):
    """All of Headwater's configuration; each field maps to `HEADWATER_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="HEADWATER_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism, with SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user (PLAIN, SCRAM).")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (PLAIN, SCRAM).")
    kafka_oauth_token_url: str | None = Field(
        None,
        description="OAUTHBEARER: the identity provider's token endpoint (client credentials).",
    )
    kafka_oauth_client_id: str | None = Field(None, description="OAUTHBEARER: client id.")
    kafka_oauth_client_secret: SecretStr | None = Field(
        None, description="OAUTHBEARER: client secret."
    )
    kafka_oauth_scope: str | None = Field(None, description="OAUTHBEARER: scope requested.")
    kafka_ssl_ca_location: str | None = Field(
        None,
        description="PEM file of the CA(s) that signed the brokers' certificates (SSL, SASL_SSL); "
        "unset: the system's CAs.",
    )
    kafka_ssl_certificate_location: str | None = Field(
        None, description="PEM file of this client's certificate, for brokers that require one."
    )
    kafka_ssl_key_location: str | None = Field(
        None, description="PEM file of this client's private key."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="Password of an encrypted private key."
    )
    kafka_ssl_verify_hostname: bool = Field(
        True, description="Check that a broker's certificate names the host connected to."
    )
    kafka_client_config: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Other librdkafka properties for every confluent-kafka client, as a JSON "
        'object (e.g. {"client.rack": "eu-west-1a"}); the properties Headwater sets itself '
        "are refused. Values are treated as secrets.",
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis URL for state: redis://[user:password@]host:port/db, or rediss:// "
        "for TLS. A secret: it may hold a password.",
    )
    redis_ssl_ca_certs: str | None = Field(
        None, description="rediss://: PEM file of the CA that signed Redis's certificate."
    )
    redis_ssl_certfile: str | None = Field(
        None, description="rediss://: PEM file of this client's certificate."
    )
    redis_ssl_keyfile: str | None = Field(None, description="rediss://: this client's key.")
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
        SecretStr(DEV_CHECKPOINT_KEY),
        description="HMAC key that signs checkpoint blobs. Services refuse the development "
        "default unless HEADWATER_ALLOW_DEV_CHECKPOINT_KEY is true.",
    )
    checkpoint_old_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys of a rotation, as a JSON list: checkpoints they signed still verify; "
        "new ones are signed with HEADWATER_CHECKPOINT_KEY.",
    )
    allow_dev_checkpoint_key: bool = Field(
        False,
        description="Let services run with the development checkpoint key (local use only; "
        "`headwater stack` and `headwater demo` set it).",
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
    history_every: int = Field(
        1000,
        ge=1,
        description="The learner keeps each model's metrics every this many labels (the "
        "pipeline page's curves; the spacing doubles when 512 points are kept). A point "
        "reads every rolling metric, replaying its window: a larger spacing costs less.",
    )
    redis_retry_s: float = Field(
        10.0,
        ge=0,
        le=300,
        description="Services retry a Redis call this long through a lost connection (a "
        "Redis restarting) before failing.",
    )
    checkpoint_topic: str = Field(
        "headwater.checkpoints",
        description="Compacted topic holding a copy of every unit's newest checkpoint, "
        "restored from when Redis lost it (empty: no copy, Redis is the only one).",
    )
    reset_state: bool = Field(
        False,
        description="A unit of state with no checkpoint in Redis starts fresh, even with a "
        "copy on the checkpoint topic or offsets committed by its consumer group (the state "
        "was lost); `headwater run --reset` sets it.",
    )
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
    scorer_version: int | None = Field(
        None,
        ge=0,
        description="The model snapshot version a scorer serves (one of the last "
        "HEADWATER_CHECKPOINTS_KEPT); unset: the newest, followed as the learner publishes.",
    )
    scorer_poll_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often a scorer looks for a newer model snapshot (one small Redis "
        "read); a new one is loaded beside the one serving, then swapped in.",
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
    api_lag_cache_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="The API shows Kafka's high watermarks (for lag) as a background thread "
        "last heard them, at most this many seconds old (asked again at half of it); a "
        "request never waits on Kafka.",
    )
    api_threads: int = Field(
        4,
        ge=1,
        le=256,
        description="Worker threads the API reads Redis and predicts in. The work holds "
        "Python's interpreter lock most of the time: more threads wait for it in turn, and "
        "the slowest answers get slower (40, anyio's default, tripled the p99 of the "
        "model-state route under 20 clients).",
    )
    api_max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Largest request body the API reads; a larger one is refused with 413 "
        "before it is read whole.",
    )

    @field_validator(
        "kafka_ssl_ca_location",
        "kafka_ssl_certificate_location",
        "kafka_ssl_key_location",
        "redis_ssl_ca_certs",
        "redis_ssl_certfile",
        "redis_ssl_keyfile",
    )
    @classmethod
    def _readable_file(cls, path: str | None) -> str | None:
        """A missing certificate or key is named here, not as a TLS failure later."""
        if path is not None and not os.access(path, os.R_OK):
            raise ValueError("no readable file at this path")
        return path

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

    @model_validator(mode="after")
    def _security_is_complete(self) -> Settings:
        """Half a security configuration fails here, naming what is missing, not later as a
        connection that never authenticates."""
        missing: list[str] = []
        if self.kafka_security_protocol.startswith("SASL_"):
            needed = (
                ("kafka_oauth_token_url", "kafka_oauth_client_id", "kafka_oauth_client_secret")
                if self.kafka_sasl_mechanism == "OAUTHBEARER"
                else ("kafka_sasl_username", "kafka_sasl_password")
            )
            missing += [n for n in needed if not getattr(self, n)]
        if missing:
            raise ValueError(
                f"HEADWATER_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} with "
                f"HEADWATER_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism} also needs "
                + ", ".join(f"HEADWATER_{m.upper()}" for m in missing)
            )
        if (self.kafka_ssl_certificate_location is None) != (self.kafka_ssl_key_location is None):
            raise ValueError(
                "HEADWATER_KAFKA_SSL_CERTIFICATE_LOCATION and HEADWATER_KAFKA_SSL_KEY_LOCATION "
                "go together: a client certificate needs its key"
            )
        return self

    def checkpoint_keys(self) -> CheckpointKeys:
        """The keys services sign and verify with; the development key only where allowed."""
        key = self.checkpoint_key.get_secret_value()
        if key == DEV_CHECKPOINT_KEY and not self.allow_dev_checkpoint_key:
            raise SettingsError(
                "HEADWATER_CHECKPOINT_KEY is the published development key; set a secret key "
                "of your own (e.g. `openssl rand -hex 32`), or HEADWATER_ALLOW_DEV_CHECKPOINT_KEY"
                "=true for local use only"
            )
        if not key:
            raise SettingsError("HEADWATER_CHECKPOINT_KEY is empty")
        return CheckpointKeys(
            key.encode(), tuple(k.get_secret_value().encode() for k in self.checkpoint_old_keys)
        )


class SettingsError(ValueError):
    """Bad configuration, each problem named by its environment variable."""


def _shown(field: object, value: object) -> str:
    """What a bad value was, unless it is a secret's."""
    info = Settings.model_fields.get(str(field))
    if info is not None and "SecretStr" in str(info.annotation):
        return " (value hidden: a secret)"
    return f" (got {value!r})"


def load_settings(**overrides: object) -> Settings:
    """Read the environment (plus explicit overrides, which win)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [
            f"HEADWATER_{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            + _shown(err["loc"][0], err.get("input"))
            if err["loc"]
            else err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        ]
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems)) from None
