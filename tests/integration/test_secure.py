"""The whole pipeline on a secured cluster: Apache Kafka with a SASL_SSL listener
(SCRAM-SHA-512, client certificates required) and the StandardAuthorizer, each service
logging in as its own user with exactly the ACLs the README lists, and Redis with TLS, a
`requirepass` default user (the API) and an ACL user (the services). Certificates come from
a private CA the test makes."""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from services.launch import start_service
from services.replay.datasets import dataset_events
from services.replay.recorded import write_events
from shared.checkpoint.codec import CheckpointTamperedError
from shared.checkpoint.keys import CheckpointKeys
from shared.checkpoint.log import CheckpointLog
from shared.checkpoint.store import CheckpointStore
from shared.kafka import ensure_topics
from shared.kafka.connection import KafkaConnection
from shared.keys import PipelineKeys
from shared.redis_store import redis_client
from shared.settings import Settings, TopicNames
from shared.spec import PipelineSpec, load_spec
from shared.stack.binaries import redis_server_binary
from shared.stack.kafka_broker import KafkaBroker
from shared.stack.local_stack import pipeline_topics
from shared.stack.processes import ManagedProcess, free_port, wait_for_port

from .certs import PrivateCA
from .conftest import BROKER, ROOT, headwater
from .helpers import (
    champion_accuracy,
    monitor_applied,
    wait_until,
    windowed_accuracy_in_process,
)
from .secure_kafka import add_users, client_env, grant, revoke, secure_broker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROKER != "kafka", reason="SASL_SSL and ACLs: the Apache Kafka suite"),
]

SPEC = ROOT / "ops/pipelines/phishing-windows.yaml"
SERVICES = ["ingest", "features", "learner", "monitor"]
USERS = [*SERVICES, "api", "replay", "reader"]


