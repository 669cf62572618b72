"""Headwater's learner against the job a user would write instead: a Quix Streams
application (services/bench/quix_peer.py) that consumes the same events, calls River's
predict_one then learn_one, and produces a prediction per event, with Quix's at-least-once
and exactly-once guarantees. Same stream, same model (StandardScaler | LogisticRegression),
same consumer and producer tuning.

Both are timed alike: from the end of their first quarter (warm-up) until their last output
is delivered (and, for the peer, committed). CPU µs per
event: the learner's thread and its model process, the peer's process (every thread), and
the broker's share.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.bench.cpu import cpu_seconds
from services.bench.learner_bench import RIVER_SPEC, bench_events, service_rate
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.messages import Event
from shared.spec import parse_spec
from shared.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]
QUIX_PYTHON = ROOT / ".venv-quix/bin/python"
GUARANTEES = ("at-least-once", "exactly-once")


class PeerBenchError(RuntimeError):
    pass


@dataclass
class PeerRun:
    events_per_s: float
    cpu_us_per_event: float  # the peer's process, every thread
    broker_cpu_us_per_event: float | None  # over the whole run, start-up included


@dataclass
class PeerBench:
    events: int
    broker: str
    learner_events_per_s: float
    learner_cpu_us_per_event: dict[str, float | None]
    peers: dict[str, PeerRun]
    ratios: dict[str, float]  # the learner's events/s over each peer's

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def start_peer(
    bootstrap: str, guarantee: str, source: str, sink: str, events: int
) -> subprocess.Popen[str]:
    """The Quix peer as a process of its own: it exits once it made `events` outputs."""
    if not QUIX_PYTHON.exists():
        raise PeerBenchError(
            f"the Quix Streams peer's interpreter {QUIX_PYTHON} is missing: run "
            "`make setup-bench-peer` (a venv of its own: quixstreams pins an older "
            "confluent-kafka than Headwater's)"
        )
    return subprocess.Popen(
        [
            str(QUIX_PYTHON),
            str(Path(__file__).with_name("quix_peer.py")),
            bootstrap,
            guarantee,
            source,
            sink,
            f"quix-{uuid.uuid4().hex[:6]}",
            str(events),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def peer_run(events: list[Event], guarantee: str, broker: str, timeout: float = 900) -> PeerRun:
    """The Quix peer on a fresh stack holding the stream on its input, timed as the
    learner is: its first quarter is warm-up."""
    source, sink = "peer.in", "peer.out"
    with LocalStack({source: 1, sink: 1}, broker=broker) as stack:
        producer = SafeProducer(stack.bootstrap)
        producer.produce_all(source, [(encode(e.to_wire()), e.entity.encode()) for e in events])
        producer.close()
        pid = stack.broker_pid
        broker_before = None if pid is None else cpu_seconds(pid)
        peer = start_peer(stack.bootstrap, guarantee, source, sink, len(events))
        try:
            out, err = peer.communicate(timeout=timeout)
        finally:
            if peer.poll() is None:
                peer.kill()
                peer.wait(30)
        broker_after = None if pid is None else cpu_seconds(pid)
    lines = out.strip().splitlines()
    if peer.returncode != 0 or not lines:
        raise PeerBenchError(f"the Quix peer failed ({peer.returncode}):\n{err[-3000:]}")
    marks = json.loads(lines[-1])
    n = int(marks["events"])
    if n != len(events):
        raise PeerBenchError(f"the Quix peer saw {n} of {len(events)} events")
    timed = n - int(marks["quarter"])
    broker_us = (
        None
        if broker_before is None or broker_after is None
        else (broker_after - broker_before) / n * 1e6
    )
    return PeerRun(
        timed / (marks["last_wall"] - marks["quarter_wall"]),
        (marks["last_cpu"] - marks["quarter_cpu"]) / timed * 1e6,
        broker_us,
    )


def run_peer_bench(
    n: int = 300_000, broker: str = "tansu", say: Callable[[str], None] = print
) -> PeerBench:
    events = bench_events("Phishing", n)
    spec = parse_spec(RIVER_SPEC, "bench")
    say(f"Headwater's learner (StandardScaler | LogisticRegression), {n} events on {broker}")
    rate, cpu = service_rate(spec, events, say, broker_kind=broker)
    say(f"  learner: {rate:,.0f} events/s, CPU µs/event {cpu}")
    peers = {}
    for guarantee in GUARANTEES:
        say(f"Quix Streams peer, {guarantee}")
        peers[guarantee] = run = peer_run(events, guarantee, broker)
        say(
            f"  {run.events_per_s:,.0f} events/s, {run.cpu_us_per_event:.1f} CPU µs/event "
            f"(broker {run.broker_cpu_us_per_event})"
        )
    ratios = {g: rate / p.events_per_s for g, p in peers.items()}
    return PeerBench(n, broker, rate, cpu, peers, ratios)
