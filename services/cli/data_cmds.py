"""`headwater datasets …`, `headwater replay` and `headwater record`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)
out = Console()

datasets_app = typer.Typer(help="River datasets as recorded streams.", no_args_is_help=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are read as YAML scalars (numbers, booleans, strings)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint="--param")
        params[key] = yaml.safe_load(value)
    return params


@datasets_app.command("list")
def datasets_list() -> None:
    """River datasets that can be exported (bundled and synthetic)."""
    from services.replay.datasets import list_datasets

    table = Table("name", "kind", "task", "samples")
    for d in list_datasets():
        if d.kind != "remote" and not d.task.startswith("Multi-output"):
            size = str(d.n_samples) if d.n_samples else "unbounded (export default 10000)"
            table.add_row(d.name, d.kind, d.task, size)
    out.print(table)


@datasets_app.command("export")
def datasets_export(
    name: Annotated[str, typer.Argument(help="River dataset, e.g. Phishing or SEA.")],
    file: Annotated[Path, typer.Argument(help="Output .jsonl or .jsonl.gz.", dir_okay=False)],
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most N events (synthetic default 10000).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Synthetic stream parameter key=value; repeatable.")
    ] = None,
    start: Annotated[float, typer.Option(help="First event time, UTC epoch s.")] = 1_704_067_200.0,
    interval: Annotated[float, typer.Option(min=0, help="Seconds between events.")] = 1.0,
    entities: Annotated[int, typer.Option(min=1, help="Spread events over N entities.")] = 1,
) -> None:
    """Write a River dataset as a recorded stream with deterministic ids and times."""
    from services.replay.datasets import dataset_events
    from services.replay.recorded import write_events

    events = dataset_events(
        name,
        limit=limit,
        params=parse_params(param or []),
        start=start,
        interval=interval,
        entities=entities,
    )
    count = write_events(file, events)
    out.print(f"wrote {count} events of {name} to {file}", highlight=False)


def replay(
    file: Annotated[Path, typer.Argument(help="Recorded stream (.jsonl or .jsonl.gz).")],
    label_delay: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Move labels to the labels topic, each sent N events after its event. "
            "Without this option labels stay inline.",
        ),
    ] = None,
    speed: Annotated[
        str, typer.Option(help="'max', or a factor of the recorded pace (2 = twice as fast).")
    ] = "max",
) -> None:
    """Send a recorded stream to the events topic (and labels topic)."""
    from services.replay.pacing import Pacer, parse_speed
    from services.replay.replayer import ReplayInterruptedError, replay_file
    from shared.kafka import SafeProducer, require_topics
    from shared.kafka.connection import KafkaConnection
    from shared.settings import load_settings

    try:
        factor = parse_speed(speed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--speed") from None
    settings = load_settings()
    kafka = KafkaConnection.from_settings(settings)
    written = [settings.topics.events, settings.topics.labels]
    try:
        require_topics(kafka, written, written=written)
    except KeyboardInterrupt:  # before anything was queued: say so, as after
        raise ReplayInterruptedError(0) from None
    producer = SafeProducer(kafka)
    with _progress() as progress:
        task = progress.add_task(f"replay {file.name}", total=None)
        result = replay_file(
            file,
            producer,
            settings.topics,
            label_delay=label_delay,
            pacer=Pacer(factor),
            on_validated=lambda total: progress.update(task, total=total),
            on_sent=lambda n: progress.advance(task, n),
        )
    out.print(
        f"sent {result.events} events to {settings.topics.events!r}"
        + (f" and {result.labels} labels to {settings.topics.labels!r}" if result.labels else ""),
        highlight=False,
    )


def record(
    topic: Annotated[str, typer.Argument(help="Topic holding event/v1 records.")],
    file: Annotated[Path, typer.Argument(help="Output .jsonl or .jsonl.gz.", dir_okay=False)],
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after N events.")] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Stop after this many seconds without a new record.")
    ] = 5.0,
) -> None:
    """Write a topic, from its beginning, back to a recorded stream."""
    from services.replay.recorder import record_topic
    from shared.kafka.connection import KafkaConnection
    from shared.settings import load_settings

    settings = load_settings()
    with _progress() as progress:
        task = progress.add_task(f"record {topic}", total=limit)
        result = record_topic(
            KafkaConnection.from_settings(settings),
            topic,
            file,
            limit=limit,
            idle_timeout=timeout,
            on_record=lambda n: progress.advance(task, n),
        )
    out.print(f"wrote {result.written} events from {topic!r} to {file}", highlight=False)
    if result.skipped:
        console.print(f"[yellow]skipped {result.skipped} records that are not events[/]")
