"""The pipeline registry (`headwater:pipelines`, shared/keys.py) filled from what a Redis
written before it holds.

Services register their pipeline with every status or alert write, so requests read the
registry and never scan the keyspace. A Redis whose pipelines were written by an older
Headwater has no registry, or one that misses them (a rolling upgrade: the new services
register their pipelines, a stopped pipeline's checkpoints never will). So the API scans
once, at each start, in a thread of its own, for the marks pipelines have always left
(`pipeline_patterns`) and registers what it finds: SADD is idempotent, the scan costs one
start-up, never a request, and a Redis that is down at start is scanned once it answers.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

import redis

from shared.keys import PIPELINES, pipeline_of, pipeline_patterns

log = logging.getLogger(__name__)

PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")  # the spec schema's pattern


def valid_names(names: Iterable[bytes | str]) -> list[str]:
    """Pipeline names, sorted, without any a spec could not have (a stray member)."""
    decoded = (n.decode() if isinstance(n, bytes) else n for n in names)
    return sorted({n for n in decoded if PIPELINE_NAME.match(n)})


def pipelines_in(keys: Iterable[bytes | str]) -> list[str]:
    """The pipelines that keys (matches of `pipeline_patterns`) belong to."""
    return valid_names(pipeline_of(k.decode() if isinstance(k, bytes) else k) for k in keys)


def fill_registry(client: redis.Redis) -> list[str]:
    """Register every pipeline an older Headwater left marks of; the names found."""
    keys = [k for p in pipeline_patterns() for k in client.scan_iter(match=p, count=1000)]
    found = pipelines_in(keys)
    if found:
        client.sadd(PIPELINES, *found)
    return found


class RegistryFill:
    """`fill_registry` once, in a daemon thread, retried every `retry_s` until Redis
    answers (or `stop`)."""

    def __init__(self, client: redis.Redis, retry_s: float = 5.0) -> None:
        self.client = client
        self.retry_s = retry_s
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-fill", daemon=True)

    def start(self) -> RegistryFill:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                found = fill_registry(self.client)
            except redis.RedisError as exc:
                log.warning(
                    "pipeline registry not filled yet", extra={"fields": {"error": str(exc)}}
                )
                self._stop.wait(self.retry_s)
                continue
            log.info("pipeline registry filled", extra={"fields": {"found": found}})
            self.done.set()
            return
