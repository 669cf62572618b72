"""`headwater bench drift`: River's synthetic streams with drifts at known positions, and a
stationary one, through the whole pipeline (ingest, learner, monitor on a local broker and
Redis); per concept-drift detector, the detection delay, false alarms and missed drifts,
and whether the same detector run in-process on the same error stream agrees exactly.

Per stream, the monitors of every detector run side by side on the same outcomes topic,
each with its own consumer group, Redis database and alerts topic.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.demo.run import wait_until_assigned
from services.launch import start_service
from services.monitor.engine import DriftEngine
from shared.checkpoint.store import CheckpointStore
from shared.codec import decode, encode
from shared.kafka import SafeProducer
from shared.messages import DriftAlert, Event, Lineage, Outcome
from shared.redis_store import RedisStore
from shared.settings import TopicNames
from shared.spec import parse_spec
from shared.stack import LocalStack
from shared.stack.local_stack import pipeline_topics
from shared.stack.processes import ManagedProcess

DETECTORS = (
    "river.drift.ADWIN",
    "river.drift.PageHinkley",
    "river.drift.binary.DDM",
    "river.drift.binary.EDDM",
    "river.drift.binary.HDDMA",
    "river.drift.binary.HDDMW",
)
PIPELINE = "bench-drift"
SEA_MODEL = (
    "{pipeline: [river.preprocessing.StandardScaler, river.linear_model.LogisticRegression]}"
)
TREE_MODEL = "river.tree.HoeffdingTreeClassifier"
# A detection this long after the drift no longer counts as one: the drift was missed.
DETECTION_WINDOW = 5_000


class DriftBenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class DriftStream:
    name: str
    drift_kind: str  # abrupt, gradual or none
    model: str  # the learner's River model, as spec YAML
    n: int
    position: int | None = None  # where the drift is centred
    width: int = 0  # of a gradual drift

    def events(self) -> list[Event]:
        pairs = itertools.islice(self._source(), self.n)
        return [
            Event(
                f"{self.name}-{i}",
                f"u{i % 100}",
                1_704_067_200.0 + i,
                {str(k): v for k, v in x.items()},
                bool(y),
            )
            for i, (x, y) in enumerate(pairs)
        ]

    def _source(self) -> Iterator[tuple[dict[Any, Any], Any]]:
        from river.datasets import synth

        if self.name.startswith("agrawal"):
            before: Any = synth.Agrawal(classification_function=0, seed=42)
            after: Any = synth.Agrawal(classification_function=2, seed=7)
        else:
            before, after = synth.SEA(variant=0, seed=42), synth.SEA(variant=2, seed=7)
        if self.drift_kind == "none":
            return iter(before)
        assert self.position is not None
        if self.drift_kind == "abrupt":
            return itertools.chain(itertools.islice(before, self.position), after)
        return iter(
            synth.ConceptDriftStream(
                before, after, seed=1, position=self.position, width=self.width
            )
        )


def default_streams(drift_events: int, stationary_events: int) -> list[DriftStream]:
    at = drift_events // 2
    return [
        DriftStream("sea-abrupt", "abrupt", SEA_MODEL, drift_events, at),
        DriftStream("sea-gradual", "gradual", SEA_MODEL, drift_events, at, width=1000),
        DriftStream("agrawal-abrupt", "abrupt", TREE_MODEL, drift_events, at),
        DriftStream("sea-stationary", "none", SEA_MODEL, stationary_events),
    ]


def spec_text(model: str, detector: str) -> str:
    return f"""
name: {PIPELINE}
task: binary
models:
  - name: m
    river: {model}
drift:
  concept: {{detector: {detector}}}
  covariate: {{enabled: false}}
  prediction: {{enabled: false}}
