"""`headwater` — one entry point for services, the local stack, data tools and the demo."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from services.cli.data_cmds import datasets_app, record, replay
from services.cli.models_cmds import models_app
from services.cli.rollout_cmds import rollout_app
from shared.logs import configure_logging
from shared.settings import load_settings

app = typer.Typer(
    name="headwater",
    help="Streaming online learning on Kafka with River models checkpointed to Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(rollout_app, name="rollout")
app.command()(replay)
app.command()(record)
console = Console()
err = Console(stderr=True, soft_wrap=True)

SpecOption = Annotated[
    Path, typer.Option("--spec", help="Pipeline spec (YAML).", exists=True, dir_okay=False)
]


class ServiceName(enum.StrEnum):
    ingest = "ingest"
    features = "features"
    learner = "learner"
    monitor = "monitor"
    scorer = "scorer"


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


class BrokerChoice(enum.StrEnum):
    tansu = "tansu"
    kafka = "kafka"


BrokerOption = Annotated[
    BrokerChoice,
    typer.Option(
        help="tansu: the embedded broker, nothing to install; kafka: Apache Kafka (the "
        "reference; needs Java 17+ and Maven, the jars are downloaded once)."
    ),
]


@app.command()
def stack(
    partitions: Annotated[int, typer.Option(min=1, help="Partitions per pipeline topic.")] = 1,
    kafka_port: Annotated[int, typer.Option(help="Broker port (0 = a free one).")] = 0,
    redis_port: Annotated[int, typer.Option(help="Redis port (0 = a free one).")] = 0,
    broker: BrokerOption = BrokerChoice.tansu,
) -> None:
    """Start a broker (Tansu, or Apache Kafka) and a private Redis on loopback until Ctrl-C."""
    from shared.shutdown import stop_on_signals
    from shared.stack import LocalStack
    from shared.stack.local_stack import pipeline_topics

    settings = load_settings()
    topics = pipeline_topics(settings.topics, partitions)
    with LocalStack(
        topics,
        broker=broker.value,
        kafka_port=kafka_port or None,
        redis_port=redis_port or None,
        say=lambda text: console.print(text, highlight=False),
    ) as s:
        console.print(f"Kafka broker ({s.broker_name}): [bold]{s.bootstrap}[/]")
        console.print(f"Redis:                [bold]{s.redis_url}[/]")
        console.print(f"Topics ({partitions} partition(s) each): {', '.join(topics)}")
        console.print("Point services and clients at it with:")
        for key, value in s.env().items():
            console.print(f"  export {key}={value}", highlight=False)
        console.print("Press Ctrl-C to stop.", style="dim")
        with stop_on_signals() as stop:
            while not stop.wait(0.5):
                if s.revive_redis():
                    console.print("Redis had exited: started again from its append-only file")
                for proc in s.processes():
                    if not proc.alive():
                        raise fail(f"{proc.name} exited unexpectedly:\n{proc.log_tail()}")
    console.print("Stack stopped.")


@app.command()
def run(
    service: Annotated[ServiceName, typer.Argument(help="Service to run.")],
    spec: SpecOption,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Start fresh where Redis holds no checkpoint, whatever the checkpoint topic "
            "or the consumer group's offsets say: the inputs are processed again.",
        ),
    ] = False,
) -> None:
    """Run one service against HEADWATER_KAFKA_BOOTSTRAP and HEADWATER_REDIS_URL."""
    import faulthandler
    import signal

    from shared.shutdown import stop_on_signals
    from shared.spec import load_spec

    settings = load_settings(**({"reset_state": True} if reset else {}))
    configure_logging(settings.log_level, settings.log_format)
    # `kill -USR1 PID` writes every thread's stack to stderr: for a service that seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    pipeline = load_spec(spec)
    stop = threading.Event()
    with stop_on_signals(stop):
        if service is ServiceName.learner:
            from services.learner.app import run_learner

            run_learner(settings, pipeline, stop)
        elif service is ServiceName.monitor:
            from services.monitor.app import run_monitor

            run_monitor(settings, pipeline, stop)
        elif service is ServiceName.ingest:
            from services.ingest.app import run_ingest

            run_ingest(settings, pipeline, stop)
        elif service is ServiceName.scorer:
            from services.scorer.app import run_scorer

            run_scorer(settings, pipeline, stop)
        else:
            from services.features.app import run_features

            run_features(settings, pipeline, stop)


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Serve the query API (OpenAPI at /docs) over HEADWATER_REDIS_URL; admin routes need
    HEADWATER_API_TOKEN."""
    from services.api.app import run_api

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    run_api(settings, host, port)