def readme_acls() -> dict[str, dict[str, str]]:
    """The README's ACL table, by service: the test grants exactly that."""
    text = (ROOT / "README.md").read_text()
    table = text.split("### Kafka ACLs", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    out = {}
    for row in rows[1:]:
        cells = dict(zip(head, (c.strip() for c in row.strip("|").split("|")), strict=True))
        out[cells["service"].split()[0]] = cells
    return out


def _names(cell: str, topics: TopicNames, spec: PipelineSpec) -> list[str]:
    """README topic names (the defaults) -> this test's topic names; without a `features:`
    section, what the README says of `features` holds for `events.valid`."""
    actual = {
        TopicNames.model_fields[f].default: getattr(topics, f) for f in TopicNames.model_fields
    }
    actual[Settings.model_fields["checkpoint_topic"].default] = checkpoint_topic(topics)
    if spec.features is None:
        actual["features"] = topics.events_valid
    return list(dict.fromkeys(actual[name.strip()] for name in cell.split(",") if name.strip()))


def readme_grants(
    service: str,
    topics: TopicNames,
    prefix: str,
    spec: PipelineSpec,
    *,
    skip: tuple[str, str] | None = None,
) -> list[tuple[str, str, str, str]]:
    """(resource type, name, pattern, operation) per the README; `skip` (operation, topic)
    leaves one out."""
    row = readme_acls()[service]
    reads, writes = (_names(row[c], topics, spec) for c in ("Read on topics", "Write on topics"))
    grants = [("TOPIC", t, "LITERAL", "READ") for t in reads]
    grants += [("TOPIC", t, "LITERAL", "WRITE") for t in writes]
    if row["Read on group"]:
        assert row["Read on group"] == f"`<prefix>.<pipeline>.{service}`"
        grants.append(("GROUP", f"{prefix}.{spec.name}.{service}", "LITERAL", "READ"))
    for operation, names in re.findall(
        r"(DescribeConfigs|Describe) on ([\w., ]+)", row["optional"]
    ):
        op = "DESCRIBE_CONFIGS" if operation == "DescribeConfigs" else "DESCRIBE"
        grants += [("TOPIC", t, "LITERAL", op) for t in _names(names, topics, spec)]
    return [g for g in grants if skip is None or (g[3], g[1]) != skip]


@dataclass
class SecureStack:
    folder: Path
    ca: PrivateCA
    broker: KafkaBroker
    redis_port: int
    passwords: dict[str, str]
    redis_default_password: str
    redis_user_password: str
    checkpoint_key: str = field(default_factory=lambda: secrets.token_hex(16))
    api_token: str = field(default_factory=lambda: secrets.token_hex(16))

    def redis_env(self, *, default_user: bool = False, password: str | None = None) -> dict:
        client = self.ca.issue("redis-client")
        if default_user:
            auth = f":{password or self.redis_default_password}"
        else:
            auth = f"headwater:{password or self.redis_user_password}"
        return {
            "HEADWATER_REDIS_URL": f"rediss://{auth}@127.0.0.1:{self.redis_port}/0",
            "HEADWATER_REDIS_SSL_CA_CERTS": str(self.ca.path),
            "HEADWATER_REDIS_SSL_CERTFILE": str(client.cert),
            "HEADWATER_REDIS_SSL_KEYFILE": str(client.key),
        }

    def env(self, user: str, topics: TopicNames, prefix: str, **extra: str) -> dict[str, str]:
        env = {
            **client_env(self.broker, self.ca, user, self.passwords[user]),
            **self.redis_env(default_user=user == "api"),
            "HEADWATER_CHECKPOINT_KEY": self.checkpoint_key,
            "HEADWATER_API_TOKEN": self.api_token,
            "HEADWATER_CONSUMER_GROUP_PREFIX": prefix,
            "HEADWATER_CHECKPOINT_TOPIC": checkpoint_topic(topics),
            "HEADWATER_CHECKPOINT_INTERVAL_S": "2",
            "HEADWATER_LOG_FORMAT": "json",
            "HEADWATER_ALLOW_DEV_CHECKPOINT_KEY": "false",
        }
        for name, topic in topics.model_dump().items():
            env[f"HEADWATER_TOPICS__{name.upper()}"] = topic
        return env | extra

    def settings(self, user: str, topics: TopicNames, prefix: str) -> Settings:
        env = self.env(user, topics, prefix)
        fields = {
            k.removeprefix("HEADWATER_").lower(): v
            for k, v in env.items()
            if not k.startswith("HEADWATER_TOPICS__")
        }
        return Settings(**fields, topics=topics)  # type: ignore[arg-type]

    def secrets(self) -> dict[str, str]:
        return {
            **{f"kafka password of {u}": p for u, p in self.passwords.items()},
            "redis default password": self.redis_default_password,
            "redis user password": self.redis_user_password,
            "checkpoint key": self.checkpoint_key,
            "api token": self.api_token,
        }


def start_tls_redis(
    folder: Path, ca: PrivateCA, default: str, user: str
) -> tuple[ManagedProcess, int]:
    """TLS only (client certificates required); `default`: requirepass, `user`: the password
    of the ACL user `headwater`, limited to Headwater's keys and no dangerous commands."""
    server = ca.issue("redis-server", server=True)
    port = free_port()
    conf = folder / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "port 0",
                f"tls-port {port}",
                f"tls-cert-file {server.cert}",
                f"tls-key-file {server.key}",
                f"tls-ca-cert-file {ca.path}",
                "tls-auth-clients yes",
                f"requirepass {default}",
                f"user headwater on >{user} ~headwater:* &* +@all -@dangerous",
                'save ""',
                "appendonly no",
                f"dir {folder}",
                "bind 127.0.0.1",
            ]
        )
        + "\n"
    )
    proc = ManagedProcess("redis-tls", [str(redis_server_binary()), str(conf)])
    assert wait_for_port(port, 20, proc.proc), proc.log_tail()
    return proc, port


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    folder = tmp_path_factory.mktemp("secure")
    ca = PrivateCA(folder)
    broker = secure_broker(ca).start()
    passwords = {user: secrets.token_urlsafe(12) for user in USERS}
    default, user = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    redis_proc, redis_port = start_tls_redis(folder, ca, default, user)
    try:
        add_users(broker, passwords)
        yield SecureStack(folder, ca, broker, redis_port, passwords, default, user)
    finally:
        redis_proc.stop()
        broker.stop()


def grant_readme(
    secure: SecureStack,
    topics: TopicNames,
    prefix: str,
    spec: PipelineSpec,
    skip: dict | None = None,
) -> None:
    """The README's ACLs for every service; `skip`: {service: (operation, topic)} left out."""
    for service in ["ingest", "features", "learner", "monitor", "api", "replay"]:
        left_out = (skip or {}).get(service)
        grants = readme_grants(service, topics, prefix, spec, skip=left_out)
        grant(secure.broker, service, grants)
    grant(secure.broker, "reader", [("TOPIC", topics.predictions, "LITERAL", "READ")])


