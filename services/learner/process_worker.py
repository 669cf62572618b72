"""The learner's model process: the models in a child process, fed over a socket pair.

See worker.py for why, and for the protocol both workers keep. This side ships batches
(marshal, several times faster than pickle for tuples of str, float and dict) and control
calls; `worker_main` is the child's loop (`python -m services.learner.model_process`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import marshal
import pickle
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from services.learner.channel import Channel, ChannelClosedError, recv_frame, send_frame
from services.learner.core import LearnerCore
from services.learner.worker import (
    Batch,
    InlineWorker,
    Item,
    ModelWorker,
    WorkerError,
    at_most_every,
    core_status,
    no_wait,
    serve_sliced,
)
from shared.checkpoint.codec import deep_recursion, dumps
from shared.gc_tuning import hot_path_gc
from shared.logs import configure_logging
from shared.models import ModelAdapter
from shared.rollout.state import Decision

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4  # batches submitted to the model process and not yet read back
# While a long batch is served, the model process says it is alive at least this often, in
# between slices of BEAT_SLICE records: a slow model is not a hung one (`timeout_s`).
BEAT_EVERY_S = 1.0
BEAT_SLICE = 100


# Messages on the pipe start with a tag byte. Batches go as marshal (several times faster
# than pickle for tuples of str, float and dict), falling back to pickle for a value marshal
# cannot take; control calls and their replies go as pickle.
_BATCH, _BATCH_PICKLED, _CALL, _REPLY, _ERROR, _BEAT = b"B", b"b", b"C", b"R", b"E", b"H"


# In the queue of what is in flight: a status request, answered in its turn.
_STATUS_ASKED: list[Any] = []


def _pack(items: Any) -> bytes:
    try:
        return _BATCH + marshal.dumps(items)
    except ValueError:  # e.g. a NumPy scalar from a custom model
        return _BATCH_PICKLED + pickle.dumps(items, pickle.HIGHEST_PROTOCOL)


def _unpack(msg: bytes) -> Any:
    if msg[:1] == _BATCH:
        return marshal.loads(memoryview(msg)[1:])
    return pickle.loads(memoryview(msg)[1:])


class ProcessWorker:
    """The models in a child process (see the module's docstring)."""

    apart = True

    def __init__(
        self, log_level: str = "INFO", log_format: str = "json", timeout_s: float = 300.0
    ) -> None:
        self.timeout_s = timeout_s
        # A fresh interpreter, not a fork (the service has Kafka threads) and not
        # multiprocessing's spawn (it re-runs the caller's main module in the child).
        ours, theirs = socket.socketpair()
        with theirs:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.learner.model_process",
                    str(theirs.fileno()),
                    log_level,
                    log_format,
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                # Not in the terminal's process group: Ctrl-C or a closed terminal reach the
                # learner, which checkpoints, then stops this child (even mid-start-up).
                start_new_session=True,
            )
        self._channel = Channel(ours)
        # The metas of each batch in flight, or _STATUS_ASKED where a status request is.
        self._in_flight: deque[list[Any]] = deque()
        self._status_asked = False  # one request at a time; not a batch for MAX_IN_FLIGHT
        self._status: dict[str, Any] | None = None
        self.wait: Callable[[], None] = no_wait  # called while a control call waits

    @property
    def pid(self) -> int:
        return self._process.pid

    def _died(self, exc: BaseException) -> WorkerError:
        try:
            code = self._process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        return WorkerError(
            f"the model process died (exit code {code}): {exc}; the learner stops and "
            "resumes from its last checkpoint when restarted"
        )

    def _hung(self) -> WorkerError:
        """A model process that sends nothing for `timeout_s` while the service waits on
        it (not a result, not a reply, not the beat it sends while serving a long batch)
        is hung: a model stuck in a loop, a stopped process. It is killed, so the service
        stops and releases its lease instead of renewing it forever while the standby
        waits."""
        self._process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(5)
        return WorkerError(
            f"the model process sent nothing for {self.timeout_s:g} s "
            "(HEADWATER_LEARNER_MODEL_TIMEOUT_S) and was killed; the learner stops and "
            "resumes from its last checkpoint when restarted"
        )

    def _waited(self, since: float, wait: Callable[[], None]) -> None:
        """While the service waits on the model process: dead, hung, or still going (then
        `wait` runs: the service renews its lease there)."""
        if self._process.poll() is not None:
            raise self._died(ChannelClosedError("no reply"))
        if time.monotonic() - since > self.timeout_s:
            raise self._hung()
        wait()

    def _receive(self, timeout: float) -> bytes | None:
        try:
            msg = self._channel.receive(timeout)
        except ChannelClosedError as exc:
            raise self._died(exc) from exc
        if msg is not None and msg[:1] == _ERROR:
            raise WorkerError(f"the model process failed:\n{msg[1:].decode()}")
        return msg

    def _send(self, msg: bytes) -> None:
        try:
            self._channel.send(msg)
        except ChannelClosedError as exc:
            raise self._died(exc) from exc

    def _send_call(self, name: str, *args: Any) -> None:
        self._send(_CALL + dumps((name, args)))  # as checkpoints are: fast restores, deep trees

    def _call(self, name: str, *args: Any) -> Any:
        if self._in_flight:
            raise WorkerError(f"{name} called with batches in flight (read their results first)")
        self._send_call(name, *args)
        since = time.monotonic()
        while (msg := self._receive(min(0.5, self.timeout_s))) is None:
            self._waited(since, self.wait)  # a large state takes a while to ship
        with deep_recursion():
            return pickle.loads(memoryview(msg)[1:])

    def load(self, core: LearnerCore) -> None:
        self._call("load", core)

    def submit(
        self, items: list[Item], metas: list[Any], wait: Callable[[], None] = no_wait
    ) -> None:
        self._send(_pack(items))  # never blocks: the model process does the waiting
        self._in_flight.append(metas)

    def results(self, block: bool, wait: Callable[[], None] = no_wait) -> Iterator[Batch]:
        """Batches whose results are back, oldest first: those ready now, every one if
        `block`, and always enough to leave at most MAX_IN_FLIGHT in flight. `wait` runs
        while blocked, about every half second (the service renews its lease there)."""
        since = time.monotonic()
        while self._in_flight:
            must = block or len(self._in_flight) - self._status_asked > MAX_IN_FLIGHT
            msg = self._receive(min(0.5, self.timeout_s) if must else 0)
            if msg is None:
                if not must:
                    return
                self._waited(since, wait)
                continue
            since = time.monotonic()
            if msg[:1] == _BEAT:  # alive, still serving a long batch
                continue
            metas = self._in_flight.popleft()
            if metas is _STATUS_ASKED:
                assert msg[:1] == _REPLY, "a status request answered out of turn"
                status = pickle.loads(memoryview(msg)[1:])
                assert isinstance(status, dict)
                self._status, self._status_asked = status, False
                continue
            version, results = _unpack(msg)
            yield metas, version, results
            since = time.monotonic()  # the caller's time with the results is not ours

    def snapshot(self) -> LearnerCore:
        core = self._call("snapshot")
        assert isinstance(core, LearnerCore)
        return core

    def set_version(self, version: int) -> None:
        self._call("set_version", version)

    def set_paused(self, models: frozenset[str]) -> None:
        """Like every control call, only with no batch in flight (publish them first)."""
        self._call("set_paused", models)

    def status(self) -> dict[str, Any]:
        status = self._call("status")
        assert isinstance(status, dict)
        return status

    def request_status(self) -> None:
        """Ask for the status behind the batches in flight, without waiting for them: its
        counters are as of every batch submitted before it. `take_status` hands it over
        once `results` has read it."""
        if self._status_asked:
            return  # the one asked for is still coming
        self._send_call("status")
        self._in_flight.append(_STATUS_ASKED)
        self._status_asked = True

    def take_status(self) -> dict[str, Any] | None:
        status, self._status = self._status, None
        return status

    def replace_model(
        self, name: str, model: ModelAdapter, metrics: list[Any], learned: int
    ) -> None:
        self._call("replace_model", name, model, metrics, learned)

    def rollout(self, request: dict[str, Any]) -> Decision:
        decision = self._call("rollout", request)
        assert isinstance(decision, dict)
        return decision

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child; kill it if it does not stop in time (its state is disposable:
        the service checkpointed what it needs)."""
        with contextlib.suppress(ChannelClosedError):
            self._channel.send(_CALL + pickle.dumps(("stop", ())))
            deadline = time.monotonic() + timeout
            while self._process.poll() is None and time.monotonic() < deadline:
                self._channel.receive(0.1)  # writes the backlog; any late results are dropped
        try:
            self._process.wait(max(0.0, timeout / 2))
        except subprocess.TimeoutExpired:
            log.warning("model process did not stop; killing it")
            self._process.kill()
            self._process.wait(timeout)
        self._channel.close()


def _live(core: LearnerCore) -> LearnerCore:
    """A core as the model process runs it: the service keeps the metrics, from the results
    (a pickled core comes back tracking them)."""
    core.track_metrics = False
    return core


def worker_main(sock: socket.socket, log_level: str, log_format: str) -> None:
    """The model process: serve batches and calls until told to stop or the service goes."""
    for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, signal.SIG_IGN)  # the service stops us after checkpointing
    configure_logging(log_level, log_format)
    core: LearnerCore | None = None
    try:
        while True:
            try:
                msg = recv_frame(sock)
            except (ChannelClosedError, OSError):
                return  # the service is gone
            tag = msg[:1]
            if tag != _CALL:
                if core is None:
                    raise WorkerError("a batch came before any state was loaded")
                beat = at_most_every(BEAT_EVERY_S, functools.partial(send_frame, sock, _BEAT))
                send_frame(sock, _pack(serve_sliced(core, _unpack(msg), beat, BEAT_SLICE)))
                continue
            with deep_recursion():
                name, args = pickle.loads(memoryview(msg)[1:])
            if name == "stop":
                return
            if name == "load":
                core = _live(args[0])
                # This process is ours: nothing to give back. (No freeze: each snapshot
                # replaces the state below, and a frozen one's cycles would never be collected.)
                hot_path_gc()
                reply: Any = None
            elif core is None:
                raise WorkerError(f"{name} called before any state was loaded")
            elif name == "snapshot":
                reply = core
            elif name == "set_version":
                core.model_version = args[0]
                reply = None
            elif name == "set_paused":
                core.set_paused(args[0])
                reply = None
            elif name == "status":
                reply = core_status(core)
            elif name == "replace_model":
                core.replace_model(*args)
                reply = None
            elif name == "rollout":
                reply = core.apply_rollout(args[0])
            else:
                raise WorkerError(f"unknown call {name!r}")
            reply_bytes = dumps(reply)
            send_frame(sock, _REPLY + reply_bytes)
            if name == "snapshot":
                # Pickling read every object's __dict__, which on CPython 3.11 leaves their
                # attributes out of inline storage for good: the models would run ~10%
                # slower from the first checkpoint on. The copy just sent is the same
                # state with them inline (see fast_restore); go on from it.
                with deep_recursion():
                    core = _live(pickle.loads(memoryview(reply_bytes)))
    except (BrokenPipeError, ConnectionResetError):
        return  # the service is gone
    except BaseException:
        with contextlib.suppress(OSError):
            send_frame(sock, _ERROR + traceback.format_exc().encode())
        raise
    finally:
        sock.close()


def start_worker(
    own_process: bool, log_level: str, log_format: str, timeout_s: float = 300.0
) -> ModelWorker:
    """A model process, or the service's own thread (`learner_model_process` setting)."""
    if not own_process:
        return InlineWorker()
    worker = ProcessWorker(log_level, log_format, timeout_s)
    log.info("model process started", extra={"fields": {"pid": worker.pid}})
    return worker
