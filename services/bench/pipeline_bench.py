"""What a user of the whole pipeline experiences, each figure against a baseline measured in
the same run (DESIGN §8, issue 26):

- throughput: ingest + features + learner as separate `headwater run` processes on the
  Phishing-windows spec, from the first event produced to the last prediction's broker
  timestamp, against the in-process River loop on the same events;
- latency at a steady rate: event produced -> its prediction seen on the predictions topic,
  for the learner alone, the whole pipeline and the Quix Streams peer, against one raw
  produce -> consume hop;
- the Quix Streams peer's throughput beside the learner's (services/bench/peer_bench.py);
- checkpoint overhead: the learner at the default checkpoint cadence against checkpoints
  effectively off, in alternating rounds;
- failover: SIGKILL the active learner, time until the standby's first prediction.

Each part runs on a stack of its own, so no part inherits another's topics or state.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.bench.cpu import cpu_seconds
from services.bench.latency import Latency, OutputWatch, Record, paced_latency, send_paced
from services.bench.learner_bench import RIVER_SPEC, bench_events, inprocess_river, service_rate
from services.bench.peer_bench import PeerBench, run_peer_bench, start_peer
from services.launch import start_service
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.keys import PipelineKeys
from shared.messages import Event
from shared.redis_store import RedisStore, redis_client
from shared.settings import TopicNames
from shared.spec import load_spec, parse_spec
from shared.stack import LocalStack
from shared.stack.local_stack import pipeline_topics
from shared.stack.processes import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_SPEC = ROOT / "ops/pipelines/phishing-windows.yaml"
ENTITIES = 10_000
WARMUP = 500  # events sent first, whose outputs say the processes under test are up
LATENCY_RATE = 1000.0  # events/s
START = 1_704_067_200.0  # the stream's first event time


class PipelineBenchError(RuntimeError):
    pass


@dataclass
class Throughput:
    events_per_s: float  # first event produced -> last prediction's broker timestamp
    inprocess_events_per_s: float  # River's predict_one + learn_one loop, same events
    ratio: float
    cpu_us_per_event: dict[str, float | None]  # each process, from /proc


@dataclass
class Checkpointing:
    events: int
    default_events_per_s: float  # medians over the rounds
    off_events_per_s: float
    overhead: float  # 1 - the median of the rounds' default/off ratios
    rounds: list[tuple[float, float]]


@dataclass
class PipelineBench:
    broker: str
    events: int
    entities: int
    throughput: Throughput
    latency: dict[str, Latency]  # raw_hop, learner, pipeline, quix at-least-once, …
    peer: PeerBench
    checkpointing: Checkpointing
    failover_s: float
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stream(n: int, tag: str) -> list[Event]:
    """Phishing cycled to `n` events over ENTITIES entities, ids unique to `tag`, event
    times 10 ms apart as in `headwater bench features` (each entity's windows then hold
    several events, and no entity outlives the spec's 1 h TTL between two of its events)."""
    return [
        Event(f"{tag}{i:09d}", f"e{i % ENTITIES}", START + i * 0.01, e.data, e.label)
        for i, e in enumerate(bench_events("Phishing", n))
    ]


def records(events: list[Event]) -> list[Record]:
    return [(e.event_id, encode(e.to_wire()), e.entity.encode()) for e in events]


def _env(stack: LocalStack, **extra: str) -> dict[str, str]:
    return {**stack.env(), "HEADWATER_LOG_LEVEL": "WARNING", **extra}


@contextmanager
def services(names: list[str], spec: Path, env: dict[str, str]) -> Iterator[list[ManagedProcess]]:
    """`headwater run NAME` for each name; stopped (and their logs shown on failure) after."""
    procs: list[ManagedProcess] = []
    try:
        for name in names:
            procs.append(start_service(name, spec, env))
        yield procs
    except Exception as exc:
        logs = "\n".join(f"{p.name} log:\n{p.log_tail(30)}" for p in procs)
        raise PipelineBenchError(f"{exc}\n{logs}") from exc
    finally:
        for proc in procs:
            proc.stop(30)
            proc.cleanup()


def all_alive(procs: list[ManagedProcess]) -> Callable[[], bool]:
    return lambda: all(p.alive() for p in procs)


def still_running(proc: subprocess.Popen[str]) -> Callable[[], bool]:
    return lambda: proc.poll() is None


def child_pids(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _process_pids(stack: LocalStack, procs: list[ManagedProcess]) -> dict[str, int | None]:
    pids: dict[str, int | None] = {p.name: p.pid for p in procs}
    for p in procs:
        if p.name == "learner":
            children = child_pids(p.pid)
            pids["model_process"] = children[0] if children else None
    pids["broker"] = stack.broker_pid
    pids["redis"] = stack.redis.pid if stack.redis is not None else None
    return pids


def _cpu(pids: dict[str, int | None]) -> dict[str, float | None]:
    return {name: None if pid is None else cpu_seconds(pid) for name, pid in pids.items()}


def events_seen(store: RedisStore, pipeline: str) -> int:
    """What the learner's status says it has read (written every second)."""
    return int(store.get_hash(PipelineKeys(pipeline).learner_status).get("events_seen", 0))


def last_output_time(bootstrap: str, topic: str, n: int, timeout: float = 120) -> float:
    """The latest broker timestamp (producer create time) among `n` records of `topic`."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"last-{topic}"})
    reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    last, count, deadline = 0.0, 0, time.monotonic() + timeout
    try:
        while count < n:
            if time.monotonic() > deadline:
                raise PipelineBenchError(f"only {count} of {n} records on {topic}")
            for msg in reader.consume(5000, 0.5):
                if msg.error() is None:
                    last, count = max(last, msg.timestamp()[1] / 1000), count + 1
    finally:
        reader.close()
    return last


def pipeline_throughput(n: int, broker: str, say: Callable[[str], None]) -> Throughput:
    spec = load_spec(PIPELINE_SPEC)
    everything = stream(WARMUP + n, "t")
    warm, events = everything[:WARMUP], everything[WARMUP:]
    inprocess = inprocess_river(parse_spec(RIVER_SPEC, "bench"), events)
    say(f"  in-process River loop: {inprocess:,.0f} events/s")
    topics = TopicNames()
    with (
        LocalStack(pipeline_topics(topics, 1), broker=broker) as stack,
        services(["ingest", "features", "learner"], PIPELINE_SPEC, _env(stack)) as procs,
    ):
        alive = all_alive(procs)
        watch = OutputWatch(stack.bootstrap, topics.predictions, 1)
        producer = SafeProducer(stack.bootstrap)
        try:
            producer.produce_all(topics.events, [(v, k) for _, v, k in records(warm)])
            producer.flush()
            if watch.wait_for([e.event_id for e in warm], 180, alive):
                raise PipelineBenchError("the pipeline made no prediction for the warm-up")
        finally:
            watch.close()
        batch: list[tuple[bytes, bytes | None]] = [(v, k) for _, v, k in records(events)]
        pids = _process_pids(stack, procs)
        before = _cpu(pids)
        started = time.time()
        producer.produce_all(topics.events, batch)
        producer.close()
        deadline = time.monotonic() + 900
        store = RedisStore(stack.redis_url)
        try:
            while events_seen(store, spec.name) < WARMUP + n:
                if not alive():
                    raise PipelineBenchError("a service exited during the throughput run")
                if time.monotonic() > deadline:
                    raise PipelineBenchError("the stream was not through the pipeline in 900 s")
                time.sleep(0.05)
        finally:
            store.close()
        after = _cpu(pids)
        last = last_output_time(stack.bootstrap, topics.predictions, WARMUP + n)
    rate = n / (last - started)
    cpu = {
        name: None
        if (b := before[name]) is None or (a := after[name]) is None
        else (a - b) / n * 1e6
        for name in pids
    }
    return Throughput(rate, inprocess, rate / inprocess, cpu)


def latencies(broker: str, seconds: float, say: Callable[[str], None]) -> dict[str, Latency]:
    """Each at LATENCY_RATE for `seconds`, on a stack of its own."""
    everything = stream(WARMUP + int(LATENCY_RATE * seconds), "l")
    warm, measured = records(everything[:WARMUP]), records(everything[WARMUP:])
    topics = TopicNames()
    out: dict[str, Latency] = {}

    def report(name: str, result: Latency) -> None:
        out[name] = result
        say(
            f"  {name}: p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, p99.9 "
            f"{result.p999_ms:.1f} ms ({result.events} events at {result.rate_per_s:,.0f}/s, "
            f"{result.missing} missing)"
        )

    with LocalStack({"hop": 1}, broker=broker) as stack:
        report(
            "raw_hop", paced_latency(stack.bootstrap, "hop", "hop", warm, measured, LATENCY_RATE)
        )
    with tempfile.TemporaryDirectory() as tmp:
        learner_spec = Path(tmp) / "learner.yaml"
        learner_spec.write_text(RIVER_SPEC)
        runs = [
            ("learner", learner_spec, ["learner"], topics.events_valid),
            ("pipeline", PIPELINE_SPEC, ["ingest", "features", "learner"], topics.events),
        ]
        for name, spec, names, source in runs:
            with (
                LocalStack(pipeline_topics(topics, 1), broker=broker) as stack,
                services(names, spec, _env(stack)) as procs,
            ):
                result = paced_latency(
                    stack.bootstrap,
                    source,
                    topics.predictions,
                    warm,
                    measured,
                    LATENCY_RATE,
                    alive=all_alive(procs),
                )
            report(name, result)
    for guarantee in ("at-least-once", "exactly-once"):
        with LocalStack({"peer.in": 1, "peer.out": 1}, broker=broker) as stack:
            proc = start_peer(
                stack.bootstrap, guarantee, "peer.in", "peer.out", len(warm) + len(measured)
            )
            try:
                result = paced_latency(
                    stack.bootstrap,
                    "peer.in",
                    "peer.out",
                    warm,
                    measured,
                    LATENCY_RATE,
                    alive=still_running(proc),
                )
            finally:
                proc.kill()
                proc.wait(30)
        report(f"quix {guarantee}", result)
    return out


def checkpoint_overhead(
    n: int, broker: str, repeat: int, say: Callable[[str], None]
) -> Checkpointing:
    """The learner alone (as `headwater bench learner` times it) with checkpoints at the
    default cadence and effectively off, `repeat` times each; which goes first alternates
    from round to round, so the order of a pair favours neither side."""
    spec = parse_spec(RIVER_SPEC, "bench")
    events = bench_events("Phishing", n)
    settings: dict[str, dict[str, Any]] = {
        "default": {},
        "off": {"checkpoint_interval_s": 1e9, "checkpoint_every_records": 10**12},
    }
    rounds = []
    for i in range(repeat):
        order = ["default", "off"] if i % 2 == 0 else ["off", "default"]
        rate = {
            name: service_rate(spec, events, say, broker_kind=broker, settings=settings[name])[0]
            for name in order
        }
        default, without = rate["default"], rate["off"]
        say(f"  round {i + 1}: default cadence {default:,.0f} events/s, off {without:,.0f}")
        rounds.append((default, without))
    return Checkpointing(
        n,
        statistics.median(r[0] for r in rounds),
        statistics.median(r[1] for r in rounds),
        1 - statistics.median(r[0] / r[1] for r in rounds),
        rounds,
    )


def failover_time(broker: str, say: Callable[[str], None], timeout: float = 120) -> float:
    """Seconds from SIGKILL of the active learner to the first prediction the standby
    makes (the first with a create time after the kill: a dead process makes none)."""
    topics = TopicNames()
    spec = parse_spec(RIVER_SPEC, "bench")
    everything = stream(WARMUP + int(LATENCY_RATE * timeout), "f")
    warm, rest = records(everything[:WARMUP]), records(everything[WARMUP:])
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(pipeline_topics(topics, 1), broker=broker) as stack,
    ):
        spec_path = Path(tmp) / "learner.yaml"
        spec_path.write_text(RIVER_SPEC)
        env = _env(stack, HEADWATER_LOG_LEVEL="INFO")
        with services(["learner", "learner"], spec_path, env) as procs:
            holder = _active(stack, spec.name, procs, 60)
            standby = next(p for p in procs if p is not holder)
            _wait_for_log(standby, "standby", 60)
            stop = threading.Event()
            sender = threading.Thread(
                target=_send_paced, args=(stack.bootstrap, topics.events_valid, warm + rest, stop)
            )
            sender.start()
            try:
                time.sleep(WARMUP / LATENCY_RATE + 3)  # predictions flow
                os.kill(holder.pid, signal.SIGKILL)
                killed_at = time.time()
                say(f"  killed the active learner (pid {holder.pid})")
                first = _first_output_after(stack.bootstrap, topics.predictions, killed_at, timeout)
            finally:
                stop.set()
                sender.join(30)
    return first - killed_at


def _active(
    stack: LocalStack, pipeline: str, procs: list[ManagedProcess], timeout: float
) -> ManagedProcess:
    client = redis_client(stack.settings())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            owner = client.get(PipelineKeys(pipeline).learner_lease)
            if owner:
                text = owner.decode() if isinstance(owner, bytes) else str(owner)
                pid = int(text.split(":")[1])
                for p in procs:
                    if p.pid == pid:
                        return p
            time.sleep(0.1)
    finally:
        client.close()
    raise PipelineBenchError("no learner took the lease")


def _wait_for_log(proc: ManagedProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log_tail(200):
        if time.monotonic() > deadline or not proc.alive():
            raise PipelineBenchError(f"{proc.name} never logged {text!r}")
        time.sleep(0.1)


def _send_paced(bootstrap: str, topic: str, batch: list[Record], stop: threading.Event) -> None:
    producer = SafeProducer(bootstrap)
    send_paced(producer, topic, batch, LATENCY_RATE, stop=stop)
    producer.close()


def _first_output_after(bootstrap: str, topic: str, after: float, timeout: float) -> float:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"failover-{topic}"})
    reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for msg in reader.consume(1000, 0.1):
                if msg.error() is None and (at := msg.timestamp()[1] / 1000) > after:
                    return at
    finally:
        reader.close()
    raise PipelineBenchError(f"no prediction within {timeout:.0f} s of killing the learner")


def judge(result: PipelineBench) -> dict[str, dict[str, Any]]:
    """Each target (issue 26) with the figure it is met (or missed) by."""
    raw = result.latency["raw_hop"].p99_ms
    peer = result.peer
    at_most = {
        "learner_p99_over_raw_hop": (result.latency["learner"].p99_ms / raw, 4.0),
        "pipeline_p99_over_raw_hop": (result.latency["pipeline"].p99_ms / raw, 8.0),
        "checkpoint_overhead": (result.checkpointing.overhead, 0.05),
        "failover_s": (result.failover_s, 10.0),
    }
    at_least = {
        "pipeline_over_inprocess": (result.throughput.ratio, 0.3),
        "learner_over_quix_at_least_once": (peer.ratios["at-least-once"], 1.5),
        "learner_over_quix_exactly_once": (peer.ratios["exactly-once"], 1.8),
    }
    out: dict[str, dict[str, Any]] = {
        name: {"target": f"<= {bound}", "value": value, "met": value <= bound}
        for name, (value, bound) in at_most.items()
    }
    out |= {
        name: {"target": f">= {bound}", "value": value, "met": value >= bound}
        for name, (value, bound) in at_least.items()
    }
    # the learner's processes and the broker, against the peer's process and the broker
    learner_cpu = sum(v for v in peer.learner_cpu_us_per_event.values() if v is not None)
    for guarantee, run in peer.peers.items():
        peer_cpu = run.cpu_us_per_event + (run.broker_cpu_us_per_event or 0.0)
        out[f"cpu_over_quix_{guarantee.replace('-', '_')}"] = {
            "target": "< 1",
            "value": learner_cpu / peer_cpu,
            "met": learner_cpu < peer_cpu,
        }
    return out


def run_pipeline_bench(
    n: int = 200_000,
    broker: str = "tansu",
    latency_seconds: float = 60.0,
    checkpoint_events: int = 900_000,
    repeat: int = 3,
    say: Callable[[str], None] = print,
    plot: Path | None = None,
    peer_events: int = 300_000,
) -> PipelineBench:
    say(f"Throughput: ingest + features + learner, {n} events over {ENTITIES} entities on {broker}")
    throughput = pipeline_throughput(n, broker, say)
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in throughput.cpu_us_per_event.items() if v)
    say(f"  pipeline: {throughput.events_per_s:,.0f} events/s, CPU µs/event: {cpu}")
    say(f"Latency at {LATENCY_RATE:,.0f} events/s for {latency_seconds:.0f} s")
    latency = latencies(broker, latency_seconds, say)
    say("Quix Streams peer")
    peer = run_peer_bench(peer_events, broker, say)
    say(f"Checkpoint overhead: {checkpoint_events} events, {repeat} rounds")
    checkpointing = checkpoint_overhead(checkpoint_events, broker, repeat, say)
    say("Failover")
    failover = failover_time(broker, say)
    say(f"  {failover:.2f} s")
    result = PipelineBench(broker, n, ENTITIES, throughput, latency, peer, checkpointing, failover)
    result.targets = judge(result)
    if plot is not None:
        from services.bench.pipeline_plot import plot_pipeline

        plot_pipeline(result, plot)
        say(f"Chart written to {plot}")
    return result
