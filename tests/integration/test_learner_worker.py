"""The learner's model workers: a model process gives what the in-thread worker gives, and
its failures are reported, never hung on."""

import itertools
import os
import signal
import socket
import threading
import time

import pytest

from services.learner.channel import Channel, ChannelClosedError, recv_frame, send_frame
from services.learner.core import LearnerCore
from services.learner.process_worker import MAX_IN_FLIGHT, ProcessWorker
from services.learner.worker import (
    EVENT,
    FAILED,
    LABEL,
    InlineWorker,
    WorkerError,
    core_status,
)
from services.replay.datasets import dataset_events
from shared.models.fingerprint import fingerprint
from shared.spec import parse_spec

SPEC = """
name: w
task: binary
models:
  - name: logreg
    river:
      pipeline: [river.preprocessing.StandardScaler, river.linear_model.LogisticRegression]
  - name: vw
    vw: {args: "-l 0.5"}
labels: {horizon_events: 50, default: false}
"""


def batches():
    """Phishing in batches of 100: every third event labelled inline, the others labelled on
    the labels topic 5 events later (some never), and records the models refuse."""
    items = []
    for i, e in enumerate(itertools.islice(dataset_events("Phishing"), 900)):
        inline = e.label if i % 3 == 0 else None
        items.append((EVENT, e.event_id, e.entity, e.ts, dict(e.data), inline))
        if i % 3 and i % 7:
            items.append((LABEL, e.event_id, e.label))  # joined when its event has come
        if i == 400:
            items.append((EVENT, "bad-x", "u", 1.0, {"x": "not a number"}, True))
            items.append((LABEL, "e-late", 0.5))  # a label the task cannot take
    return [items[i : i + 100] for i in range(0, len(items), 100)]


def run(worker):
    core = LearnerCore.from_spec(parse_spec(SPEC, "w"))
    worker.load(core)
    got = []
    try:
        for n, batch in enumerate(batches()):
            worker.submit(batch, [n] * len(batch))
            got.extend(worker.results(block=False))
        got.extend(worker.results(block=True))
        return got, worker.snapshot(), worker.status()
    finally:
        worker.close()


def test_a_model_process_gives_exactly_what_the_inline_worker_gives():
    inline, inline_core, inline_status = run(InlineWorker())
    process, process_core, process_status = run(ProcessWorker("WARNING", "text"))
    assert [m for m, _, _ in process] == [m for m, _, _ in inline]  # every batch, in order
    assert process == inline  # scores, joined pairs, failures: equal
    failures = [r for _, _, results in inline for r in results if r[0] == FAILED]
    assert [r[1] for r in failures] == ["model_error", "bad_label"]
    assert process_status == inline_status == core_status(inline_core)
    assert inline_status["labels_learned"] > 600
    for name in ("logreg", "vw"):
        assert fingerprint(process_core.models[name]) == fingerprint(inline_core.models[name])
    assert process_core.pending.keys() == inline_core.pending.keys()


def test_a_dead_model_process_is_reported():
    worker = ProcessWorker("WARNING", "text")
    worker.load(LearnerCore.from_spec(parse_spec(SPEC, "w")))
    os.kill(worker.pid, signal.SIGKILL)

    def submit_and_wait():
        worker.submit(batches()[0], [0])  # raises here or when the results are awaited
        return list(worker.results(block=True))

    with pytest.raises(WorkerError, match=r"model process died \(exit code -9\)"):
        submit_and_wait()
    worker.close()


@pytest.mark.parametrize("waiting_in", ["results", "call"])
def test_a_hung_model_process_is_killed_and_reported(waiting_in):
    """Stopped (as a model stuck in a loop would be): the service's wait ends after the
    timeout, with the child killed, instead of renewing its lease forever."""
    worker = ProcessWorker("WARNING", "text")
    renewals = []
    worker.wait = lambda: renewals.append(1)
    try:
        worker.load(LearnerCore.from_spec(parse_spec(SPEC, "w")))  # start-up takes seconds
        worker.timeout_s = 1.0
        os.kill(worker.pid, signal.SIGSTOP)

        def wait_on_it():
            if waiting_in == "results":
                worker.submit(batches()[0], [0])
                return list(worker.results(block=True, wait=worker.wait))
            return worker.status()

        with pytest.raises(WorkerError, match=r"sent nothing for 1 s .* was killed"):
            wait_on_it()
        assert worker._process.poll() == -signal.SIGKILL
        assert renewals  # the lease was renewed while it was still only slow
    finally:
        worker.close()


