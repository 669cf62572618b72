"""Scorer replicas against one replica and against an in-process River `predict_one` loop,
on the same stream in the same run (DESIGN §8: 2 replicas >= 1.5 x one on this 2-core
machine, broker included; CPU per prediction <= 2 x the loop's).

Each round: the model (StandardScaler | LogisticRegression, trained on the stream's first
events) is published as a model snapshot; 1, then 2 `headwater run scorer` processes join
a fresh consumer group over a 2-partition input and wait until each holds its partitions;
then the stream is produced at once, and the predictions' broker timestamps give the rate
from the first to the last (nothing reads them meanwhile: the output's high watermark says
when they are all there). The scorers' CPU is read from /proc from the stream's production
to that moment.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.bench.cpu import cpu_seconds
from services.bench.learner_bench import bench_events
from services.launch import start_service
from shared.codec import encode
from shared.kafka import SafeProducer, ensure_topics
from shared.messages import Event
from shared.models import build_model
from shared.models.inputs import model_input
from shared.redis_store import redis_client
from shared.settings import TopicNames
from shared.snapshot import ModelSnapshot, SnapshotStore
from shared.spec import PipelineSpec, parse_spec
from shared.stack import LocalStack
from shared.stack.processes import ManagedProcess, free_port

SPEC = """
name: bench-serving
task: binary
models:
  - name: logreg
    river:
      pipeline: [river.preprocessing.StandardScaler, river.linear_model.LogisticRegression]
serving:
  by: scorers
"""
PARTITIONS = 2
ENTITIES = 1000
TRAIN = 5000  # events the published model learned, before it serves


@dataclass
class Round:
    one_replica_per_s: float
    two_replicas_per_s: float
    ratio_replicas: float
    loop_us_per_prediction: float  # CPU of the in-process predict_one loop
    scorer_cpu_us_per_prediction: float  # the replicas' CPU over the predictions they made
    ratio_cpu: float
    # The broker's CPU per prediction (its share of the 2 cores), 1 and 2 replicas; None
    # where /proc cannot tell.
    broker_cpu_us_per_prediction: tuple[float | None, float | None]


@dataclass
class ServingBench(Round):
    events: int
    rounds: list[Round]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stream(n: int) -> list[Event]:
    """`n` Phishing events over ENTITIES entities (both partitions get their share)."""
    return [
        Event(e.event_id, f"e{i % ENTITIES}", e.ts, e.data, e.label)
        for i, e in enumerate(bench_events("Phishing", n))
    ]


def trained_snapshot(spec: PipelineSpec, events: list[Event]) -> ModelSnapshot:
    m = spec.models[0]
    model = build_model(m.name, m.kind, m.config, spec.task, "models[0]")
    for e in events[:TRAIN]:
        model.learn(model_input(e.data, False), e.label)
    return ModelSnapshot(spec.name, spec.task, 1, False, {m.name: model})


def loop_us_per_prediction(snapshot: ModelSnapshot, events: list[Event]) -> float:
    """CPU µs per event of the loop a River user writes: predict_one on each event's data."""
    estimator = snapshot.models["logreg"].estimator  # type: ignore[attr-defined]
    predict = estimator.predict_one
    started = time.process_time()
    for e in events:
        predict(e.data)
    return (time.process_time() - started) / len(events) * 1e6


def metrics_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def scorer_metric(port: int, name: str) -> float:
    """The sum of a replica's `headwater_scorer_<name>` series."""
    prefix = f"headwater_scorer_{name}"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text(port).splitlines()
        if line.startswith(prefix) and line[len(prefix)] in " {"
    )


def assigned_partitions(port: int) -> set[int]:
    """The input partitions a replica reports a lag for: those it holds and has fetched."""
    held = set()
    for line in metrics_text(port).splitlines():
        if line.startswith("headwater_scorer_consumer_lag{"):
            held.add(int(line.split('partition="')[1].split('"')[0]))
    return held


