"""The learner's per-event work without Kafka, for instruction counts under callgrind.

Issue 26: the learner service's hot path is measured in instructions, which a busy shared
machine does not blur as it does wall-clock time. This runs the service's own pieces on the
bench stream (`headwater bench learner`: Phishing, StandardScaler | LogisticRegression),
in batches of `batch_size` records as `LearnerService.step` polls them, one side at a time:

  learner  the service's thread: `Intake.buffer` per record, `Intake.release`, the batch
           packed for the model process, its results unpacked, `Publisher.publish`
           (predictions and outcomes built and encoded; the producer is a stub that keeps
           the records, so librdkafka's share is not counted)
  model    the model process: a batch unpacked, `serve_sliced` (predict, learn), packed

Each side's input is made first (the model side's results included), outside the counted
part: only the side's own work is counted. Under callgrind the counted part is switched on
and off by client requests (a tiny C helper built with gcc, see `_toggles`), so imports and
set-up cost nothing; run it as

  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.%p \\
      .venv/bin/python ops/bench/callgrind_learner.py learner 10000

and read "Collected" (or `callgrind_annotate`) divided by the events. Without valgrind the
toggles do nothing. Each run prints a hash of every output record (topic, value, key) and
of the model side's results: a change to the hot path must leave both as they were
(`--mixed` adds late labels and nulls to the stream for that check).

Measured for issue 26 (instructions per event, 10,000 events, PYTHONHASHSEED=0):

                         before (9bfc923)   after (branch i26-hot)
  learner thread               81,777              70,923
  model process               163,449             158,908
  floor (River's calls)       142,545             142,545
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# The worktree's packages, whichever directory this runs from.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from confluent_kafka import TIMESTAMP_CREATE_TIME

from services.bench.learner_bench import RIVER_SPEC, bench_events
from services.learner.checkpointing import LearnerState
from services.learner.core import LearnerCore
from services.learner.intake import Intake
from services.learner.latency import LatencySamples
from services.learner.process_worker import BEAT_SLICE, _live, _pack, _unpack
from services.learner.publisher import LearnerMetrics, Publisher
from services.learner.worker import no_wait, serve_sliced
from shared.codec import encode
from shared.gc_tuning import hot_path_gc
from shared.metrics import ServiceMetrics
from shared.models.inputs import model_input
from shared.models.river_factory import build_estimator
from shared.ordering import OrderedMerge
from shared.runtime.dead_letters import DeadLetters
from shared.settings import Settings
from shared.spec import parse_spec

_TOGGLES_C = """
#include <valgrind/callgrind.h>
void hw_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void hw_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("counted"); }
"""


class _Toggles:
    """Callgrind's instrumentation on and off around the counted part (no-ops natively)."""

    def __init__(self) -> None:
        self._lib: Any = None
        build = Path(tempfile.gettempdir()) / "headwater_callgrind_toggles"
        lib = build / "toggles.so"
        if not lib.exists():
            build.mkdir(exist_ok=True)
            (build / "toggles.c").write_text(_TOGGLES_C)
            done = subprocess.run(
                ["gcc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(build / "toggles.c")],
                check=False,
            )
            if done.returncode != 0:
                print("no toggles (gcc or valgrind/callgrind.h missing): all is counted")
                return
        self._lib = ctypes.CDLL(str(lib))

    def start(self) -> None:
        if self._lib is not None:
            self._lib.hw_start()

    def stop(self) -> None:
        if self._lib is not None:
            self._lib.hw_stop()


class FakeMessage:
    """What `Intake.buffer` and `LatencySamples` read of a confluent_kafka Message."""

    __slots__ = ("_key", "_offset", "_partition", "_topic", "_ts_ms", "_value")

    def __init__(self, topic: str, partition: int, offset: int, value: bytes, key: bytes) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._key = value, key
        self._ts_ms = 1_704_067_200_000 + offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._ts_ms


class KeptProducer:
    """The SafeProducer calls the publisher makes; the records are kept for the hash."""

    def __init__(self) -> None:
        # (topic, [(value, key)]) per call: the stub's own cost is counted, so it is little
        self.batches: list[tuple[str, list[tuple[bytes | None, bytes | None]]]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        self.batches.append((topic, [(value, key)]))

    def produce_all(self, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
        if records:
            self.batches.append((topic, records.copy()))

    @property
    def records(self) -> list[tuple[str, bytes | None, bytes | None]]:
        return [(topic, v, k) for topic, batch in self.batches for v, k in batch]


def messages(
    n: int, batch_size: int, settings: Settings, mixed: int = 0
) -> list[list[FakeMessage]]:
    """The bench stream as events.valid records, in consume batches. With `mixed` (for
    the hash check, not the counts): every `mixed`-th event without its label, which then
    comes from labels.valid three events later, and every (mixed + 1)-th with a null
    feature."""
    topics = settings.topics
    msgs: list[FakeMessage] = []
    late: dict[int, tuple[str, str, Any]] = {}  # at index: the label record to send there
    for i, e in enumerate(bench_events("Phishing", n)):
        wire = e.to_wire()
        if mixed and i % mixed == 0:
            wire.pop("label", None)
            late[i + 3] = (e.event_id, e.entity, e.label)
        if mixed and i % (mixed + 1) == 0:
            wire["data"] = {**wire["data"], "absent": None}
        msgs.append(FakeMessage(topics.events_valid, 0, i, encode(wire), e.entity.encode()))
        if i in late:
            event_id, entity, label = late.pop(i)
            value = {"event_id": event_id, "entity": entity, "label": label, "ts": e.ts}
            msgs.append(FakeMessage(topics.labels_valid, 0, i, encode(value), None))
    return [msgs[i : i + batch_size] for i in range(0, len(msgs), batch_size)]


class LearnerSide:
    """The service thread's pieces, wired as `LearnerService` wires them."""

    def __init__(self, settings: Settings, core: LearnerCore) -> None:
        topics = settings.topics
        self.producer = KeptProducer()
        metrics = LearnerMetrics.create(ServiceMetrics("learner"))
        merge: OrderedMerge[Any] = OrderedMerge(0.0)  # labels never hold the stream back
        merge.set_inputs([(topics.events_valid, 0), (topics.labels_valid, 0)])
        self.intake = Intake(merge, None, settings, core.task)  # type: ignore[arg-type]
        self.intake.vw_text = core.vw_text
        self.state = LearnerState(core)
        self.publisher = Publisher(
            tuple(core.models),
            core.pipeline,
            core.task,
            self.producer,  # type: ignore[arg-type]
            topics,
            metrics,
            DeadLetters("learner", topics.events_dlq, metrics.stream, self.producer.produce),
            LatencySamples(topics.events_valid, metrics.event_to_prediction),
        )
        self.publisher.set_model_metrics(core.metrics)

    def intake_batch(self, batch: list[FakeMessage]) -> tuple[bytes, list[Any]]:
        """`step`'s first half: buffer, release, the batch packed for the model process."""
        self.publisher.latency.sample_batch(batch)  # type: ignore[arg-type]
        buffer = self.intake.buffer
        for msg in batch:
            buffer(msg)  # type: ignore[arg-type]
        released = self.intake.release(self.state)
        return _pack(released.items), released.records

    def publish_batch(self, records: list[Any], packed_results: bytes) -> None:
        """`step`'s second half: the results unpacked, the outputs built and produced."""
        version, results = _unpack(packed_results)
        self.publisher.publish([(records, version, results)])


def model_batch(core: LearnerCore, packed_items: bytes) -> bytes:
    """What `worker_main` does with a batch."""
    return _pack(serve_sliced(core, _unpack(packed_items), no_wait, BEAT_SLICE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("side", choices=("learner", "model", "both", "loop", "floor"))
    parser.add_argument("events", type=int, nargs="?", default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--mixed", type=int, default=0, help="see `messages`")
    args = parser.parse_args()
    toggles = _Toggles()
    settings = Settings()
    spec = parse_spec(RIVER_SPEC, "bench")
    batches = messages(args.events, args.batch_size, settings, args.mixed)

    # Every input made before the counted part: both sides run once uncounted, so the
    # counted side gets the other side's outputs as it would from the pipe.
    learner = LearnerSide(settings, LearnerCore.from_spec(spec))
    model_core = _live(LearnerCore.from_spec(spec))
    packed_items: list[bytes] = []
    packed_results: list[bytes] = []
    records: list[list[Any]] = []
    counted_learner = LearnerSide(settings, LearnerCore.from_spec(spec))
    counted_core = _live(LearnerCore.from_spec(spec))
    for batch in batches:
        items, recs = learner.intake_batch(batch)
        packed_items.append(items)
        records.append(recs)
        packed_results.append(model_batch(model_core, items))

    # As the service and its model process set the collector up (take_ownership, load).
    gc.freeze()
    hot_path_gc()
    if args.side in ("loop", "floor"):
        # For scale: River's own loop (`inprocess_river`: predict_one), or the calls the
        # model process makes (predict_proba_one) on the same interned dicts: the floor.
        estimator = build_estimator(spec.models[0].config, "models[0].river")
        events = [
            (model_input(e.data, False), e.label) for e in bench_events("Phishing", args.events)
        ]
        predict = estimator.predict_one if args.side == "loop" else estimator.predict_proba_one
        gc.freeze()
        hot_path_gc()
        toggles.start()
        for x, label in events:
            predict(x)
            estimator.learn_one(x, label)
        toggles.stop()
        return

    toggles.start()
    if args.side in ("learner", "both"):
        for batch, results in zip(batches, packed_results, strict=True):
            _, recs = counted_learner.intake_batch(batch)
            counted_learner.publish_batch(recs, results)
    if args.side in ("model", "both"):
        counted = [model_batch(counted_core, items) for items in packed_items]
    toggles.stop()

    if args.side == "learner":
        counted = packed_results
    else:
        same = list(map(_unpack, counted)) == list(map(_unpack, packed_results))
        assert same, "the model side is not deterministic"
    if args.side == "model":
        for recs, results in zip(records, packed_results, strict=True):
            counted_learner.publish_batch(recs, results)
    outputs = hashlib.sha256()
    for topic, value, key in counted_learner.producer.records:
        outputs.update(repr((topic, value, key)).encode())
    model = hashlib.sha256()  # repr, not marshal: marshal's bytes depend on refcounts
    for batch_results in map(_unpack, counted):
        model.update(repr(batch_results).encode())
    print(f"events {args.events} side {args.side}")
    print(f"records {len(counted_learner.producer.records)} outputs {outputs.hexdigest()}")
    print(f"model results {model.hexdigest()}")


if __name__ == "__main__":
    main()
