"""The Quix Streams peer of `headwater bench pipeline`: the test-then-train job a user would
write instead of Headwater, in Quix Streams' README style (River's predict_one then
learn_one, a prediction produced per event).

It runs in the .venv-quix interpreter (ops/bench/quix-requirements.txt), so it imports
nothing of Headwater's. Arguments: bootstrap, guarantee (at-least-once | exactly-once), input
topic, output topic, consumer group, events. It prints one JSON line: the wall and CPU
seconds (every thread of the process) at the end of its first quarter (warm-up, as
the learner's) and once its last output is
delivered and committed, and the count.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import msgpack
from quixstreams import Application
from quixstreams.models.serializers import Deserializer, SerializationError, Serializer
from river import linear_model, preprocessing


class MsgpackDeserializer(Deserializer):
    def __call__(self, value: bytes, ctx: Any) -> Any:
        try:
            return msgpack.unpackb(value, raw=False)
        except Exception as exc:
            raise SerializationError(str(exc)) from exc


class MsgpackSerializer(Serializer):
    def __call__(self, value: Any, ctx: Any) -> bytes:
        return msgpack.packb(value, use_bin_type=True)


def main() -> None:
    bootstrap, guarantee, in_topic, out_topic, group, n = sys.argv[1:7]
    events = int(n)
    quarter = events // 4
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee=guarantee,
        auto_create_topics=False,
        use_changelog_topics=False,
        loglevel="WARNING",
        # Headwater's consumer and producer tuning, so the peer is not slowed by a default
        consumer_extra_config={
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 2000,
            "fetch.wait.max.ms": 10,
            "fetch.queue.backoff.ms": 10,
        },
        producer_extra_config={"linger.ms": 5},
    )
    source = app.topic(in_topic, value_deserializer=MsgpackDeserializer(), key_deserializer="bytes")
    sink = app.topic(out_topic, value_serializer=MsgpackSerializer(), key_serializer="bytes")
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    marks: dict[str, float] = {}
    seen = 0

    def test_then_train(event: dict[str, Any]) -> dict[str, Any]:
        nonlocal seen
        if seen == quarter:  # the first quarter is warm-up, as the learner's is
            marks["quarter_wall"], marks["quarter_cpu"] = time.perf_counter(), time.process_time()
        x, y = event["data"], event.get("label")
        prediction = model.predict_one(x)
        if y is not None:
            model.learn_one(x, y)
        seen += 1
        return {
            "event_id": event["event_id"],
            "entity": event["entity"],
            "ts": event["ts"],
            "prediction": prediction,
        }

    app.dataframe(source).apply(test_then_train).to_topic(sink)
    app.run(count=events, timeout=30.0, collect=False)
    # after the run: its last outputs delivered and committed, as the learner's are timed
    marks["last_wall"], marks["last_cpu"] = time.perf_counter(), time.process_time()
    print(json.dumps({**marks, "events": seen, "quarter": quarter}), flush=True)


if __name__ == "__main__":
    main()