def replay(secure: SecureStack, topics: TopicNames, prefix: str, stream: Path) -> None:
    result = headwater("replay", str(stream), env=secure.env("replay", topics, prefix))
    assert result.returncode == 0, result.stdout + result.stderr


def predictions_accuracy(
    secure: SecureStack, topics: TopicNames, procs: dict, spec: PipelineSpec
) -> tuple[int, str]:
    reader = KafkaConnection.from_settings(secure.settings("reader", topics, "reader"))
    return champion_accuracy(
        reader, topics.predictions, spec, lambda: all(p.alive() for p in procs.values())
    )


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


def redis_admin(secure: SecureStack) -> redis.Redis:
    """The default user: the services' ACL user may not flush or list every key."""
    scanner = secure.ca.issue("redis-admin")
    return redis.Redis(
        port=secure.redis_port,
        password=secure.redis_default_password,
        ssl=True,
        ssl_ca_certs=str(secure.ca.path),
        ssl_certfile=str(scanner.cert),
        ssl_keyfile=str(scanner.key),
    )


def redis_text(secure: SecureStack) -> str:
    """Every value in Redis, checkpoint blobs included, as one string to search."""
    client = redis_admin(secure)
    parts: list[bytes] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"hash":
            for k, v in client.hgetall(key).items():
                parts += [k, v]
        elif kind == b"list":
            parts += client.lrange(key, 0, -1)
        elif kind == b"set":
            parts += list(client.smembers(key))
        elif kind == b"zset":
            parts += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        parts.append(key)
    return b"\n".join(parts).decode("latin-1")


def fresh(secure: SecureStack, name: str) -> tuple[TopicNames, str]:
    """New topics and groups, and an empty Redis: checkpoints are keyed by pipeline name."""
    redis_admin(secure).flushdb()
    prefix = f"{name}-{secrets.token_hex(3)}"
    topics = TopicNames(**{f: f"{prefix}.{f}" for f in TopicNames.model_fields})
    ensure_topics(secure.broker.bootstrap, pipeline_topics(topics, 1))
    CheckpointLog(secure.broker.bootstrap, checkpoint_topic(topics)).ensure_topic()
    return topics, prefix


def checkpoint_topic(topics: TopicNames) -> str:
    """The test's own, as its topics are (created by the test: services get no Create)."""
    return f"{topics.events}.checkpoints"


