"""OAUTHBEARER with OAuth 2 client credentials: Apache Kafka validating JWTs against a test
identity provider's keys; ingest, the learner (librdkafka's OIDC login) and the monitor
(aiokafka, Headwater's token provider) log in with a client id and secret."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.launch import start_service
from services.replay.datasets import dataset_events
from services.replay.recorded import write_events
from shared.kafka import ensure_topics
from shared.kafka.connection import KafkaConnection
from shared.redis_store import RedisStore
from shared.settings import Settings, TopicNames
from shared.spec import load_spec
from shared.stack import LocalStack
from shared.stack.kafka_broker import KafkaBroker
from shared.stack.local_stack import pipeline_topics
from shared.stack.processes import free_port

from .conftest import BROKER, ROOT, headwater
from .helpers import champion_accuracy, monitor_applied, wait_until
from .oidc import IdentityProvider

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROKER != "kafka", reason="OAUTHBEARER: the Apache Kafka suite"),
]

SPEC = ROOT / "ops/pipelines/phishing.yaml"
CLIENT = "headwater-pipeline"
VALIDATOR = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"


@pytest.fixture(scope="module")
def oauth() -> Iterator[tuple[KafkaBroker, IdentityProvider, str]]:
    secret = secrets.token_urlsafe(16)
    with IdentityProvider({CLIENT: secret}) as idp:
        prefix = "listener.name.oauth."
        broker = KafkaBroker(
            listeners={"OAUTH": "SASL_PLAINTEXT"},
            overrides={
                "sasl.enabled.mechanisms": "OAUTHBEARER",
                f"{prefix}sasl.enabled.mechanisms": "OAUTHBEARER",
                f"{prefix}oauthbearer.sasl.jaas.config": (
                    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
                ),
                f"{prefix}oauthbearer.sasl.server.callback.handler.class": VALIDATOR,
                "sasl.oauthbearer.jwks.endpoint.url": f"{idp.url}/jwks",
                "sasl.oauthbearer.expected.audience": "kafka",
            },
            jvm_options=[f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={idp.url}/jwks"],
        ).start()
        try:
            yield broker, idp, secret
        finally:
            broker.stop()


def oauth_env(broker: KafkaBroker, idp: IdentityProvider, secret: str) -> dict[str, str]:
    return {
        "HEADWATER_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker.listener_ports['OAUTH']}",
        "HEADWATER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HEADWATER_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
        "HEADWATER_KAFKA_OAUTH_TOKEN_URL": f"{idp.url}/token",
        "HEADWATER_KAFKA_OAUTH_CLIENT_ID": CLIENT,
        "HEADWATER_KAFKA_OAUTH_CLIENT_SECRET": secret,
    }


def test_every_client_logs_in_with_oauth_client_credentials(
    oauth, stack: LocalStack, tmp_path: Path
):
    broker, idp, secret = oauth
    RedisStore(stack.redis_url).client.flushdb()
    topics = TopicNames()
    ensure_topics(broker.bootstrap, pipeline_topics(topics, 1))
    metrics_port = free_port()
    env = {
        **oauth_env(broker, idp, secret),
        "HEADWATER_REDIS_URL": stack.redis_url,
        "HEADWATER_ALLOW_DEV_CHECKPOINT_KEY": "true",
        "HEADWATER_LOG_FORMAT": "text",
    }
    procs = {
        name: start_service(
            name,
            SPEC,
            {**env, "HEADWATER_METRICS_PORT": str(metrics_port)} if name == "monitor" else env,
        )
        for name in ("ingest", "learner", "monitor")
    }
    stream = tmp_path / "phishing.jsonl"
    write_events(stream, dataset_events("Phishing"))
    try:
        result = headwater("replay", str(stream), env=env)
        assert result.returncode == 0, result.stderr
        settings = Settings(**{k.removeprefix("HEADWATER_").lower(): v for k, v in env.items()})
        _, accuracy = champion_accuracy(
            KafkaConnection.from_settings(settings),
            topics.predictions,
            load_spec(SPEC),
            lambda: all(p.alive() for p in procs.values()),
        )
        assert accuracy == "Accuracy: 89.28%"
        # The monitor (aiokafka and Headwater's token provider) read the outcomes.
        wait_until(lambda: monitor_applied(metrics_port) >= 1250, "the monitor's outcomes")
    finally:
        codes = {name: p.stop() for name, p in procs.items()}
    assert all(code == 0 for code in codes.values()), {
        name: procs[name].log_tail() for name, code in codes.items() if code
    }
    assert idp.issued.count(CLIENT) >= 4  # replay, ingest, learner, monitor, the reader
    print(f"OAUTHBEARER: {accuracy}, {len(idp.issued)} tokens issued")


def test_a_wrong_client_secret_stops_a_service_naming_the_oauth_settings(oauth):
    broker, idp, secret = oauth
    ensure_topics(broker.bootstrap, pipeline_topics(TopicNames(), 1))
    env = {
        **oauth_env(broker, idp, "not-" + secret),
        "HEADWATER_ALLOW_DEV_CHECKPOINT_KEY": "true",
    }
    started = time.monotonic()
    result = headwater("run", "ingest", "--spec", str(SPEC), env=env, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 1
    error = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    assert "HEADWATER_KAFKA_OAUTH_CLIENT_SECRET" in error, result.stderr[-2000:]
    assert secret not in result.stderr
    assert took < 30
    print(f"wrong client secret: exit 1 after {took:.1f}s: {error}")
