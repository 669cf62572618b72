"""The demo's summary, printed with rich; the champion's metric lines stay in River's format."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from services.demo.run import DemoSummary


def print_summary(summary: DemoSummary, console: Console) -> None:
    table = Table(title=f"Pipeline {summary.pipeline} on {summary.dataset}", show_header=True)
    table.add_column("model")
    table.add_column("predictions", justify="right")
    table.add_column("metrics")
    for m in summary.models:
        star = " (champion)" if m.name == summary.champion else ""
        table.add_row(m.name + star, str(m.predictions), ", ".join(str(x) for x in m.metrics))
    console.print(table)
    console.print(f"Events:      {summary.events}", highlight=False)
    if summary.labels_on_topic:
        console.print(
            f"Labels sent on the labels topic: {summary.labels_on_topic}", highlight=False
        )
    console.print(
        f"Predictions: {summary.predictions} (read back from the predictions topic)",
        highlight=False,
    )
    console.print(
        f"Throughput:  {summary.events_per_s:,.0f} events/s end to end "
        f"({summary.seconds:.2f} s from first send to last prediction)",
        highlight=False,
    )
    champion = next(m for m in summary.models if m.name == summary.champion)
    console.print(f"Champion {champion.name}, prequential (test-then-train):", highlight=False)
    for metric in champion.metrics:
        console.print(str(metric), highlight=False)
