"""The pipeline page and the report in a real headless Chromium (Debian's, driven by
Playwright): after SEA with a concept drift goes through the learner and the drift
monitor, the page shows every model, one point series per model, a drift marker near the
drift; the rollback button without a token is refused; the report opens with no network
and plots the learner's own series. And the series behind them: a learner stopped midway
and started again from its checkpoint keeps the same one as a learner that never stopped."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid

import pytest

from services.launch import start_service
from shared.alert_store import AlertStore
from shared.kafka import ensure_topics
from shared.keys import PipelineKeys
from shared.redis_store import redis_client
from shared.settings import TopicNames
from shared.stack.local_stack import pipeline_topics
from shared.stack.processes import ManagedProcess, free_port, wait_for_port

from .conftest import ROOT, headwater
from .test_kafka_broker import fresh_pipeline, stop_all, wait
from .test_rollout import DRIFT_AT, PIPELINE, SPEC, env_of, produce, sea_events, wait_learned

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600, method="thread")]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "page-token"
SCREENSHOT = ROOT / "docs" / "pipeline-page.png"
MODELS = ["tree", "retrained"]
AT_LABELS = "ms => ms.map(m => +m.dataset.labels)"  # where each marker is on the stream


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail(
            "no chromium on PATH: `make test` installs Debian's (ops/install-test-tools.sh)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def plotted(page, chart: str) -> dict[str, list[tuple[int, float]]]:
    """The points of each series in a chart, as the SVG carries them."""
    return page.eval_on_selector_all(
        f'figure.chart[data-metric="{chart}"] g.series',
        """gs => Object.fromEntries(gs.map(g => [g.dataset.model,
            [...g.querySelectorAll('circle')].map(c => [+c.dataset.labels, +c.dataset.value])]))""",
    )


def learner_series(settings, metric: str) -> dict[str, list[tuple[int, float]]]:
    raw = redis_client(settings).get(PipelineKeys(PIPELINE).learner_history)
    points = json.loads(raw)["points"]
    return {m: [[p["labels"], p["values"][m][metric]] for p in points] for m in MODELS}


def test_the_page_and_the_report_show_each_model_and_the_drift(stack, browser, tmp_path):
    settings = fresh_pipeline(stack, "page")
    events = sea_events()
    produce(settings, events)
    env = {**env_of(settings), "HEADWATER_API_TOKEN": TOKEN}
    procs = {name: start_service(name, SPEC, env) for name in ("learner", "monitor")}
    port = free_port()
    procs["api"] = ManagedProcess(
        "api", [sys.executable, "-m", "services.cli.main", "api", "--port", str(port)], env=env
    )
    try:
        wait_learned(settings, len(events), procs)
        alerts = AlertStore(redis_client(settings), PIPELINE)
        wait(lambda: bool(alerts.latest(10)), "a drift alert from the monitor", procs, 120)
        assert wait_for_port(port, 30)

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/ui")
        page.wait_for_selector("figure.chart g.series circle", timeout=30_000)
        rows = page.eval_on_selector_all(
            "table.models tbody tr", "rs => rs.map(r => r.dataset.model)"
        )
        assert sorted(rows) == sorted(MODELS)
        charts = page.eval_on_selector_all("figure.chart", "fs => fs.map(f => f.dataset.metric)")
        assert charts, "no chart"
        for chart in charts:
            assert sorted(plotted(page, chart)) == sorted(MODELS), chart
            # its text alternative: a table of the plotted values, a row per point
            table_rows = page.locator(
                f'figure.chart[data-metric="{chart}"] table.chart-data tbody tr'
            )
            assert table_rows.count() == max(len(s) for s in plotted(page, chart).values())
        drifts = page.eval_on_selector_all("g.marker.drift", AT_LABELS)
        print("drift markers at labels:", drifts)
        assert any(DRIFT_AT <= at <= DRIFT_AT + 3_000 for at in drifts), drifts
        shot = page.screenshot(full_page=True, path=str(tmp_path / "page.png"))
        assert len(shot) > 50_000, len(shot)  # a page drawn, not a blank one
        if os.environ.get("HEADWATER_UPDATE_SCREENSHOT"):
            # the README's: the tables and the first chart
            page.screenshot(
                path=str(SCREENSHOT),
                full_page=True,
                clip={"x": 0, "y": 0, "width": 1280, "height": 1110},
            )
        # an admin action without the token: refused, and the page says so
        page.locator("button.rollback").first.click()
        refused = page.wait_for_selector(".admin-result.refused", timeout=10_000)
        assert "401" in refused.text_content()
        live_curve = plotted(page, charts[0])
        # a service gone: the page says so where its part was, and keeps what it knows
        assert procs["learner"].stop(30) == 0
        gone = page.wait_for_selector("text=The learner is not running", timeout=15_000)
        assert gone.is_visible()
        assert procs["api"].stop(30) == 0
        down = page.wait_for_selector(".notice.error", timeout=15_000)
        assert "The API could not be read" in down.text_content()
        page.close()

        out = tmp_path / "report.html"
        done = headwater("report", PIPELINE, "--out", str(out), env=env)
        assert done.returncode == 0, done.stderr
        context = browser.new_context(offline=True)
        asked: list[str] = []
        context.route(
            "**/*",
            lambda r: (
                r.continue_()
                if r.request.url.startswith("file:")
                else (asked.append(r.request.url), r.abort())
            ),
        )
        report = context.new_page()
        report.goto(out.as_uri())
        report.wait_for_selector("figure.chart g.series circle", timeout=10_000)
        assert asked == []  # nothing but the file
        for chart in charts:
            assert plotted(report, chart) == learner_series(settings, chart), chart
        assert plotted(report, charts[0]) == live_curve  # the learner has stopped learning
        marked = report.eval_on_selector_all(
            "g.marker.drift", "ms => ms.map(m => +m.dataset.labels)"
        )
        assert any(DRIFT_AT <= at <= DRIFT_AT + 3_000 for at in marked), marked
        context.close()
    finally:
        codes = stop_all(procs, tmp_path / "logs")
    assert codes == {"learner": 0, "monitor": 0, "api": 0}


def one_partition(stack, run: str):
    """A fresh pipeline on topics of one partition: the learner reads the stream in one
    order on every run."""
    prefix = f"series-{run}-{uuid.uuid4().hex[:6]}"
    topics = TopicNames(**{f: f"{prefix}.{f}" for f in TopicNames.model_fields})
    ensure_topics(stack.bootstrap, pipeline_topics(topics, 1))
    redis_client(stack.settings()).flushdb()
    return stack.settings(topics=topics, consumer_group_prefix=prefix, log_format="text")


def learn(settings, events, upto: int, logs) -> None:
    """Produce `events`, run the learner until it has learned `upto` labels, stop it (its
    last checkpoint is written on the way out)."""
    produce(settings, events)
    env = {**env_of(settings), "HEADWATER_HISTORY_EVERY": "500"}
    procs = {"learner": start_service("learner", SPEC, env)}
    try:
        wait_learned(settings, upto, procs)
    finally:
        codes = stop_all(procs, logs)
    assert codes == {"learner": 0}


def series(settings) -> list[dict]:
    """The learner's series, less the wall clock of each point."""
    raw = redis_client(settings).get(PipelineKeys(PIPELINE).learner_history)
    return [{k: v for k, v in p.items() if k != "at"} for p in json.loads(raw)["points"]]


def test_a_restart_from_the_checkpoint_keeps_the_series_of_an_unbroken_run(stack, tmp_path):
    events = sea_events(6_000)
    unbroken = one_partition(stack, "a")
    learn(unbroken, events, 6_000, tmp_path / "a")
    expected = series(unbroken)
    assert [p["labels"] for p in expected] == list(range(500, 6_001, 500))

    restarted = one_partition(stack, "b")
    learn(restarted, events[:2_750], 2_750, tmp_path / "b1")
    assert series(restarted) == expected[:5]
    learn(restarted, events[2_750:], 6_000, tmp_path / "b2")
    assert series(restarted) == expected
