"""Orchestration of `headwater demo`; every process it starts is stopped on the way out."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.api.report import write_report
from services.demo.scoring import dedupe, score
from services.launch import start_api, start_service
from services.replay.datasets import dataset_events
from services.replay.recorded import read_events, write_events
from services.replay.replayer import replay_file
from shared.codec import decode
from shared.kafka import SafeProducer
from shared.kafka.connection import KafkaConnection
from shared.keys import PipelineKeys
from shared.messages import Prediction
from shared.models.river_factory import build_metric, default_metric
from shared.redis_store import RedisStore
from shared.settings import TopicNames
from shared.spec import PipelineSpec, load_spec
from shared.stack import LocalStack
from shared.stack.local_stack import pipeline_topics
from shared.stack.processes import ManagedProcess, free_port, port_is_free, wait_for_port

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "ops" / "pipelines" / "phishing.yaml"


class DemoError(RuntimeError):
    pass


@dataclass
class ModelResult:
    name: str
    predictions: int
    unlabelled: int
    metrics: list[Any]


@dataclass
class DemoSummary:
    pipeline: str
    dataset: str
    events: int
    labels_on_topic: int
    predictions: int
    seconds: float
    champion: str
    models: list[ModelResult] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def resolve_dataset(dataset: str, workdir: Path) -> tuple[str, Path]:
    """A recorded stream file as is, or a River dataset exported to `workdir`."""
    path = Path(dataset)
    if path.suffix in (".jsonl", ".gz") or path.exists():
        if not path.is_file():
            raise DemoError(f"recorded stream {path} does not exist")
        return path.name, path
    out = workdir / f"{dataset.lower()}.jsonl"
    write_events(out, dataset_events(dataset))
    return dataset, out


def collect_predictions(
    where: KafkaConnection | str,
    topic: str,
    partitions: int,
    expected: int,
    models: list[str],
    timeout: float,
    alive: Callable[[], bool],
) -> list[Prediction]:
    """Read the predictions topic until every model has `expected` distinct predictions."""
    consumer = Consumer(
        KafkaConnection.of(where).config(
            {"group.id": "headwater.demo", "enable.auto.commit": False}
        )
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[Prediction] = []
    seen: dict[str, set[tuple[int, int]]] = {m: set() for m in models}
    deadline = time.monotonic() + timeout
    try:
        while any(len(s) < expected for s in seen.values()):
            if time.monotonic() > deadline:
                got = {m: len(s) for m, s in seen.items()}
                raise DemoError(
                    f"timed out after {timeout:.0f}s waiting for predictions: {got} of {expected}"
                )
            if not alive():
                raise DemoError("a service exited before every prediction arrived")
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is None:
                    p = Prediction.from_wire(decode(msg.value()))
                    out.append(p)
                    seen.setdefault(p.model, set()).add((p.lineage.partition, p.lineage.offset))
    finally:
        consumer.close()
    return out


def _replay(bootstrap: str, stream: Path, topics: TopicNames, label_delay: int | None) -> Any:
    """Its own producer, released on return so no client outlives the stack."""
    producer = SafeProducer(bootstrap)
    try:
        return replay_file(stream, producer, topics, label_delay=label_delay)
    finally:
        producer.close()


def wait_until_assigned(redis_url: str, pipeline: str, learner: ManagedProcess) -> None:
    """The learner reports its partitions in Redis once it has joined its group."""
    store = RedisStore(redis_url)
    key = PipelineKeys(pipeline).learner_status
    deadline = time.monotonic() + 60
    try:
        while int(store.get_hash(key).get("assigned_partitions", 0)) == 0:
            if not learner.alive():
                raise DemoError("the learner exited during start-up")
            if time.monotonic() > deadline:
                raise DemoError("the learner did not join its consumer group within 60 s")
            time.sleep(0.1)
    finally:
        store.close()


def history_every(events: int) -> str:
    """About 100 points on the page's charts, unless HEADWATER_HISTORY_EVERY says."""
    return os.environ.get("HEADWATER_HISTORY_EVERY") or str(max(10, events // 100))


def start_page(port: int, env: dict[str, str], say: Callable[[str], None]) -> ManagedProcess:
    """The API, for its pipeline page, on `port` or a free one if that is taken."""
    if not port_is_free(port):
        taken, port = port, free_port()
        say(f"  port {taken} is taken: the page is on port {port}")
    api = start_api(port, env)
    if not wait_for_port(port, 30, api.proc):
        api.stop()
        raise DemoError(f"the API did not start:\n{api.log_tail()}")
    say(f"Pipeline page: http://127.0.0.1:{port}/ui")
    return api


def hold(say: Callable[[str], None], alive: Callable[[], bool]) -> None:
    """`--serve`: keep everything up, for the page, until Ctrl-C."""
    say("Serving the page until Ctrl-C")
    try:
        while alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("Stopping")


def spec_metrics(spec: PipelineSpec) -> list[Any]:
    if spec.metrics:
        return [build_metric(n, f"metrics[{i}]") for i, n in enumerate(spec.metrics)]
    return [default_metric(spec.task)]


def run_demo(
    spec_path: Path = DEFAULT_SPEC,
    dataset: str = "Phishing",
    label_delay: int | None = None,
    timeout: float = 150.0,
    say: Callable[[str], None] = print,
    topics: TopicNames | None = None,
    broker: str = "tansu",
    page_port: int = 8000,
    report: Path | None = None,
    serve: bool = False,
) -> DemoSummary:
    """`topics` must be what the learner child reads from the environment (the defaults).
    The API serves the pipeline page while the demo runs (`serve`: until Ctrl-C);
    `report`: the page is written there as a file once the learner has stopped."""
    spec = load_spec(spec_path)
    topics = topics or TopicNames()
    with tempfile.TemporaryDirectory(prefix="headwater-demo-") as tmp:
        name, stream = resolve_dataset(dataset, Path(tmp))
        labels = {e.event_id: e.label for e in read_events(stream)}
        stack = LocalStack(pipeline_topics(topics, 1), broker=broker, say=say)
        say(f"Starting the local stack ({stack.broker_name} + Redis) for pipeline {spec.name!r}")
        with stack:
            say(f"  broker {stack.bootstrap}, redis {stack.redis_url}")
            env = {
                **stack.env(),
                "HEADWATER_LOG_FORMAT": "text",
                "HEADWATER_HISTORY_EVERY": history_every(len(labels)),
            }
            helpers = [start_service("ingest", spec_path, env)]
            if spec.features:
                helpers.append(start_service("features", spec_path, env))
            learner = start_service("learner", spec_path, env)
            try:
                helpers.append(start_page(page_port, env, say))
                wait_until_assigned(stack.redis_url, spec.name, learner)
                say(f"Replaying {name} ({len(labels)} events) through Kafka")
                started = time.monotonic()
                sent = _replay(stack.bootstrap, stream, topics, label_delay)
                say("Waiting for every prediction on the predictions topic")
                predictions = collect_predictions(
                    stack.bootstrap,
                    topics.predictions,
                    1,
                    sent.events,
                    [m.name for m in spec.models],
                    timeout,
                    lambda: learner.alive() and all(h.alive() for h in helpers),
                )
                seconds = time.monotonic() - started
                if serve:
                    hold(say, lambda: learner.alive() and all(h.alive() for h in helpers))
            except DemoError as exc:
                logs = "\n".join(f"{p.name} log:\n{p.log_tail()}" for p in [*helpers, learner])
                raise DemoError(f"{exc}\n{logs}") from exc
            finally:
                codes = {p.name: p.stop() for p in [learner, *helpers]}
            for proc in [*helpers, learner]:
                if codes[proc.name] != 0:
                    raise DemoError(
                        f"{proc.name} exited with {codes[proc.name]}:\n{proc.log_tail()}"
                    )
                proc.cleanup()
            if report is not None:
                size = write_report(stack.settings(topics=topics), spec.name, report)
                say(f"Report: {report} ({size / 1024:,.0f} KiB), the page as one file")
    summary = DemoSummary(
        spec.name, name, sent.events, sent.labels, len(predictions), seconds, spec.champion
    )
    for model, preds in dedupe(predictions).items():
        metrics, unlabelled = score(preds, labels, spec_metrics(spec))
        summary.models.append(ModelResult(model, len(preds), unlabelled, metrics))
    summary.models.sort(key=lambda m: (m.name != spec.champion, m.name))
    return summary