@pytest.mark.parametrize("spec_file", ["phishing.yaml", "phishing-windows.yaml"])
def test_the_pipeline_runs_on_sasl_ssl_and_tls_redis_with_the_readme_acls_and_hides_secrets(
    secure: SecureStack, tmp_path: Path, spec_file: str
):
    """phishing.yaml is the demo's pipeline (Accuracy 89.28%, the figure `headwater demo`
    prints); phishing-windows.yaml adds the features service."""
    spec_path = ROOT / "ops/pipelines" / spec_file
    spec = load_spec(spec_path)
    services = [s for s in SERVICES if s != "features" or spec.features is not None]
    topics, prefix = fresh(secure, "e2e")
    grant_readme(secure, topics, prefix, spec)
    stream = tmp_path / "phishing.jsonl"
    write_events(stream, dataset_events("Phishing"))
    ports = {name: free_port() for name in [*services, "api"]}
    procs = {
        name: start_service(
            name,
            spec_path,
            secure.env(name, topics, prefix, HEADWATER_METRICS_PORT=str(ports[name])),
        )
        for name in services
    }
    api_port = free_port()
    api = ManagedProcess(
        "api",
        [sys.executable, "-m", "services.cli.main", "api", "--port", str(api_port)],
        secure.env("api", topics, prefix, HEADWATER_METRICS_PORT=str(ports["api"])),
    )
    try:
        assert wait_for_port(api_port, 30, api.proc), api.log_tail()
        replay(secure, topics, prefix, stream)
        n, accuracy = predictions_accuracy(secure, topics, procs, spec)
        assert n == 1250
        expected = "Accuracy: 89.28%" if spec.features is None else None
        assert accuracy == (expected or windowed_accuracy_in_process(spec_path))

        wait_until(lambda: monitor_applied(ports["monitor"]) >= 1250, "the monitor's outcomes")

        def model_state() -> dict:
            url = f"http://127.0.0.1:{api_port}/pipelines/{spec.name}/models/logreg"
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)

        # Input offsets come from a checkpoint: the learner writes one within its 2 s cadence;
        # the API's own Kafka client (its Describe ACLs) answers for every input, off the
        # request path (the first request about a partition has no figure yet).
        # The learner's status, written about once a second, counts every event by then.
        wait_until(
            lambda: (
                bool(inputs := (state := model_state())["inputs"])
                and all(i["high_watermark"] is not None for i in inputs)
                and state["events_seen"] == 1250
            ),
            "the API to show every event and a checkpoint's inputs with their high watermarks",
        )
        texts = {
            "/docs": scrape(api_port, "/docs"),
            "/openapi.json": scrape(api_port, "/openapi.json"),
            **{f"{name} metrics": scrape(port) for name, port in ports.items()},
        }
    finally:
        codes = {name: p.stop() for name, p in [*procs.items(), ("api", api)]}
    assert all(code == 0 for code in codes.values()), {
        name: (code, (procs.get(name) or api).log_tail()) for name, code in codes.items()
    }
    texts |= {f"{name} log": p.log_path.read_text() for name, p in [*procs.items(), ("api", api)]}
    texts["redis"] = redis_text(secure)
    # What was searched holds what it should (an empty text would hide nothing).
    assert "/pipelines/{pipeline}/models" in texts["/openapi.json"]
    assert "headwater_monitor_records_total" in texts["monitor metrics"]
    assert all(texts[f"{name} log"] for name in [*services, "api"])
    assert PipelineKeys(spec.name).checkpoint("learner") in texts["redis"]
    leaks = [
        f"{what} in {where}"
        for what, value in secure.secrets().items()
        for where, text in texts.items()
        if value in text
    ]
    assert not leaks
    print(
        f"{spec_file} on SASL_SSL + TLS Redis: {n} predictions, {accuracy}; searched "
        f"{sum(len(t) for t in texts.values()):,} characters of {', '.join(texts)} for "
        f"{len(secure.secrets())} secrets: none found"
    )


def test_rotating_the_checkpoint_key_restores_what_the_old_key_signed(
    secure: SecureStack,
):
    topics, prefix = fresh(secure, "rotate")
    settings = secure.settings("learner", topics, prefix)
    client = redis_client(settings)
    key_a, key_b = secrets.token_hex(8), secrets.token_hex(8)
    signed_by_a = CheckpointStore(client, "rot", "learner", CheckpointKeys(key_a.encode()))
    signed_by_a.write(signed_by_a.new_epoch(), {"model": "A"}, {})
    rotated = CheckpointKeys(key_b.encode(), old=(key_a.encode(),))
    store = CheckpointStore(client, "rot", "learner", rotated)
    assert store.load()[1] == {"model": "A"}
    store.write(store.new_epoch(), {"model": "B"}, {})
    only_b = CheckpointStore(client, "rot", "learner", CheckpointKeys(key_b.encode()))
    assert only_b.load()[1] == {"model": "B"}
    with pytest.raises(CheckpointTamperedError):
        only_b.load(version=1)


def first_line_with(text: str, word: str) -> str:
    return next((line for line in text.splitlines() if word in line), text[-500:])


def error_line(stderr: str) -> str:
    """Headwater's one line (librdkafka's own log lines say "error" too)."""
    return next((line for line in stderr.splitlines() if line.startswith("error:")), "")