def replicas_rate(
    stack: LocalStack, spec_path: Path, events: list[Event], replicas: int, timeout: float = 600
) -> tuple[float, float, float | None]:
    """Predictions/s of `replicas` scorers on the stream, their CPU µs per prediction, and
    the broker's."""
    tag = uuid.uuid4().hex[:6]
    topics = TopicNames(events_valid=f"serving-{tag}.in", predictions=f"serving-{tag}.out")
    ensure_topics(stack.bootstrap, {topics.events_valid: PARTITIONS, topics.predictions: 1})
    env = {
        **stack.env(),
        "HEADWATER_TOPICS__EVENTS_VALID": topics.events_valid,
        "HEADWATER_TOPICS__PREDICTIONS": topics.predictions,
        "HEADWATER_CONSUMER_GROUP_PREFIX": f"bench-{tag}",
        "HEADWATER_CHECKPOINT_TOPIC": "",
        "HEADWATER_LOG_LEVEL": "WARNING",
    }
    ports = [free_port() for _ in range(replicas)]
    procs: list[ManagedProcess] = [
        start_service("scorer", spec_path, {**env, "HEADWATER_METRICS_PORT": str(port)})
        for port in ports
    ]
    reader = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"r-{tag}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        # An empty input is fetched too: each replica reports a lag once it holds partitions.
        producer = SafeProducer(stack.bootstrap)
        deadline = time.monotonic() + 120
        while True:
            held = [assigned_partitions(p) for p in ports]
            if all(held) and sorted(p for h in held for p in h) == list(range(PARTITIONS)):
                break
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(f"a scorer exited:\n{proc.log_tail(30)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"scorers did not take the partitions: {held}")
            time.sleep(0.2)
        time.sleep(1.0)  # the group settled: no rebalance within the timed span
        records: list[tuple[bytes, bytes | None]] = [
            (encode(e.to_wire()), e.entity.encode()) for e in events
        ]
        cpu_before = sum(cpu_seconds(p.pid) or 0.0 for p in procs)
        broker = stack.broker_pid
        broker_before = None if broker is None else cpu_seconds(broker)
        producer.produce_all(topics.events_valid, records)
        producer.flush()
        # Nothing reads the predictions while the scorers run (a reader would take CPU from
        # them): their counters say when all are made (Tansu's high watermark can trail).
        deadline = time.monotonic() + timeout
        while sum(scorer_metric(p, "predictions_total") for p in ports) < len(events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not {len(events)} predictions within {timeout} s")
            time.sleep(0.05)
        cpu = sum(cpu_seconds(p.pid) or 0.0 for p in procs) - cpu_before
        broker_after = None if broker is None else cpu_seconds(broker)
        producer.close()
        out = TopicPartition(topics.predictions, 0)
        first, last, count = prediction_span(reader, out, len(events))
    finally:
        reader.close()
        for proc in procs:
            proc.stop(30)
            proc.cleanup()
    broker_us = (
        None
        if broker_before is None or broker_after is None
        else (broker_after - broker_before) / count * 1e6
    )
    return (count - 1) / max(last - first, 1e-3), cpu / count * 1e6, broker_us


def prediction_span(reader: Consumer, out: TopicPartition, n: int) -> tuple[float, float, int]:
    """The broker timestamps (producer create times) of the first and last of `n`
    predictions, read after the run."""
    reader.assign([TopicPartition(out.topic, out.partition, OFFSET_BEGINNING)])
    first, last, count = float("inf"), float("-inf"), 0
    while count < n:
        for msg in reader.consume(1000, 1.0):
            if msg.error() is None:
                at = msg.timestamp()[1] / 1000
                first, last, count = min(first, at), max(last, at), count + 1
    return first, last, count


def run_round(
    stack: LocalStack,
    spec_path: Path,
    spec: PipelineSpec,
    events: list[Event],
    say: Callable[[str], None],
) -> Round:
    snapshot = trained_snapshot(spec, events)
    SnapshotStore(
        redis_client(stack.settings()), spec.name, stack.settings().checkpoint_keys()
    ).publish(snapshot)
    loop_us = loop_us_per_prediction(snapshot, events)
    say(f"  in-process predict_one loop: {loop_us:.1f} CPU µs/event")
    one, one_cpu, one_broker = replicas_rate(stack, spec_path, events, 1)
    say(_line("1 scorer: ", one, one_cpu, one_broker))
    two, two_cpu, two_broker = replicas_rate(stack, spec_path, events, 2)
    say(_line("2 scorers:", two, two_cpu, two_broker))
    return Round(one, two, two / one, loop_us, one_cpu, one_cpu / loop_us, (one_broker, two_broker))


def _line(what: str, rate: float, cpu: float, broker: float | None) -> str:
    also = "" if broker is None else f" (broker {broker:.1f})"
    return f"  {what} {rate:,.0f} predictions/s, {cpu:.1f} CPU µs/prediction{also}"


def run_serving_bench(
    n: int = 200_000, say: Callable[[str], None] = print, repeat: int = 3
) -> ServingBench:
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    spec = parse_spec(SPEC, "bench")
    events = stream(n)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp, LocalStack() as stack:
        spec_path = Path(tmp) / "serving.yaml"
        spec_path.write_text(SPEC)
        for i in range(repeat):
            say(f"Round {i + 1} of {repeat}: {n} Phishing events, {PARTITIONS} partitions")
            rounds.append(run_round(stack, spec_path, spec, events, say))

    def med(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in rounds))

    if repeat > 1:
        for name in ("ratio_replicas", "ratio_cpu"):
            say(f"{name} by round: {', '.join(f'{getattr(r, name):.2f}' for r in rounds)}")
    return ServingBench(
        med("one_replica_per_s"),
        med("two_replicas_per_s"),
        med("ratio_replicas"),
        med("loop_us_per_prediction"),
        med("scorer_cpu_us_per_prediction"),
        med("ratio_cpu"),
        (
            _median_known([r.broker_cpu_us_per_prediction[0] for r in rounds]),
            _median_known([r.broker_cpu_us_per_prediction[1] for r in rounds]),
        ),
        events=n,
        rounds=rounds,
    )


def _median_known(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(statistics.median(known)) if known else None
