"""The learner service (consume -> predict -> learn -> produce, checkpoints on) against
the in-process River and vowpal-wabbit-next loops.

All run on the same stream in the same process run; the figures that matter are the
ratios, from which the machine's speed cancels out.
"""

from __future__ import annotations

import functools
import itertools
import operator
import os
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import vowpal_wabbit_next as vw

from services.bench.cpu import CpuMeter
from services.bench.timing import timed_rate
from services.learner.app import build_learner
from services.learner.service import LearnerService
from services.replay.datasets import dataset_events
from shared.checkpoint.log import checkpoint_log
from shared.codec import encode
from shared.kafka import SafeProducer
from shared.messages import Event
from shared.models.river_factory import build_estimator
from shared.models.vw_model import features_text, vw_args
from shared.settings import TopicNames
from shared.spec import PipelineSpec, parse_spec
from shared.stack import LocalStack
from shared.stack.local_stack import pipeline_topics

RIVER_SPEC = """
name: bench-river
task: binary
models:
  - name: logreg
    river:
      pipeline: [river.preprocessing.StandardScaler, river.linear_model.LogisticRegression]
"""
VW_SPEC = """
name: bench-vw
task: binary
models:
  - name: vw
    vw: {args: "-l 0.5"}
"""


@dataclass
class Round:
    """One round: each in-process loop run right before its service run, so a change in
    the machine's speed between rounds (seen up to 2x within minutes on shared hosts)
    touches both sides of a ratio alike."""

    river_events_per_s: float
    river_inprocess_events_per_s: float
    ratio_river: float
    vw_events_per_s: float
    vw_inprocess_events_per_s: float
    ratio_vw: float
    # CPU µs per event of each process while the service ran (None where unknown): the
    # learner's (its thread and the Kafka client's), its model process's, the broker's;
    # and the in-process loop's, for scale.
    river_cpu_us_per_event: dict[str, float | None]
    vw_cpu_us_per_event: dict[str, float | None]


@dataclass
class LearnerBench(Round):
    """The rounds' medians, with each round's own figures."""

    dataset: str
    events: int
    rounds: list[Round]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_events(dataset: str, n: int) -> list[Event]:
    """`n` events: the dataset cycled, with fresh ids and increasing times."""
    base = list(itertools.islice(dataset_events(dataset, limit=n), n))
    return [
        Event(f"b{i:09d}", e.entity, 1_704_067_200.0 + i, e.data, e.label)
        for i, e in zip(range(n), itertools.cycle(base), strict=False)
    ]


def inprocess_river(spec: PipelineSpec, events: list[Event]) -> float:
    """The loop a River user writes: predict_one then learn_one, per event."""
    model = build_estimator(spec.models[0].config, "models[0].river")
    started = time.perf_counter()
    for e in events:
        model.predict_one(e.data)
        model.learn_one(e.data, e.label)
    return len(events) / (time.perf_counter() - started)


def inprocess_vw(events: list[Event]) -> float:
    """The loop a vowpal-wabbit-next user writes: parse a text line, predict, learn."""
    workspace = vw.Workspace(vw_args("-l 0.5", "binary", None))
    parser = vw.TextFormatParser(workspace)
    started = time.perf_counter()
    for e in events:
        example = parser.parse_line(f"{'1' if e.label else '-1'} {features_text(e.data)}")
        workspace.predict_one(example)
        workspace.learn_one(example)
    return len(events) / (time.perf_counter() - started)


def service_rate(
    spec: PipelineSpec,
    events: list[Event],
    say: Callable[[str], None],
    timeout: float = 600,
    broker_kind: str = "tansu",
    settings: dict[str, Any] | None = None,
) -> tuple[float, dict[str, float | None]]:
    """Events/s of the learner service on a pre-loaded topic, and the CPU µs per event of
    each process meanwhile. `settings` overrides the service's defaults."""
    topics = TopicNames()
    with LocalStack(pipeline_topics(topics, 1), broker=broker_kind) as stack:
        producer = SafeProducer(stack.bootstrap)
        for e in events:
            # the learner alone: it reads what ingest passed (events.valid)
            producer.produce(topics.events_valid, encode(e.to_wire()), e.entity.encode())
        producer.close()
        del producer
        say(f"  {len(events)} events loaded; running the learner service")
        configured = stack.settings(log_format="text", **(settings or {}))
        # as `headwater run learner` builds it: with the checkpoint topic's copy
        with checkpoint_log(configured) as copies:
            rate, cpu = _timed_service(
                build_learner(configured, spec, copies=copies),
                stack,
                n=len(events),
                timeout=timeout,
            )
    return rate, cpu