@pytest.mark.parametrize(
    ("case", "names"),
    [
        ("wrong password", "HEADWATER_KAFKA_SASL_PASSWORD"),
        ("unknown CA", "HEADWATER_KAFKA_SSL_CA_LOCATION"),
        ("expired client certificate", "HEADWATER_KAFKA_SSL_CERTIFICATE_LOCATION"),
        ("wrong Redis password", "HEADWATER_REDIS_URL"),
    ],
)
def test_a_refused_connection_stops_a_service_within_30_s_naming_the_setting(
    secure: SecureStack, case: str, names: str
):
    topics, prefix = fresh(secure, "refused")
    grant_readme(secure, topics, prefix, load_spec(SPEC))
    env = secure.env("ingest", topics, prefix)
    if case == "wrong password":
        env["HEADWATER_KAFKA_SASL_PASSWORD"] = "not-" + secure.passwords["ingest"]
    elif case == "unknown CA":
        env["HEADWATER_KAFKA_SSL_CA_LOCATION"] = str(PrivateCA(secure.folder, "Other CA").path)
    elif case == "expired client certificate":
        expired = secure.ca.issue("ingest-expired", expired=True)
        env["HEADWATER_KAFKA_SSL_CERTIFICATE_LOCATION"] = str(expired.cert)
        env["HEADWATER_KAFKA_SSL_KEY_LOCATION"] = str(expired.key)
    else:
        env |= secure.redis_env(password="not-" + secure.redis_user_password)
    started = time.monotonic()
    result = headwater("run", "ingest", "--spec", str(SPEC), env=env, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert took < 30
    error = error_line(result.stderr)
    assert names in error, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for value in secure.secrets().values():
        assert value not in result.stderr + result.stdout
    print(f"{case}: exit 1 after {took:.1f}s: {error}")


def learner_assigned(client: redis.Redis, pipeline: str) -> bool:
    status = client.hgetall(PipelineKeys(pipeline).learner_status)
    return int(status.get(b"assigned_partitions", 0)) > 0


def test_an_acl_removed_mid_stream_stops_that_service_with_the_permission_and_loses_nothing(
    secure: SecureStack, tmp_path: Path
):
    """The learner's Write on predictions is revoked while it runs: it stops, naming the
    grant; restarted without it, it stops at start-up saying the same. Once granted again,
    a restarted learner resumes from its checkpoint and every prediction arrives."""
    spec = load_spec(SPEC)
    topics, prefix = fresh(secure, "acl")
    grant_readme(secure, topics, prefix, spec)
    stream = tmp_path / "phishing.jsonl"
    write_events(stream, dataset_events("Phishing"))
    procs = {name: start_service(name, SPEC, secure.env(name, topics, prefix)) for name in SERVICES}
    write_predictions = [("TOPIC", topics.predictions, "LITERAL", "WRITE")]
    try:
        learner_redis = redis_client(secure.settings("learner", topics, prefix))
        wait_until(lambda: learner_assigned(learner_redis, spec.name), "the learner")
        revoke(secure.broker, "learner", write_predictions)
        replay(secure, topics, prefix, stream)
        replayed = time.monotonic()
        wait_until(lambda: not procs["learner"].alive(), "the learner to stop", timeout=60)
        took = time.monotonic() - replayed
        log = procs["learner"].log_path.read_text()
        assert procs["learner"].proc.returncode == 1, log[-2000:]
        assert f"grant this service's user Write on Topic:{topics.predictions}" in log, log
        assert "Traceback" not in log
        assert took < 30
        assert all(p.alive() for n, p in procs.items() if n != "learner")
        started = time.monotonic()
        again = headwater(
            "run", "learner", "--spec", str(SPEC), env=secure.env("learner", topics, prefix)
        )
        at_start = time.monotonic() - started
        assert again.returncode == 1
        assert f"Write on Topic:{topics.predictions}" in again.stderr, again.stderr
        assert at_start < 30
        grant(secure.broker, "learner", write_predictions)
        procs["learner"] = start_service("learner", SPEC, secure.env("learner", topics, prefix))
        n, accuracy = predictions_accuracy(secure, topics, procs, spec)
    finally:
        codes = {name: p.stop() for name, p in procs.items()}
    assert n == 1250
    assert accuracy == windowed_accuracy_in_process(SPEC)
    assert all(code == 0 for code in codes.values()), codes
    print(
        f"learner stopped {took:.1f}s after the replay ({first_line_with(log, 'Write on')}); "
        f"restarted without the ACL it stopped after {at_start:.1f}s; granted again: "
        f"{n} predictions, {accuracy}"
    )


@pytest.mark.parametrize(
    "command",
    [["run", "ingest", "--spec", str(SPEC)], ["api"], ["models", "list", "phishing-windows"]],
    ids=["service", "api", "models"],
)
def test_the_development_checkpoint_key_is_refused_outside_local_runs(command):
    result = headwater(*command, env={"HEADWATER_ALLOW_DEV_CHECKPOINT_KEY": "false"}, timeout=60)
    assert result.returncode == 1
    assert "HEADWATER_CHECKPOINT_KEY is the published development key" in error_line(
        result.stderr
    ), result.stderr
    assert "Traceback" not in result.stderr
