"""The model snapshot a scorer serves, kept current by a thread of its own.

The thread reads the published version every `poll_s` (one small Redis read) and, when it
changed, loads and verifies the new snapshot beside the one serving, then swaps the
reference: scoring never waits for an unpickle, and a batch is scored by one snapshot
from its first record to its last. A pinned version is loaded once and kept.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from shared.checkpoint.codec import CheckpointFormatError, CheckpointTamperedError
from shared.served_versions import ServedVersions
from shared.snapshot import ModelSnapshot, NoSnapshotError, SnapshotFormatError, SnapshotStore

log = logging.getLogger(__name__)

# A snapshot that cannot be read (another format, a wrong key): the one serving stays, and
# the reason is logged once per version.
UNREADABLE = (SnapshotFormatError, CheckpointTamperedError, CheckpointFormatError)


class SnapshotFollower:
    def __init__(
        self,
        store: SnapshotStore,
        pinned: int | None,
        poll_s: float,
        served: ServedVersions | None = None,
    ) -> None:
        self.store = store
        self.pinned = pinned
        self.poll_s = poll_s
        self.served = served  # where the version serving is told, at each poll
        self.current: ModelSnapshot | None = None
        self.published_at: float | None = None  # of `current`, Unix seconds
        self.error: Exception | None = None  # what stops the scorer (a pinned version gone)
        self._refused: int | None = None  # the last version refused, logged once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="snapshot-follower", daemon=True)

    def wait_first(self, stop: threading.Event) -> ModelSnapshot | None:
        """Block until a snapshot is loaded (None if stopped first): a scorer joins its
        consumer group only when it can score."""
        said = False
        while not stop.is_set():
            self.refresh()
            if self.error is not None:
                raise self.error
            if self.current is not None:
                return self.current
            if not said:
                log.info("waiting for the learner's first model snapshot")
                said = True
            stop.wait(self.poll_s)
        return None

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.served is not None:
            self.served.remove()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()
            if self.served is not None and self.current is not None:
                self.served.write(self.current.version, self.pinned is not None)

    def refresh(self) -> bool:
        """Load the wanted snapshot if it is not the one serving; True when swapped."""
        try:
            wanted = self.pinned if self.pinned is not None else self.store.version()
            current = self.current
            if wanted is None or (current is not None and current.version == wanted):
                return False
            if wanted == self._refused:
                return False
            snapshot = self.store.load(self.pinned)
            published_at = self.store.published_at(self.pinned)
        except NoSnapshotError as exc:
            if self.pinned is not None:
                self.error = exc  # a pinned version not kept never comes back
            return False
        except UNREADABLE as exc:
            self._refused = wanted
            log.error(
                "model snapshot not served; the previous one stays",
                extra={"fields": {"version": wanted, "error": str(exc)}},
            )
            return False
        except redis.RedisError as exc:
            log.warning(
                "model snapshot not read; the one serving stays",
                extra={"fields": {"error": str(exc)}},
            )
            return False
        self.current, self.published_at = snapshot, published_at
        log.info(
            "serving model snapshot",
            extra={
                "fields": {
                    "version": snapshot.version,
                    "models": list(snapshot.models),
                    "published_s_ago": round(time.time() - (published_at or time.time()), 3),
                }
            },
        )
        return True