def _timed_service(
    service: LearnerService, stack: LocalStack, n: int, timeout: float
) -> tuple[float, dict[str, float | None]]:
    events_seen = functools.partial(operator.attrgetter("events_seen"), service)
    broker = stack.broker_pid
    learner = weakref.ref(service)  # the service must go before the stack does
    meter = CpuMeter(
        lambda: {
            "learner": os.getpid(),
            "model_process": getattr(getattr(learner(), "worker", None), "pid", None),
            "broker": broker,
        }
    )
    # The first quarter is warm-up: the ordered merge waits merge_idle_ms for the empty
    # labels topic, then the consumer refetches after that wait's backpressure pause; the
    # steady state comes after.
    rate = timed_rate(service.run, events_seen, service.producer, n, timeout, n // 4, meter)
    del service  # its clients go before the stack does
    return rate, meter.per_event_us


def _cpu_line(cpu: dict[str, float | None], inprocess_rate: float) -> str:
    known = ", ".join(
        f"{name.replace('_', ' ')} {us:.1f}" for name, us in cpu.items() if us is not None
    )
    return f"  CPU µs/event: {known or 'unknown here'} (loop {1e6 / inprocess_rate:.1f})"


def median_cpu(figures: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Per process, the median of the rounds that measured it (None where none did)."""
    out: dict[str, float | None] = {}
    for name in figures[0]:
        known = [us for f in figures if (us := f[name]) is not None]
        out[name] = statistics.median(known) if known else None
    return out


def summarize(dataset: str, n: int, rounds: list[Round]) -> LearnerBench:
    """Medians over the rounds; each ratio is the median of the rounds' own ratios, so
    every ratio compares runs made side by side."""

    def med(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in rounds))

    return LearnerBench(
        med("river_events_per_s"),
        med("river_inprocess_events_per_s"),
        med("ratio_river"),
        med("vw_events_per_s"),
        med("vw_inprocess_events_per_s"),
        med("ratio_vw"),
        median_cpu([r.river_cpu_us_per_event for r in rounds]),
        median_cpu([r.vw_cpu_us_per_event for r in rounds]),
        dataset=dataset,
        events=n,
        rounds=rounds,
    )


def run_round(events: list[Event], dataset: str, say: Callable[[str], None]) -> Round:
    n = len(events)
    river_spec = parse_spec(RIVER_SPEC, "bench")
    say(f"River StandardScaler | LogisticRegression on {dataset}, {n} events")
    river_inprocess = inprocess_river(river_spec, events)
    say(f"  in-process River loop: {river_inprocess:,.0f} events/s")
    river_service, river_cpu = service_rate(river_spec, events, say)
    say(f"  learner service:       {river_service:,.0f} events/s")
    say(_cpu_line(river_cpu, river_inprocess))
    say(f"Vowpal Wabbit (logistic) on {dataset}, {n} events")
    vw_inprocess = inprocess_vw(events)
    say(f"  in-process VW loop:    {vw_inprocess:,.0f} events/s")
    vw_service, vw_cpu = service_rate(parse_spec(VW_SPEC, "bench"), events, say)
    say(f"  learner service:       {vw_service:,.0f} events/s")
    say(_cpu_line(vw_cpu, vw_inprocess))
    return Round(
        river_service,
        river_inprocess,
        river_service / river_inprocess,
        vw_service,
        vw_inprocess,
        vw_service / vw_inprocess,
        river_cpu,
        vw_cpu,
    )


# Long enough for the steady state: at 100,000 events the timed part lasted about a second,
# a single pause weighed on it, and the rounds' ratios spread much wider (see README).
DEFAULT_EVENTS = 300_000


def run_learner_bench(
    dataset: str = "Phishing",
    n: int = DEFAULT_EVENTS,
    say: Callable[[str], None] = print,
    repeat: int = 3,
) -> LearnerBench:
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    events = bench_events(dataset, n)
    rounds = []
    for i in range(repeat):
        if repeat > 1:
            say(f"Round {i + 1} of {repeat}")
        rounds.append(run_round(events, dataset, say))
    result = summarize(dataset, n, rounds)
    if repeat > 1:
        for kind in ("river", "vw"):
            each = ", ".join(f"{getattr(r, f'ratio_{kind}'):.2f}" for r in rounds)
            say(f"ratio_{kind} by round: {each} (median below)")
    return result