spec_app = typer.Typer(help="Pipeline specs.", no_args_is_help=True)
app.add_typer(spec_app, name="spec")


@spec_app.command("check")
def spec_check(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Validate a pipeline spec and build its models."""
    from shared.spec import load_spec

    pipeline = load_spec(path)
    models = ", ".join(m.name for m in pipeline.models)
    console.print(
        f"{path}: valid — pipeline {pipeline.name!r}, task {pipeline.task}, models {models}"
    )


@app.command()
def demo(
    spec: Annotated[
        Path | None, typer.Option(help="Pipeline spec (default ops/pipelines/phishing.yaml).")
    ] = None,
    dataset: Annotated[
        str, typer.Option(help="A River dataset name or a recorded stream file.")
    ] = "Phishing",
    label_delay: Annotated[
        int | None,
        typer.Option(min=0, help="Send labels on the labels topic, delayed by N events."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for predictions.")] = 150.0,
    broker: BrokerOption = BrokerChoice.tansu,
    port: Annotated[
        int,
        typer.Option(
            min=1, max=65535, help="The pipeline page's port (a free one if it is taken)."
        ),
    ] = 8000,
    report: Annotated[
        Path | None,
        typer.Option(help="Write the pipeline page, as it is at the end, to this HTML file."),
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep the stack and the page up until Ctrl-C.")
    ] = False,
) -> None:
    """Local end-to-end run: stack, learner, replay, and the prequential score from the
    topic; the pipeline page is served while it runs."""
    from services.demo.report import print_summary
    from services.demo.run import DEFAULT_SPEC, run_demo
    from shared.shutdown import interrupt_on_signals

    configure_logging("WARNING", "text")
    with interrupt_on_signals():
        summary = run_demo(
            spec or DEFAULT_SPEC,
            dataset,
            label_delay,
            timeout,
            say=lambda text: console.print(text, highlight=False),
            topics=load_settings().topics,
            broker=broker.value,
            page_port=port,
            report=report,
            serve=serve,
        )
    print_summary(summary, console)


@app.command()
def report(
    pipeline: Annotated[str, typer.Argument(help="Pipeline name.")],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.", dir_okay=False)],
) -> None:
    """Write the pipeline page, with what the services kept in HEADWATER_REDIS_URL, as one
    self-contained HTML file (charts, tables; opens with no server and no network)."""
    from services.api.report import write_report

    size = write_report(load_settings(), pipeline, out)
    console.print(f"Wrote {out} ({size / 1024:,.0f} KiB): pipeline {pipeline}", highlight=False)


bench_app = typer.Typer(help="Benchmarks, as ratios against a baseline in the same run.")
app.add_typer(bench_app, name="bench")


def _bench(as_json: bool, run: Callable[[Callable[[str], None]], Any], ratios: list[str]) -> None:
    """Progress lines and the ratios for people, or one JSON object for scripts."""
    import json

    configure_logging("WARNING", "text")
    say = (lambda _text: None) if as_json else (lambda text: console.print(text, highlight=False))
    result = run(say)
    figures = result.as_dict()
    if as_json:
        print(json.dumps(figures))
        return
    for name in ratios:
        if figures.get(name) is not None:
            console.print(f"{name}: {figures[name]:.2f}", highlight=False)
    for name, target in (figures.get("targets") or {}).items():
        value = target["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        mark = "met   " if target["met"] else "MISSED"
        console.print(f"{mark} {name}: {shown} (target {target['target']})", highlight=False)


@bench_app.command("ingest")
def bench_ingest(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    events: Annotated[int, typer.Option(min=1000, help="Events in the stream.")] = 200_000,
) -> None:
    """The ingest service against a raw consume + decode of the same topic, same run."""
    from services.bench.ingest_bench import run_ingest_bench

    _bench(as_json, lambda say: run_ingest_bench(events, say), ["ratio"])


# the stream's default is learner_bench.DEFAULT_EVENTS (not imported here: no work at import)
@bench_app.command("learner")
def bench_learner(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    dataset: Annotated[str, typer.Option(help="River dataset to cycle through.")] = "Phishing",
    events: Annotated[int, typer.Option(min=1000, help="Events in the stream.")] = 300_000,
    repeat: Annotated[
        int,
        typer.Option(
            min=1,
            max=20,
            help="Rounds, each loop right before its service run; the medians are reported.",
        ),
    ] = 3,
) -> None:
    """The learner service against the in-process River and VW loops on the same stream."""
    from services.bench.learner_bench import run_learner_bench

    _bench(
        as_json,
        lambda say: run_learner_bench(dataset, events, say, repeat),
        ["ratio_river", "ratio_vw"],
    )


@bench_app.command("serving")
def bench_serving(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    events: Annotated[int, typer.Option(min=10_000, help="Events in the stream.")] = 200_000,
    repeat: Annotated[int, typer.Option(min=1, max=20, help="Rounds; medians reported.")] = 3,
) -> None:
    """1 and 2 scorer replicas, and an in-process River predict_one loop, on one stream."""
    from services.bench.serving_bench import run_serving_bench

    _bench(
        as_json, lambda say: run_serving_bench(events, say, repeat), ["ratio_replicas", "ratio_cpu"]
    )


@bench_app.command("peer")
def bench_peer(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    events: Annotated[int, typer.Option(min=10_000, help="Events in the stream.")] = 300_000,
    broker: BrokerOption = BrokerChoice.tansu,
) -> None:
    """The learner against a Quix Streams app doing the same test-then-train (needs
    `make setup-bench-peer`)."""
    from services.bench.peer_bench import PeerBenchError, run_peer_bench

    try:
        _bench(as_json, lambda say: run_peer_bench(events, broker.value, say), [])
    except PeerBenchError as exc:
        raise fail(str(exc)) from None


@bench_app.command("pipeline")
def bench_pipeline(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    broker: BrokerOption = BrokerChoice.tansu,
    events: Annotated[
        int, typer.Option(min=10_000, help="Events in the throughput stream.")
    ] = 200_000,
    latency_seconds: Annotated[
        float, typer.Option(min=5, help="Seconds of each paced latency run.")
    ] = 60.0,
    checkpoint_events: Annotated[
        int, typer.Option(min=10_000, help="Events in each checkpoint-overhead run.")
    ] = 900_000,
    repeat: Annotated[int, typer.Option(min=1, help="Checkpoint-overhead rounds.")] = 3,
    peer_events: Annotated[
        int, typer.Option(min=10_000, help="Events in the Quix peer comparison.")
    ] = 300_000,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG chart of latencies and throughputs here.")
    ] = None,
) -> None:
    """Whole pipeline: throughput, latency, the Quix Streams peer, checkpoint overhead and
    failover (needs `make setup-bench-peer`)."""
    from services.bench.peer_bench import PeerBenchError
    from services.bench.pipeline_bench import PipelineBenchError, run_pipeline_bench

    try:
        _bench(
            as_json,
            lambda say: run_pipeline_bench(
                events,
                broker.value,
                latency_seconds,
                checkpoint_events,
                repeat,
                say,
                plot,
                peer_events,
            ),
            [],
        )
    except (PeerBenchError, PipelineBenchError) as exc:
        raise fail(str(exc)) from None


@bench_app.command("drift")
def bench_drift(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    drift_events: Annotated[
        int, typer.Option(min=2000, help="Events in each drifting stream (drift in the middle).")
    ] = 20_000,
    stationary_events: Annotated[
        int, typer.Option(min=1000, help="Events in the stationary stream.")
    ] = 100_000,
    detector: Annotated[
        list[str] | None,
        typer.Option(help="A river.drift detector by dotted name (repeat; default: six of them)."),
    ] = None,
) -> None:
    """Drift detectors through the whole pipeline against the same detectors in-process."""
    from services.bench.drift_bench import DETECTORS, DriftBenchError, run_drift_bench
    from shared.spec import SpecError

    chosen = tuple(detector) if detector else DETECTORS
    try:
        _bench(
            as_json,
            lambda say: run_drift_bench(drift_events, stationary_events, chosen, say=say),
            [],
        )
    except (SpecError, DriftBenchError) as exc:
        raise fail(str(exc)) from None


@bench_app.command("features")
def bench_features(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    events: Annotated[int, typer.Option(min=1000, help="Events in the stream.")] = 100_000,
    entities: Annotated[int, typer.Option(min=1, help="Distinct entities.")] = 10_000,
) -> None:
    """The features service against faust-streaming and Bytewax doing the same, same run."""
    from services.bench.features_bench import run_features_bench

    _bench(
        as_json,
        lambda say: run_features_bench(events, entities, say),
        ["ratio_vs_bytewax", "ratio_vs_faust"],
    )


@bench_app.command("api")
def bench_api(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    source: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="The checkout whose API is measured (the API process runs there); "
            "default: this one.",
        ),
    ] = None,
    requests: Annotated[int, typer.Option(min=100, help="Requests in each case.")] = 2000,
    clients: Annotated[
        int, typer.Option(min=2, help="Concurrent clients of the second case.")
    ] = 20,
    hostile_fields: Annotated[
        int, typer.Option(min=1000, help="Fields in each hostile predict body.")
    ] = 3_300_000,
    hostile_bodies: Annotated[int, typer.Option(min=1, help="Hostile bodies sent at once.")] = 4,
    parsed_phase: Annotated[
        bool,
        typer.Option(
            "--parsed-phase/--no-parsed-phase",
            help="Also send the hostile bodies with the body limit raised above their size.",
        ),
    ] = True,
) -> None:
    """The query API in a process of its own: the model-state route's latency from 1 and 20
    clients, and /healthz and memory under hostile predict bodies."""
    from services.bench.api_bench import run_api_bench

    _bench(
        as_json,
        lambda say: run_api_bench(
            source or Path(__file__).resolve().parents[2],
            requests,
            clients,
            hostile_fields,
            hostile_bodies,
            parsed_phase,
            say=say,
        ),
        [],
    )


def main() -> None:
    """Console-script entry point: expected errors print one clear line, not a traceback."""
    from services.api.report import ReportError
    from services.demo.run import DemoError
    from services.features.app import FeaturesConfigError
    from services.ingest.app import IngestConfigError
    from services.ingest.service import IngestDefectError
    from services.learner.checkpointing import SpecMismatchError
    from services.learner.worker import WorkerError
    from services.replay.datasets import DatasetError
    from services.replay.recorded import RecordedStreamError
    from services.replay.replayer import ReplayInterruptedError
    from shared.checkpoint.codec import CheckpointFormatError, CheckpointTamperedError
    from shared.checkpoint.log import CheckpointLogError
    from shared.checkpoint.store import CheckpointLostError, CheckpointNotFoundError
    from shared.kafka import DeliveryError, TopicError
    from shared.kafka.connection import KafkaSettingsError
    from shared.kafka.consumer import ConsumerConfigError
    from shared.redis_store import RedisUnavailableError
    from shared.runtime.ownership import FencedError, FreshStartRefusedError
    from shared.settings import SettingsError
    from shared.snapshot import NoSnapshotError
    from shared.spec import SpecError
    from shared.stack import StackError
    from shared.stack.binaries import BinaryNotFoundError

    expected = (
        SpecError,
        RecordedStreamError,
        DatasetError,
        DemoError,
        ReportError,
        DeliveryError,
        TopicError,
        ConsumerConfigError,
        KafkaSettingsError,
        RedisUnavailableError,
        StackError,
        BinaryNotFoundError,
        SettingsError,
        FeaturesConfigError,
        IngestConfigError,
        IngestDefectError,  # its tracebacks are in the log, one per record
        FencedError,
        FreshStartRefusedError,
        NoSnapshotError,  # a pinned version that is not kept
        CheckpointLogError,
        SpecMismatchError,
        WorkerError,  # the model process died: restart, it resumes from the checkpoint
        CheckpointTamperedError,
        CheckpointFormatError,
        CheckpointNotFoundError,
        CheckpointLostError,
        OSError,  # files: missing folder, no permission, disk full
    )
    import redis

    try:
        app()
    except redis.RedisError as exc:
        err.print(f"[bold red]error:[/] Redis: {exc}", highlight=False)
        raise SystemExit(1) from None
    except expected as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise SystemExit(1) from None
    except ReplayInterruptedError as exc:
        err.print(str(exc), highlight=False)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
