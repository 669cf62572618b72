"""The learner's inputs: records decoded as they arrive, released in deterministic order.

Events (or features records) and labels are decoded and checked as they are polled, then
wait in an `OrderedMerge` that releases them by event time (a label before an event of the
same time), whatever the fetch timing; what it releases becomes the model worker's items.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from confluent_kafka import Message

from services.learner.checkpointing import LearnerState
from services.learner.worker import EVENT, LABEL, Item
from shared.codec import CodecError, decode
from shared.kafka import BatchConsumer
from shared.messages import Event, Label, Lineage, MessageError
from shared.messages.fast_event import WireEvent, fast_valid_wire
from shared.messages.fast_features import fast_features_event
from shared.messages.scoring_input import scoring_event
from shared.models.inputs import model_input
from shared.ordering import OrderedMerge, OrderKey
from shared.settings import Settings
from shared.spec.labels import check_label

LABEL_RANK, EVENT_RANK = 0, 1  # a label sorts before an event of the same time (simulate_qa)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input record that will be dead-lettered when the merge releases it."""

    raw: bytes | None
    reason: str
    message: str


class Buffered(msgspec.Struct, frozen=True):
    """A decoded input record waiting in the ordered merge (a Struct: one is built per
    input record, and a frozen dataclass's __init__ cost a microsecond)."""

    lineage: Lineage
    # WireEvent: an event/v1 by the fast path. An event's data may be emptied on release.
    item: WireEvent | Event | Label | Rejected
    raw: bytes | None
    key: bytes | None
    source: Lineage | None = None  # for features records: the event they were computed from


@dataclass
class Released:
    """What one release hands on: the worker's items, and per record released (rejected
    ones too, so dead letters stay in input order) its Buffered."""

    items: list[Item]
    records: list[Buffered]
    applied: int  # records whose offsets moved (duplicates and rejects included)
    duplicates: int  # features records re-emitted by a restarted features service


class Intake:
    def __init__(
        self,
        merge: OrderedMerge[Buffered],
        consumer: BatchConsumer,
        settings: Settings,
        task: str,
    ) -> None:
        self.merge = merge
        self.consumer = consumer
        self.task = task
        topics = settings.topics
        self._events_topic = topics.events_valid
        self._labels_topic = topics.labels_valid
        self._features_topic = topics.features
        self._max_bytes = settings.max_message_bytes
        self.max_buffered = 20 * settings.batch_size
        self.vw_text = False  # set from the restored state: how VW models take their input
        self._paused: set[tuple[str, int]] = set()
        self._last_order: dict[tuple[str, int], OrderKey] = {}

    def buffer(self, msg: Message) -> None:
        """Decode and validate now; order and apply later."""
        # `position(msg)` inline (its call, with the fast path's below: 2.1% of this
        # thread's instructions, callgrind)
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError("record has no position (an error event, not a data record)")
        raw = msg.value()
        key = msg.key()
        if type(key) is not bytes:
            key = None
        # the commonest record, decoded and checked in one C pass
        # The decoded Struct itself is the event: building an Event from it costs 3% of this
        # thread.
        item: WireEvent | Event | None = None
        source = None
        if topic == self._events_topic:
            item = fast_valid_wire(raw, self._max_bytes)
        elif topic == self._features_topic:
            fast = fast_features_event(raw, self._max_bytes)
            if fast is not None:
                item, source = fast
        if item is not None:
            order: OrderKey = (item.ts, EVENT_RANK, partition, offset)
            buffered = Buffered(Lineage(topic, partition, offset), item, raw, key, source)
        else:
            full, order, source = self._decode(topic, partition, offset, raw)
            buffered = Buffered(Lineage(topic, partition, offset), full, raw, key, source)
        self._last_order[(topic, partition)] = order
        self.merge.push((topic, partition), order, buffered)

    def _decode(
        self, topic: str, partition: int, offset: int, raw: bytes | None
    ) -> tuple[Event | Label | Rejected, OrderKey, Lineage | None]:
        """The full route: any input kind, any defect named by its reason code."""
        item: Event | Label | Rejected
        source = None
        try:
            obj = decode(raw, self._max_bytes)
            if topic == self._labels_topic:
                item = Label.from_wire(obj)
                order = (item.ts, LABEL_RANK, partition, offset)
            else:
                item, source = scoring_event(obj, topic == self._features_topic)
                order = (item.ts, EVENT_RANK, partition, offset)
        except (CodecError, MessageError) as exc:
            item = Rejected(raw, exc.reason, str(exc))
            # right after its predecessor, so offsets are stored in partition order
            previous = self._last_order.get((topic, partition), (float("-inf"), 0, 0, 0))
            order = (previous[0], previous[1], partition, offset)
        return item, order, source

    def release(self, state: LearnerState) -> Released:
        """What the merge releases, in order, as the worker's items; each record's offset
        becomes part of `state` (and of the next checkpoint)."""
        offsets, hwm = state.offsets, state.source_hwm
        task, vw_text = self.task, self.vw_text
        items: list[Item] = []
        records: list[Buffered] = []
        applied = duplicates = 0
        for record in self.merge.pop_ready():
            lineage, item = record.lineage, record.item
            offsets[(lineage.topic, lineage.partition)] = lineage.offset + 1
            applied += 1
            if record.source is not None:
                upstream = (record.source.topic, record.source.partition)
                if record.source.offset <= hwm.get(upstream, -1):
                    duplicates += 1
                    continue  # re-emitted by a restarted features service: applied already
                hwm[upstream] = record.source.offset
            if type(item) is WireEvent or isinstance(item, Event):  # the commonest first
                label = item.label
                if label is not None:
                    try:
                        check_label(label, task)
                    except MessageError as exc:
                        rejected = Rejected(record.raw, exc.reason, str(exc))
                        records.append(Buffered(lineage, rejected, record.raw, record.key))
                        continue
                x = model_input(item.data, vw_text)  # on this core, not the model process's
                if x is not item.data and type(x) is dict:
                    # A copy (names interned, nulls dropped): the values are then x's alone,
                    # and marshal keeps no back-reference for each on either side of the
                    # pipe: 2.2% of this thread's instructions (callgrind). Nothing reads an
                    # event's data after this.
                    item.data.clear()
                items.append((EVENT, item.event_id, item.entity, item.ts, x, label))
            elif isinstance(item, Label):
                items.append((LABEL, item.event_id, item.label))
            # a Rejected record goes with the batch too, so dead letters stay in input order
            records.append(record)
        return Released(items, records, applied, duplicates)

    def apply_backpressure(self) -> None:
        """Pause an input that runs far ahead of the others; resume it once drained.

        This also lets a lagging input's records through: the client's prefetch queue is
        one FIFO across partitions, so a large backlog of one input would otherwise be
        consumed before the other input is seen at all. (A pause costs a refetch: librdkafka
        drops the partition's prefetched records; ~0.4 s seen on Tansu.)"""
        for tp in self.consumer.assignment:
            key = (tp.topic, tp.partition)
            size = self.merge.buffered(key)
            if size > self.max_buffered and key not in self._paused:
                self.consumer.pause([key])
                self._paused.add(key)
            elif size <= self.max_buffered // 2 and key in self._paused:
                self.consumer.resume([key])
                self._paused.discard(key)
