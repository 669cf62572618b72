"""Deterministic merge of several inputs (DESIGN §4, "replay ≡ live").

Each input (a topic-partition) is buffered in arrival order. The next record processed is
always the buffered head with the lowest order key (event time, rank, partition, offset),
so fetch timing cannot decide the order in which state changes.

An input with nothing buffered holds the merge back — it may still deliver a record that
sorts first — for at most `idle_s` seconds from the moment it started holding the merge
back; then the merge moves on without it (as Kafka Streams' `max.task.idle.ms`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
OrderKey = tuple[float, int, int, int]  # (event time, rank, partition, offset)


@dataclass
class _Input(Generic[T]):
    buffer: deque[tuple[OrderKey, T]] = field(default_factory=deque)
    blocking_since: float | None = None  # when it first held the merge back while empty


class OrderedMerge(Generic[T]):
    def __init__(
        self,
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s = idle_s
        self.clock = clock
        self._inputs: dict[Hashable, _Input[T]] = {}

    def set_inputs(self, keys: Iterable[Hashable]) -> None:
        """Follow the consumer's assignment; buffers of inputs no longer owned are dropped."""
        wanted = set(keys)
        for key in list(self._inputs):
            if key not in wanted:
                del self._inputs[key]
        for key in wanted:
            self._inputs.setdefault(key, _Input())

    def push(self, key: Hashable, order: OrderKey, item: T) -> None:
        inp = self._inputs.get(key)
        if inp is None:
            inp = self._inputs[key] = _Input()
        inp.buffer.append((order, item))
        inp.blocking_since = None

    def buffered(self, key: Hashable) -> int:
        inp = self._inputs.get(key)
        return len(inp.buffer) if inp else 0

    def __len__(self) -> int:
        return sum(len(i.buffer) for i in self._inputs.values())

    def _held_back(self, now: float) -> bool:
        """True while some empty input may still deliver a record that sorts first."""
        held = False
        for inp in self._inputs.values():
            if inp.buffer:
                continue
            if inp.blocking_since is None:
                inp.blocking_since = now
            if now - inp.blocking_since < self.idle_s:
                held = True
        return held

    def pop_ready(self) -> Iterator[T]:
        """Records in order, as long as the order can no longer change."""
        inputs = self._inputs
        while True:
            best: _Input[T] | None = None
            best_order: OrderKey | None = None
            some_empty = False
            non_empty = 0
            for inp in inputs.values():
                if inp.buffer:
                    non_empty += 1
                    order = inp.buffer[0][0]
                    if best_order is None or order < best_order:
                        best, best_order = inp, order
                else:
                    some_empty = True
            if best is None or (some_empty and self._held_back(self.clock())):
                return
            buffer = best.buffer
            if some_empty and non_empty == 1:
                # Every other input is empty and no longer holds the merge back; nothing
                # arrives during this call, so this one's records go in a run until it is
                # empty (then it holds the merge back in turn).
                while buffer:
                    yield buffer.popleft()[1]
            else:
                yield buffer.popleft()[1]
