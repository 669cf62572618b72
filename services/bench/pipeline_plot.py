"""The chart of `headwater bench pipeline --plot FILE`: each run's latency distribution
beside the throughputs, one PNG for the README."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.bench.pipeline_bench import PipelineBench


def plot_pipeline(result: PipelineBench, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    quantiles = [q / 100 for q in range(1, 100)]
    for name, latency in result.latency.items():
        left.plot(
            latency.percentiles_ms,
            quantiles,
            label=f"{name} (p99 {latency.p99_ms:.1f} ms)",
        )
    left.set_xscale("log")
    left.set_xlabel("event produced → output seen (ms, log scale)")
    left.set_ylabel("fraction of events")
    left.set_title(f"Latency at {result.latency['raw_hop'].rate_per_s:,.0f} events/s")
    left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)

    peer = result.peer
    bars = {
        "in-process\nRiver loop": result.throughput.inprocess_events_per_s,
        "pipeline\n(3 services)": result.throughput.events_per_s,
        "learner": peer.learner_events_per_s,
        **{f"Quix\n{g}": run.events_per_s for g, run in peer.peers.items()},
    }
    right.bar(list(bars), [v / 1000 for v in bars.values()], color="#4c72b0")
    for i, value in enumerate(bars.values()):
        right.annotate(f"{value / 1000:.1f}k", (i, value / 1000), ha="center", va="bottom")
    right.set_ylabel("thousand events/s")
    right.set_title(f"Throughput ({result.broker})")
    right.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
