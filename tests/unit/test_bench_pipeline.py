"""The pipeline bench's pure parts: latency percentiles and the targets' verdicts."""

import pytest

from services.bench.latency import Latency, percentile, summarize
from services.bench.peer_bench import PeerBench, PeerRun
from services.bench.pipeline_bench import Checkpointing, PipelineBench, Throughput, judge


def test_percentile_is_the_nearest_rank():
    ordered = [float(i) for i in range(1, 1001)]  # 1..1000
    assert percentile(ordered, 0.5) == 500.0
    assert percentile(ordered, 0.99) == 990.0
    assert percentile(ordered, 0.999) == 999.0
    assert percentile(ordered, 1.0) == 1000.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 0.5)


def test_summarize_reports_milliseconds_in_any_arrival_order():
    seconds = [i / 1000 for i in range(1000, 0, -1)]  # 1 ms .. 1000 ms, reversed
    result = summarize(seconds, missing=3, rate=999.0)
    assert (result.events, result.missing, result.rate_per_s) == (1000, 3, 999.0)
    assert result.p50_ms == pytest.approx(500.0)
    assert result.p99_ms == pytest.approx(990.0)
    assert result.p999_ms == pytest.approx(999.0)
    assert result.max_ms == pytest.approx(1000.0)
    assert len(result.percentiles_ms) == 99
    assert result.percentiles_ms == sorted(result.percentiles_ms)


def latency(p99: float) -> Latency:
    return Latency(1000, 0, 1000.0, p99 / 2, p99, p99, p99, [p99] * 99)


def bench(
    *,
    ratio: float = 0.35,
    learner_p99: float = 30.0,
    pipeline_p99: float = 70.0,
    learner_rate: float = 80_000.0,
    overhead: float = 0.02,
    failover: float = 7.0,
    learner_cpu: float = 20.0,
) -> PipelineBench:
    peers = {
        "at-least-once": PeerRun(40_000.0, 22.0, 2.0),
        "exactly-once": PeerRun(40_000.0, 24.0, 3.0),
    }
    peer = PeerBench(
        300_000,
        "tansu",
        learner_rate,
        {"learner": learner_cpu / 2, "model_process": learner_cpu / 2, "broker": None},
        peers,
        {g: learner_rate / p.events_per_s for g, p in peers.items()},
    )
    return PipelineBench(
        "tansu",
        200_000,
        10_000,
        Throughput(ratio * 100_000, 100_000.0, ratio, {}),
        {
            "raw_hop": latency(10.0),
            "learner": latency(learner_p99),
            "pipeline": latency(pipeline_p99),
        },
        peer,
        Checkpointing(900_000, 98.0, 100.0, overhead, [(98.0, 100.0)]),
        failover,
    )


def test_every_target_is_met_by_a_result_within_them():
    verdicts = judge(bench())
    assert all(v["met"] for v in verdicts.values()), verdicts
    assert verdicts["learner_over_quix_at_least_once"]["value"] == pytest.approx(2.0)
    assert verdicts["cpu_over_quix_at_least_once"]["value"] == pytest.approx(20.0 / 24.0)


@pytest.mark.parametrize(
    ("change", "missed"),
    [
        ({"ratio": 0.29}, ["pipeline_over_inprocess"]),
        ({"learner_p99": 41.0}, ["learner_p99_over_raw_hop"]),
        ({"pipeline_p99": 81.0}, ["pipeline_p99_over_raw_hop"]),
        (
            {"learner_rate": 59_000.0},
            ["learner_over_quix_at_least_once", "learner_over_quix_exactly_once"],
        ),
        ({"learner_rate": 71_000.0}, ["learner_over_quix_exactly_once"]),
        ({"overhead": 0.051}, ["checkpoint_overhead"]),
        ({"failover": 10.5}, ["failover_s"]),
        ({"learner_cpu": 25.0}, ["cpu_over_quix_at_least_once"]),
    ],
)
def test_each_target_is_missed_by_the_figure_beyond_it(change, missed):
    verdicts = judge(bench(**change))
    assert [name for name, v in verdicts.items() if not v["met"]] == missed
