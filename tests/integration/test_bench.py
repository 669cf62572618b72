import json

import pytest

from .conftest import headwater


def test_bench_learner_json_reports_each_loop_and_its_ratio():
    # enough events for the CPU figures (clock ticks of 10 ms) to count something
    result = headwater(
        "bench", "learner", "--json", "--events", "12000", "--repeat", "2", timeout=300
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert len(figures["rounds"]) == 2
    for kind in ("river", "vw"):
        assert figures[f"{kind}_events_per_s"] > 0
        assert figures[f"{kind}_inprocess_events_per_s"] > 0
        ratios = []
        for r in figures["rounds"]:
            assert (
                r[f"ratio_{kind}"]
                == r[f"{kind}_events_per_s"] / r[f"{kind}_inprocess_events_per_s"]
            )
            ratios.append(r[f"ratio_{kind}"])
        assert figures[f"ratio_{kind}"] == pytest.approx(sum(ratios) / 2)  # the median of two
        cpu = figures[f"{kind}_cpu_us_per_event"]
        assert set(cpu) == {"learner", "model_process", "broker"}
        known = [us for us in cpu.values() if us is not None]  # read from /proc (Linux)
        assert len(known) >= 2  # the model process's is null when it is off
        assert all(us >= 0 for us in known)
        assert sum(known) > 0
    assert figures["events"] == 12000


def test_bench_features_json_reports_the_service_bytewax_and_faust():
    result = headwater(
        "bench", "features", "--json", "--events", "3000", "--entities", "100", timeout=300
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["features_events_per_s"] > 0
    assert figures["bytewax_events_per_s"] > 0
    assert (
        figures["ratio_vs_bytewax"]
        == figures["features_events_per_s"] / figures["bytewax_events_per_s"]
    )
    assert figures["faust_events_per_s"] > 0
    assert figures["faust_events"] == 3000
    assert (
        figures["ratio_vs_faust"]
        == figures["features_events_per_s"] / figures["faust_events_per_s"]
    )


def test_bench_ingest_json_reports_the_service_and_the_raw_loop():
    result = headwater("bench", "ingest", "--json", "--events", "5000", timeout=300)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["events"] == 5000
    assert figures["ingest_events_per_s"] > 0
    assert figures["raw_events_per_s"] > 0
    assert figures["ratio"] == figures["ingest_events_per_s"] / figures["raw_events_per_s"]
    assert figures["duplicates"] > 0
    assert figures["invalid"] > 0


def test_bench_drift_json_reports_each_detector_and_agrees_with_in_process():
    result = headwater(
        "bench", "drift", "--json", "--drift-events", "8000", "--stationary-events", "4000",
        "--detector", "river.drift.ADWIN", "--detector", "river.drift.binary.DDM",
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    entries = figures["detectors"]
    assert sorted((e["name"], e["stream"]) for e in entries) == sorted(
        (name, stream)
        for name in ("ADWIN", "DDM")
        for stream in ("sea-abrupt", "sea-gradual", "agrawal-abrupt", "sea-stationary")
    )
    for e in entries:
        assert e["matches_inprocess"] is True, e
        assert e["false_alarms_per_100k"] >= 0
        if e["drift_kind"] == "none":
            assert (e["missed"], e["delay_events"]) == (0, None)
        else:
            assert e["missed"] in (0, 1)
    # deterministic streams and learner: these two are found (at 31 and 326 events after)
    for name, stream in (("ADWIN", "agrawal-abrupt"), ("DDM", "sea-abrupt")):
        found = next(e for e in entries if (e["name"], e["stream"]) == (name, stream))
        assert found["alerts"] >= 1  # the in-process agreement compared real alerts
        assert found["missed"] == 0
        assert 0 <= found["delay_events"] < 1000
    assert [s["name"] for s in figures["streams"]] == [
        "sea-abrupt", "sea-gradual", "agrawal-abrupt", "sea-stationary",
    ]  # fmt: skip


def test_bench_drift_refuses_an_unknown_detector_before_streaming():
    result = headwater("bench", "drift", "--detector", "river.drift.Nope", timeout=60)
    assert result.returncode == 1
    assert "river.drift.Nope does not exist" in result.stderr


def test_bench_api_json_reports_each_phase_and_the_targets():
    result = headwater(
        "bench", "api", "--json", "--requests", "200", "--clients", "4",
        "--hostile-fields", "100000", "--hostile-bodies", "2",
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for case in ("one_client", "many_clients", "pipelines_one_client"):
        assert figures[case]["errors"] == 0
        assert 0 < figures[case]["p50_ms"] <= figures[case]["p99_ms"] <= figures[case]["max_ms"]
        assert figures[case]["requests_per_s"] > 0
    assert figures["one_client"]["requests"] == figures["many_clients"]["requests"] == 200
    assert figures["clients"] == 4
    refused, parsed = figures["hostile"], figures["hostile_parsed"]
    assert refused["body_bytes"] > refused["max_body_bytes"]  # 1.3 MB over 1 MiB
    assert refused["statuses"] == [413, 413]
    assert parsed["max_body_bytes"] > parsed["body_bytes"]
    assert parsed["statuses"] == [422, 422]  # read, and refused: too many fields
    for phase in (refused, parsed):
        assert phase["healthz_probes"] > 0
        assert phase["healthz_failures"] == 0
        assert phase["vm_hwm_mb"] > 0
    assert set(figures["targets"]) == {
        "one_client_p99_ms", "many_clients_p99_ms", "hostile_rss_mb",
        "hostile_healthz_max_ms", "hostile_413",
    }  # fmt: skip
    assert figures["targets"]["hostile_413"]["met"] is True


@pytest.mark.timeout(700, method="thread")
def test_bench_pipeline_json_reports_every_part_and_its_targets(tmp_path):
    """Tiny sizes: the parts run and report, not the figures (those need the defaults)."""
    chart = tmp_path / "pipeline.png"
    result = headwater(
        "bench", "pipeline", "--json", "--events", "10000", "--latency-seconds", "5",
        "--peer-events", "10000", "--checkpoint-events", "10000", "--repeat", "1",
        "--plot", str(chart), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    throughput = figures["throughput"]
    assert throughput["ratio"] == throughput["events_per_s"] / throughput["inprocess_events_per_s"]
    assert set(throughput["cpu_us_per_event"]) == {
        "ingest", "features", "learner", "model_process", "broker", "redis",
    }  # fmt: skip
    assert set(figures["latency"]) == {
        "raw_hop", "learner", "pipeline", "quix at-least-once", "quix exactly-once",
    }  # fmt: skip
    for run in figures["latency"].values():
        assert (run["events"], run["missing"]) == (5000, 0)
        assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["p999_ms"] <= run["max_ms"]
        assert len(run["percentiles_ms"]) == 99
    peer = figures["peer"]
    assert set(peer["peers"]) == {"at-least-once", "exactly-once"}
    for guarantee, run in peer["peers"].items():
        assert run["events_per_s"] > 0
        assert peer["ratios"][guarantee] == peer["learner_events_per_s"] / run["events_per_s"]
    assert len(figures["checkpointing"]["rounds"]) == 1
    assert 0 < figures["failover_s"] < 60  # the lease lapses after 5 s, then a restore
    assert len(figures["targets"]) == 9
    assert all(isinstance(t["met"], bool) for t in figures["targets"].values())
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000
