"""The learner's ownership policy: the holder of the pipeline's lease owns every input
partition. Others wait on hot standby; a holder that lost the lease to another is fenced."""

from __future__ import annotations

import logging
import threading
import time

import redis

from shared.checkpoint.lease import Lease
from shared.checkpoint.store import CheckpointStore
from shared.runtime.ownership import FencedError, StateLostError

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, lease: Lease, ttl_s: float, store: CheckpointStore) -> None:
        self.lease = lease
        self.ttl_s = ttl_s
        self.store = store  # its epoch tells whether another learner took over
        self.epoch: int | None = None  # this learner's, once it owns the pipeline
        self._renewed_at = 0.0

    def wait(self, stop: threading.Event) -> bool:
        """Hot standby: poll the lease until the active learner is gone (or we are stopped)."""
        announced = False
        while not stop.is_set():
            if self.lease.try_acquire():
                self._renewed_at = time.monotonic()
                return True
            if not announced:
                log.info(
                    "standby: another learner holds the lease",
                    extra={"fields": {"holder": self.lease.holder()}},
                )
                announced = True
            stop.wait(min(0.5, self.ttl_s / 4))
        return False

    def keep(self, force: bool = False) -> None:
        """Renew every third of the TTL. A lease that lapsed while nobody else took over
        (a long pause) is taken back; if someone did, this learner is fenced."""
        now = time.monotonic()
        if not force and now - self._renewed_at < self.ttl_s / 3:
            return
        try:
            renewed = self.lease.renew()
        except redis.RedisError as exc:
            if now - self._renewed_at >= self.ttl_s:
                raise FencedError(
                    f"Redis unreachable for {now - self._renewed_at:.1f} s: the lease cannot be "
                    f"renewed, so another learner may own the pipeline ({exc})"
                ) from exc
            log.warning("lease renewal failed; retrying", extra={"fields": {"error": str(exc)}})
            return
        if not renewed:
            self._check_epoch()
            if not self.lease.try_acquire():
                raise FencedError("the lease was lost: another learner holds it")
            try:
                self._check_epoch()
            except FencedError:
                self.lease.release()  # taken over in between: leave it to the new owner
                raise
            log.warning("lease had lapsed with no other owner; taken back")
        self._renewed_at = now

    def _check_epoch(self) -> None:
        """Raise unless the checkpoint store's epoch is still this learner's."""
        current = self.store.current_epoch()
        if current == self.epoch:
            return
        if self.epoch is not None and current < self.epoch:
            raise StateLostError(
                f"state lost: Redis no longer holds the learner's state (its epoch is {current}, "
                f"this learner's {self.epoch}): Redis restarted without persistence, or was "
                "replaced"
            )
        raise FencedError("the lease was lost: another learner took over this pipeline")

    def release(self) -> None:
        try:
            self.lease.release()
        except redis.RedisError as exc:  # it lapses by itself after its TTL
            log.warning("lease not released", extra={"fields": {"error": str(exc)}})
