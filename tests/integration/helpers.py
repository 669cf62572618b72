"""Reading topics from the start, for assertions."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shared.codec import decode
from shared.kafka import BatchConsumer


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout: float = 60.0, partitions: int = 1
) -> list[Any]:
    """Decoded values until `expected` records arrived; fails loudly on a timeout."""
    return read_until(
        bootstrap,
        topic,
        lambda out: len(out) >= expected,
        f"{expected} records",
        timeout,
        partitions,
    )


def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Any]], bool],
    what: str,
    timeout: float = 60.0,
    partitions: int = 1,
    settle: float = 0.0,
) -> list[Any]:
    """Decoded values from the start until `done(values)` holds, then `settle` seconds more.

    Tests decide they have read enough from the records themselves, never from the broker's
    watermark, so a count that lags or leads the log cannot cut a read short.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"assert-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(out):
            assert time.monotonic() < deadline, f"{len(out)} records on {topic}, not {what}"
            for msg in consumer.consume(500, 0.2):
                assert msg.error() is None, msg.error()
                out.append(decode(msg.value()))
        quiet_until = time.monotonic() + settle
        while time.monotonic() < quiet_until:
            for msg in consumer.consume(500, 0.2):
                assert msg.error() is None, msg.error()
                out.append(decode(msg.value()))
                quiet_until = time.monotonic() + settle
    finally:
        consumer.close()
    return out


def count_now(bootstrap: str, topic: str) -> int:
    """Records currently in a one-partition topic (high watermark)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high - low)
    finally:
        consumer.close()


def peak_rss_mib(pid: int) -> float:
    """A running process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


class UnsubscribedConsumer(BatchConsumer):
    """For tests that drive a service's assignment themselves: its consumer never joins the
    group, so closing it does not wait for a rebalance that another, never polled, holds up."""

    def __init__(self, bootstrap: str, group_id: str, topics: Any, **kwargs: Any) -> None:
        super().__init__(bootstrap, group_id, None, **kwargs)


def assignments(proc: Any, topic: str) -> list[set[int]]:
    """The partitions of `topic` a service process was assigned, one set per assignment in
    its log (an empty set for an assignment of nothing)."""
    found = []
    for line in proc.log_tail(100_000).splitlines():
        if "partitions assigned" in line:
            found.append({int(p) for p in re.findall(re.escape(topic) + r"\[(\d+)\]", line)})
    return found


def wait_until(
    condition: Callable[[], bool], what: str, proc: Any = None, timeout: float = 60.0
) -> None:
    """Poll `condition`; fail with `what` (and the process's log) on a timeout, or at once
    if the process died."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.alive(), f"service exited:\n{proc.log_tail(40)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (
            f"\n{proc.log_tail(40)}" if proc is not None else ""
        )
        time.sleep(0.02)


def end_offset(reader: Consumer, topic: str, partition: int = 0) -> int:
    """The topic partition's high watermark (how many records it holds), asked through a
    `reader` the caller keeps for repeated questions."""
    return int(reader.get_watermark_offsets(TopicPartition(topic, partition), 10)[1])


def set_topic_config(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    """Change a topic's settings (e.g. `max.message.bytes`, which Apache Kafka enforces:
    1 MiB by default), as an operator would with kafka-configs."""
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    entries = [
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in config.items()
    ]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(10)

    def applied() -> bool:  # the broker applies a change from its metadata log, soon after
        described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
        entries = next(iter(described.values())).result(10)
        return all(entries[k].value == v for k, v in config.items())

    wait_until(applied, f"{topic}'s new settings {config}", timeout=10)


def dedupe_by_lineage(
    records: list[dict[str, Any]], identical: bool = True
) -> tuple[list[dict[str, Any]], int]:
    """Drop the records re-emitted after a restore, as a downstream service does: one per
    (input position, model); with `identical`, a re-emitted record must equal the first (a
    scorer's need not: another snapshot may serve it). Returns the unique records and how
    many were dropped."""
    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in records:
        lineage = record["lineage"]
        key = (lineage["topic"], lineage["partition"], lineage["offset"], record.get("model"))
        kept = first.setdefault(key, record)
        assert kept == record or not identical, f"a re-emitted record differs: {kept} != {record}"
    return list(first.values()), len(records) - len(first)


def windowed_accuracy_in_process(spec_path: Path) -> str:
    """Accuracy of the spec's windowed features and River model on Phishing, in this process:
    what the pipeline must print through Kafka."""
    from river import linear_model, metrics, preprocessing

    from services.features.engine import FeatureEngine
    from services.replay.datasets import dataset_events
    from shared.spec import load_spec

    engine = FeatureEngine(load_spec(spec_path).features)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    accuracy = metrics.Accuracy()
    for event in dataset_events("Phishing"):
        features = engine.process(0, event).features
        x = {k: v for k, v in features.items() if v is not None}
        y_pred = model.predict_one(x)
        if y_pred is not None:
            accuracy.update(event.label, y_pred)
        model.learn_one(x, event.label)
    return str(accuracy)


def champion_accuracy(
    where: Any, topic: str, spec: Any, alive: Callable[[], bool], timeout: float = 180.0
) -> tuple[int, str]:
    """Distinct predictions of the spec's champion on Phishing, and its accuracy, read back
    from `topic` and scored as the demo scores them."""
    from services.demo.run import collect_predictions
    from services.demo.scoring import dedupe, score
    from services.replay.datasets import dataset_events
    from shared.models.river_factory import default_metric

    models = [m.name for m in spec.models]
    predictions = collect_predictions(where, topic, 1, 1250, models, timeout, alive)
    labels = {e.event_id: e.label for e in dataset_events("Phishing")}
    preds = dedupe(predictions)[spec.champion]
    metrics, _ = score(preds, labels, [default_metric(spec.task)])
    return len(preds), str(metrics[0])


def monitor_applied(port: int) -> float:
    """The monitor's records applied so far, from its /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'headwater_monitor_records_total\{outcome="applied"\} (\S+)', text)
    return float(found.group(1)) if found else 0.0
