"""The learner bench's summary of several rounds: medians, ratios paired within a round."""

import pytest

from services.bench.learner_bench import Round, median_cpu, summarize


def a_round(river: float, river_loop: float, vw: float, vw_loop: float, learner: float) -> Round:
    cpu = {"learner": learner, "model_process": None, "broker": 3.0}
    return Round(river, river_loop, river / river_loop, vw, vw_loop, vw / vw_loop, cpu, cpu)


def test_each_ratio_is_the_median_of_the_rounds_own_ratios():
    # the machine halves its speed in round 2: both sides of that round's ratios move
    rounds = [
        a_round(60.0, 100.0, 70.0, 140.0, 10.0),
        a_round(30.0, 50.0, 30.0, 70.0, 20.0),
        a_round(50.0, 100.0, 84.0, 140.0, 12.0),
    ]
    result = summarize("Phishing", 1000, rounds)
    assert result.ratio_river == pytest.approx(0.6)  # of 0.6, 0.6, 0.5
    assert result.ratio_vw == pytest.approx(0.5)  # of 0.5, 0.43, 0.6
    assert result.river_events_per_s == 50.0
    assert result.vw_inprocess_events_per_s == 140.0
    assert result.river_cpu_us_per_event == {"learner": 12.0, "model_process": None, "broker": 3.0}
    assert result.as_dict()["rounds"][1]["ratio_river"] == pytest.approx(0.6)


def test_cpu_medians_skip_rounds_that_could_not_measure_a_process():
    figures = [{"learner": 10.0, "broker": None}, {"learner": None, "broker": None}]
    assert median_cpu(figures) == {"learner": 10.0, "broker": None}


def test_the_cli_runs_the_bench_on_its_default_stream():
    import inspect

    from services.bench.learner_bench import DEFAULT_EVENTS
    from services.cli.main import bench_learner

    assert inspect.signature(bench_learner).parameters["events"].default == DEFAULT_EVENTS
