import os
import signal
import subprocess
import sys
import time

from services.replay.datasets import dataset_events
from services.replay.recorded import read_events, write_events

from .conftest import ROOT, headwater, service_env
from .helpers import count_now, read_topic


def test_record_after_replay_reproduces_the_input(settings, tmp_path):
    source = tmp_path / "sea.jsonl.gz"
    write_events(source, dataset_events("SEA", limit=3000, entities=7))
    env = service_env(settings)
    replayed = headwater("replay", str(source), env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert "sent 3000 events" in replayed.stdout
    out = tmp_path / "recorded.jsonl"
    recorded = headwater("record", settings.topics.events, str(out), "--timeout", "2", env=env)
    assert recorded.returncode == 0, recorded.stderr
    assert "wrote 3000 events" in recorded.stdout
    assert list(read_events(out)) == list(read_events(source))
    limited = headwater(
        "record", settings.topics.events, str(tmp_path / "ten.jsonl"), "--limit", "10", env=env
    )
    assert limited.returncode == 0, limited.stderr
    assert list(read_events(tmp_path / "ten.jsonl")) == list(read_events(source))[:10]


def test_malformed_line_stops_replay_before_anything_is_sent(settings, tmp_path):
    source = tmp_path / "broken.jsonl"
    write_events(source, dataset_events("Phishing", limit=20))
    lines = source.read_text().splitlines()
    lines[12] = lines[12].replace('"ts":', '"ts":"soon","x":')
    source.write_text("\n".join(lines) + "\n")
    result = headwater("replay", str(source), env=service_env(settings))
    assert result.returncode == 1
    assert f"{source}:13:" in result.stderr
    assert "Traceback" not in result.stderr
    assert count_now(settings.kafka_bootstrap, settings.topics.events) == 0


def test_label_delay_moves_labels_to_the_labels_topic(settings, tmp_path):
    source = tmp_path / "p.jsonl"
    write_events(source, dataset_events("Phishing", limit=30))
    result = headwater(
        "replay", str(source), "--label-delay", "10", "--speed", "max", env=service_env(settings)
    )
    assert result.returncode == 0, result.stderr
    assert "sent 30 events" in result.stdout
    assert "30 labels" in result.stdout
    events = read_topic(settings.kafka_bootstrap, settings.topics.events, 30)
    labels = read_topic(settings.kafka_bootstrap, settings.topics.labels, 30)
    assert all("label" not in e for e in events)
    assert labels[0]["event_id"] == "phishing-00000000"
    assert labels[0]["ts"] == events[10]["ts"]


def test_paced_replay_follows_recorded_time(settings, tmp_path):
    source = tmp_path / "p.jsonl"
    write_events(source, dataset_events("Phishing", limit=11, interval=0.1))
    started = time.monotonic()
    result = headwater("replay", str(source), "--speed", "2", env=service_env(settings))
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 0.5  # 1 s of event time at twice the pace


def test_replay_refuses_a_missing_topic_clearly(settings, tmp_path):
    source = tmp_path / "p.jsonl"
    write_events(source, dataset_events("Phishing", limit=2))
    env = {**service_env(settings), "HEADWATER_TOPICS__EVENTS": "no-such-topic"}
    result = headwater("replay", str(source), env=env)
    assert result.returncode == 1
    assert "do not exist" in result.stderr


def test_ctrl_c_during_replay_delivers_what_was_queued_and_says_how_much(settings, tmp_path):
    source = tmp_path / "slow.jsonl"
    write_events(source, dataset_events("Phishing", limit=200, interval=0.05))
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "replay", str(source), "--speed", "1"],
        cwd=ROOT,
        env={**os.environ, **service_env(settings)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a suite run in the background (nohup, `&` in a script) passes
        # SIGINT on ignored, and a Python started so never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Ctrl-C once records flow: a fixed delay raced the command's start-up on a slow machine
    deadline = time.monotonic() + 60
    while count_now(settings.kafka_bootstrap, settings.topics.events) == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the replay sent nothing in 60 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    sent = int(stderr.split("replay interrupted after ")[1].split()[0])
    assert "records were delivered" in stderr
    assert 0 < sent < 200
    assert count_now(settings.kafka_bootstrap, settings.topics.events) == sent
