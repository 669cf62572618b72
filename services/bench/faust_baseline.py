"""The faust-streaming app a user of the card's stack would write for the features bench.

Windowed tables (a 1-minute window hopping every 10 s, standing in for the sliding minute,
and a 5-minute tumbling window) keyed by entity, relative to the stream's time (the Kafka
timestamp, set to the event time when the stream is loaded); per event both tables are read
and written and a features record is sent. Run as a child process:
`python -m services.bench.faust_baseline BOOTSTRAP TOPIC OUT_TOPIC N DATADIR`; it prints one
JSON line with its events/s over the first N events and exits.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

import faust
import msgpack


def _stats(values: list[float]) -> list[Any]:
    if not values:
        return [0, 0.0, None, None, None, None]
    total = sum(values)
    mean = total / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return [len(values), total, mean, min(values), max(values), std]


def build_app(bootstrap: str, topic: str, out_topic: str, n: int, datadir: str) -> faust.App:
    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:8]}",
        datadir=datadir,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=1,
        web_enabled=False,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        table_cleanup_interval=30.0,
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    sink = app.topic(out_topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    minute = (
        app.Table("minute", default=list, partitions=1)
        .hopping(60.0, 10.0, expires=120.0)
        .relative_to_stream()
    )
    five = (
        app.Table("five", default=list, partitions=1).tumbling(300.0, expires=600.0)
    ).relative_to_stream()
    marks: dict[str, float] = {}
    seen = [0]

    @app.agent(source)
    async def features(stream: Any) -> None:
        async for value in stream:
            if not seen[0]:
                marks["start"] = time.perf_counter()
            event = msgpack.unpackb(value)
            entity, amount = event["entity"], event["data"]["amount"]
            last_minute = [*minute[entity].current(), amount]
            minute[entity] = last_minute
            this_five = [*five[entity].current(), amount]
            five[entity] = this_five
            record = {"event_id": event["event_id"], "f": _stats(last_minute) + _stats(this_five)}
            await sink.send(key=entity.encode(), value=msgpack.packb(record))
            seen[0] += 1
            if seen[0] == n:
                elapsed = time.perf_counter() - marks["start"]
                print(json.dumps({"events": n, "events_per_s": (n - 1) / elapsed}), flush=True)
                os._exit(0)  # a benchmark child: the figure is out, nothing to clean up

    return app


def main() -> None:
    bootstrap, topic, out_topic, n, datadir = sys.argv[1:6]
    app = build_app(bootstrap, topic, out_topic, int(n), datadir)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