def test_a_long_batch_of_a_busy_model_process_is_not_taken_for_a_hang():
    """The model process beats while it serves: a batch that takes longer than the timeout
    comes back whole, the process alive."""
    worker = ProcessWorker("WARNING", "text")
    try:
        worker.load(LearnerCore.from_spec(parse_spec(SPEC, "w")))
        worker.timeout_s = 2.0
        events = itertools.islice(itertools.cycle(dataset_events("Phishing")), 120_000)
        batch = [
            (EVENT, f"e{i}", "u", float(i), dict(e.data), e.label) for i, e in enumerate(events)
        ]
        started = time.monotonic()
        worker.submit(batch, ["big"])
        (metas, _, results), *rest = worker.results(block=True)
        assert time.monotonic() - started > worker.timeout_s  # longer than the timeout
        assert (metas, len(results), rest) == (["big"], len(batch), [])
        assert worker._process.poll() is None
    finally:
        worker.close()


def test_calls_wait_for_the_batches_in_flight():
    worker = ProcessWorker("WARNING", "text")
    try:
        worker.load(LearnerCore.from_spec(parse_spec(SPEC, "w")))
        worker.submit(batches()[0], [0])
        with pytest.raises(WorkerError, match="in flight"):
            worker.snapshot()
        assert [m for m, _, _ in worker.results(block=True)] == [[0]]
        assert worker.snapshot().events_seen == 100 - sum(1 for i in batches()[0] if i[0])
    finally:
        worker.close()


def test_the_channel_never_deadlocks_when_both_sides_send_more_than_a_buffer():
    ours, theirs = socket.socketpair()
    big = os.urandom(8 << 20)  # far beyond the socket's buffer, both ways
    channel = Channel(ours)
    received = []

    def other_side():
        send_frame(theirs, big[::-1])  # blocks until we read, while we are still sending
        received.append(recv_frame(theirs))

    thread = threading.Thread(target=other_side)
    thread.start()
    channel.send(big)  # does not block: what the socket cannot take waits in a backlog
    msg = None
    while msg is None:
        msg = channel.receive(1.0)
    for _ in range(200):  # the backlog is written while this side sends or receives
        if not thread.is_alive():
            break
        assert channel.receive(0.05) is None
    thread.join(1)
    assert msg == big[::-1]
    assert received == [big]
    theirs.close()
    with pytest.raises(ChannelClosedError):
        channel.receive(1.0)
    channel.close()


def test_the_inline_worker_renews_between_chunks_of_a_long_release():
    items = [item for batch in batches() for item in batch]
    calls = []
    chunked, whole = InlineWorker(), InlineWorker()
    chunked.load(LearnerCore.from_spec(parse_spec(SPEC, "w")))
    whole.load(LearnerCore.from_spec(parse_spec(SPEC, "w")))
    chunked.submit(items, ["all"], lambda: calls.append(1))
    for n, batch in enumerate(batches()):
        whole.submit(batch, [n])
    assert len(calls) == (len(items) - 1) // 1000  # between chunks of 1,000 records
    ((_, _, results),) = chunked.results(block=True)
    assert results == [r for _, _, rs in whole.results(block=True) for r in rs]


@pytest.mark.parametrize("make", [InlineWorker, lambda: ProcessWorker("WARNING", "text")])
def test_a_status_is_asked_for_behind_the_batches_without_waiting_for_them(make):
    worker = make()
    try:
        worker.load(LearnerCore.from_spec(parse_spec(SPEC, "w")))
        first, second = batches()[:2]
        worker.submit(first, [0])
        worker.request_status()
        worker.request_status()  # one is coming already: not asked twice
        worker.submit(second, [1])
        if isinstance(worker, ProcessWorker):
            assert len(worker._in_flight) == 3  # two batches and one request
        got = [m for m, _, _ in worker.results(block=True)]
        assert got == [[0], [1]]  # the request is not a batch
        status = worker.take_status()
        assert status is not None
        events = sum(1 for item in first if item[0] == EVENT)
        assert status["events_seen"] == events  # as of the batches before it, not after
        assert worker.take_status() is None  # handed over once
        assert worker.status()["events_seen"] == events + sum(1 for i in second if i[0] == EVENT)
    finally:
        worker.close()


def test_a_status_request_takes_no_batch_place_among_those_in_flight():
    """MAX_IN_FLIGHT batches and a status request in flight: reading what is ready does not
    wait (it would, on a stopped model process, until the hang timeout)."""
    worker = ProcessWorker("WARNING", "text")
    try:
        worker.load(LearnerCore.from_spec(parse_spec(SPEC, "w")))
        worker.timeout_s = 1.0
        os.kill(worker.pid, signal.SIGSTOP)
        for n, batch in enumerate(batches()[:MAX_IN_FLIGHT]):
            worker.submit(batch, [n])
        worker.request_status()
        started = time.monotonic()
        assert list(worker.results(block=False)) == []
        assert time.monotonic() - started < 0.5
        os.kill(worker.pid, signal.SIGCONT)
        worker.timeout_s = 30.0
        assert [m for m, _, _ in worker.results(block=True)] == [[0], [1], [2], [3]]
        assert worker.take_status() is not None
    finally:
        worker.close()