"""


@dataclass
class DetectorResult:
    name: str
    detector: str
    stream: str
    drift_kind: str
    events: int
    alerts: int
    delay_events: int | None  # first alert at or after the drift, minus its position
    false_alarms_per_100k: float  # alerts before the drift (or anywhere, if none), per 100k
    missed: int  # drifts with no alert within DETECTION_WINDOW events after them
    matches_inprocess: bool


@dataclass
class DriftBench:
    detectors: list[DetectorResult] = field(default_factory=list)
    streams: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(
    stream: DriftStream, detector: str, alerts: list[DriftAlert], same: bool
) -> DetectorResult:
    at = [int(a.event_id.rsplit("-", 1)[1]) for a in alerts]
    if stream.position is None:
        before, after = at, []
        clean = stream.n
    else:
        start = stream.position - stream.width // 2
        before = [i for i in at if i < start]
        after = [i for i in at if start <= i < stream.position + DETECTION_WINDOW]
        clean = start
    delay = None
    if after and stream.position is not None:
        delay = max(0, after[0] - stream.position)
    return DetectorResult(
        detector.rsplit(".", 1)[1],
        detector,
        stream.name,
        stream.drift_kind,
        stream.n,
        len(alerts),
        delay,
        len(before) * 100_000 / max(clean, 1),
        int(stream.position is not None and not after),
        same,
    )


def read_all(
    bootstrap: str,
    topic: str,
    expected: int,
    procs: Sequence[ManagedProcess] = (),
    timeout: float = 300,
) -> list[Any]:
    """The first `expected` records of a one-partition topic, decoded. (Counted by reading:
    the local broker's high watermark counts a batch of records as one.)"""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-drift-read"})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected:
            if time.monotonic() > deadline:
                logs = "\n".join(f"{p.name} log:\n{p.log_tail()}" for p in procs)
                raise DriftBenchError(f"{len(out)} of {expected} records on {topic}\n{logs}")
            for p in procs:
                if not p.alive():
                    raise DriftBenchError(f"{p.name} exited:\n{p.log_tail()}")
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is None:
                    out.append(decode(msg.value()))
    finally:
        consumer.close()
    return out[:expected]


def _wait(done: Callable[[], bool], what: str, procs: list[ManagedProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for p in procs:
            if not p.alive():
                raise DriftBenchError(f"{p.name} exited while waiting for {what}:\n{p.log_tail()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"{p.name} log:\n{p.log_tail()}" for p in procs)
            raise DriftBenchError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)


def _stop(procs: list[ManagedProcess]) -> None:
    failed = []
    for p in procs:
        if p.stop() != 0:
            failed.append(f"{p.name}:\n{p.log_tail()}")
        p.cleanup()
    if failed:
        raise DriftBenchError("a service exited badly:\n" + "\n".join(failed))


def run_stream(
    stream: DriftStream, detectors: tuple[str, ...], say: Callable[[str], None], workdir: Path
) -> tuple[list[DetectorResult], dict[str, Any]]:
    topics = TopicNames()
    alert_topics = [f"{topics.drift_alerts}.{i}" for i in range(len(detectors))]
    events = stream.events()
    learner_spec = workdir / f"{stream.name}.yaml"
    learner_spec.write_text(spec_text(stream.model, detectors[0]))
    with LocalStack({**pipeline_topics(topics, 1), **dict.fromkeys(alert_topics, 1)}) as stack:
        env = {**stack.env(), "HEADWATER_LOG_FORMAT": "text"}
        upstream = [
            start_service("ingest", learner_spec, env),
            start_service("learner", learner_spec, env),
        ]
        try:
            wait_until_assigned(stack.redis_url, PIPELINE, upstream[1])
            producer = SafeProducer(stack.bootstrap)
            for e in events:
                producer.produce(topics.events, encode(e.to_wire()), e.entity.encode())
            producer.close()
            outcomes = [
                Outcome.from_wire(v)
                for v in read_all(stack.bootstrap, topics.outcomes, stream.n, upstream)
            ]
        finally:
            _stop(upstream)
        say(f"  {stream.name}: {stream.n} events through ingest and the learner; monitors running")
        monitors, stores = [], []
        base = stack.redis_url.rsplit("/", 1)[0]
        for i, detector in enumerate(detectors):
            spec_file = workdir / f"{stream.name}-{i}.yaml"
            spec_file.write_text(spec_text(stream.model, detector))
            redis_url = f"{base}/{i + 1}"
            monitor_env = {
                **env,
                "HEADWATER_REDIS_URL": redis_url,
                "HEADWATER_TOPICS__DRIFT_ALERTS": alert_topics[i],
                "HEADWATER_CONSUMER_GROUP_PREFIX": f"bench{i}",
                "HEADWATER_CHECKPOINT_INTERVAL_S": "1",
            }
            stores.append(
                CheckpointStore(
                    RedisStore(redis_url).client, PIPELINE, f"monitor-{topics.outcomes}-p0", b"-"
                )
            )
            monitors.append(start_service("monitor", spec_file, monitor_env))
        started = time.monotonic()
        try:
            _wait(
                lambda: all(_applied(s) >= stream.n for s in stores),
                "every monitor to apply every outcome",
                monitors,
                600,
            )
            seconds = time.monotonic() - started
        finally:
            _stop(monitors)
        results = []
        for i, detector in enumerate(detectors):
            n_alerts = _alerts_sent(stores[i])
            got = [
                DriftAlert.from_wire(v)
                for v in read_all(stack.bootstrap, alert_topics[i], n_alerts)
            ]
            spec = parse_spec(spec_text(stream.model, detector), "bench")
            engine = DriftEngine(PIPELINE, "binary", spec.drift)
            expected: list[DriftAlert] = []
            for offset, o in enumerate(outcomes):
                expected += engine.observe_outcome(o, Lineage(topics.outcomes, 0, offset))
            results.append(score(stream, detector, got, got == expected))
    figures = {
        "name": stream.name,
        "drift_kind": stream.drift_kind,
        "events": stream.n,
        "position": stream.position,
        "width": stream.width,
        "monitors": len(detectors),
        "monitor_seconds": seconds,
        # the monitors share the machine's cores: this is their outcomes per second together
        "monitor_outcomes_per_s_total": stream.n * len(detectors) / seconds,
    }
    return results, figures


def _alerts_sent(store: CheckpointStore) -> int:
    """Alerts the monitor sent (its engine's counts, in the last checkpoint's metadata)."""
    meta = store.versions()[0].meta
    return sum(
        int(v) for k, v in meta.items() if k.startswith("alerts_") and k != "alerts_suppressed"
    )


def _applied(store: CheckpointStore) -> int:
    versions = store.versions()
    return int(versions[0].meta.get("next_offset", 0)) if versions else 0


def run_drift_bench(
    drift_events: int = 20_000,
    stationary_events: int = 100_000,
    detectors: tuple[str, ...] = DETECTORS,
    say: Callable[[str], None] = print,
) -> DriftBench:
    for detector in detectors:  # a bad name fails now, not after minutes of streaming
        parse_spec(spec_text(SEA_MODEL, detector), f"--detector {detector}")
    bench = DriftBench()
    with tempfile.TemporaryDirectory(prefix="headwater-drift-bench-") as tmp:
        for stream in default_streams(drift_events, stationary_events):
            say(f"{stream.name} ({stream.drift_kind}, {stream.n} events)")
            results, figures = run_stream(stream, detectors, say, Path(tmp))
            bench.detectors += results
            bench.streams.append(figures)
            for r in results:
                say(
                    f"  {r.name:12} alerts {r.alerts:3}  delay {r.delay_events}  "
                    f"false alarms/100k {r.false_alarms_per_100k:.1f}  missed {r.missed}  "
                    f"in-process agrees {r.matches_inprocess}"
                )
    return bench
