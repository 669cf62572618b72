import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient

from shared.redis_store import RedisStore, RedisUnavailableError
from shared.stack import LocalStack, StackError
from shared.stack.kafka_broker import kafka_jars

from .conftest import ROOT

BOTH = pytest.mark.parametrize("broker", ["tansu", "kafka"])


@BOTH
def test_stack_creates_topics_with_their_partition_counts_and_stops_everything(broker):
    with LocalStack({"a": 3, "b": 1}, broker=broker) as stack:
        meta = AdminClient({"bootstrap.servers": stack.bootstrap}).list_topics(timeout=10).topics
        assert len(meta["a"].partitions) == 3
        assert len(meta["b"].partitions) == 1
        store = RedisStore(stack.redis_url)
        store.client.set("k", "v")
        assert store.client.get("k") == b"v"
        store.close()
        procs = [p.proc for p in stack.processes()]
    assert all(p.poll() is not None for p in procs)


@BOTH
def test_headwater_stack_prints_addresses_and_stops_on_ctrl_c(broker):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli.main",
            "stack",
            "--partitions",
            "2",
            "--broker",
            broker,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines = []
    try:
        deadline = time.monotonic() + 30
        while not any("Press Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline, lines
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        bootstrap = text.split("export HEADWATER_KAFKA_BOOTSTRAP=")[1].split()[0]
        redis_url = text.split("export HEADWATER_REDIS_URL=")[1].split()[0]
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        assert len(meta["events"].partitions) == 2
        assert len(meta["predictions"].partitions) == 2
        RedisStore(redis_url).ping()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert "Stack stopped." in proc.stdout.read()
    finally:
        proc.kill()
    # the broker and Redis are gone with it
    with pytest.raises(RedisUnavailableError):
        RedisStore(redis_url, timeout_s=0.5).ping()


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True)
    return [
        int(p) for p, pp in (line.split() for line in out.stdout.splitlines()) if int(pp) == pid
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return bool(state.stdout.strip()) and not state.stdout.strip().startswith("Z")


@BOTH
def test_broker_and_redis_die_with_a_killed_stack_command(broker):
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "stack", "--broker", broker],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while "Press Ctrl-C" not in proc.stdout.readline():
            assert time.monotonic() < deadline
        children = _children_of(proc.pid)
        assert len(children) == 2
        proc.kill()  # SIGKILL: no handler, no finally
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children):
            assert time.monotonic() < deadline, "broker or Redis outlived the stack command"
            time.sleep(0.1)
    finally:
        proc.kill()


def test_kafka_without_java_or_maven_says_what_to_install(tmp_path):
    """No traceback: one line naming the tool and the Debian package. Maven is only needed
    while the jars are not cached (an empty cache folder here)."""
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "java").symlink_to(shutil.which("java"))
    for path, missing in ((str(tmp_path), "`java`"), (str(bare), "`mvn`")):
        result = subprocess.run(
            [sys.executable, "-m", "services.cli.main", "stack", "--broker", "kafka"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PATH": path, "HEADWATER_CACHE_DIR": str(tmp_path / "cache")},
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{missing} not found on PATH" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_failed_download_says_so_and_leaves_no_partial_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADWATER_CACHE_DIR", str(tmp_path))
    with pytest.raises(StackError, match=r"Maven could not download Apache Kafka 0\.0\.404"):
        kafka_jars("0.0.404")
    assert not list((tmp_path / "kafka-0.0.404").glob("lib*"))
