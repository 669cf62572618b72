"""Start a Tansu broker and a private Redis on free loopback ports, and stop both.

Serves `headwater stack`, `headwater demo` and the integration-test fixtures alike.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from shared.kafka.admin import ensure_topics, wait_for_broker
from shared.redis_store import RedisStore
from shared.settings import TopicNames
from shared.stack.binaries import redis_server_binary, tansu_binary
from shared.stack.processes import ManagedProcess, free_port, wait_for_port

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    pass


def pipeline_topics(topics: TopicNames, partitions: int) -> dict[str, int]:
    """Every topic of a pipeline, all with the same partition count (DESIGN §2)."""
    return {name: partitions for name in topics.model_dump().values()}


class LocalStack:
    """Context manager; `bootstrap` and `redis_url` are valid inside the block."""

    def __init__(
        self,
        topics: Mapping[str, int] | None = None,
        *,
        kafka_port: int | None = None,
        redis_port: int | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.kafka_port = kafka_port or free_port()
        self.redis_port = redis_port or free_port()
        self.topics = dict(topics if topics is not None else pipeline_topics(TopicNames(), 1))
        self.start_timeout = start_timeout
        self.broker: ManagedProcess | None = None
        self.redis: ManagedProcess | None = None
        self._redis_dir = Path(tempfile.mkdtemp(prefix="headwater-redis-"))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self) -> dict[str, str]:
        """Environment that points a Headwater service at this stack."""
        return {"HEADWATER_KAFKA_BOOTSTRAP": self.bootstrap, "HEADWATER_REDIS_URL": self.redis_url}

    def start(self) -> LocalStack:
        try:
            self._start_broker()
            self._start_redis()
            if self.topics:
                ensure_topics(self.bootstrap, self.topics)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_broker(self) -> None:
        url = f"tcp://{self.bootstrap}"
        self.broker = ManagedProcess(
            "tansu",
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
        )
        if not wait_for_port(self.kafka_port, self.start_timeout, self.broker.proc):
            raise StackError(f"Tansu did not start on {self.bootstrap}:\n{self.broker.log_tail()}")
        wait_for_broker(self.bootstrap, self.start_timeout)

    def _start_redis(self) -> None:
        self.redis = ManagedProcess(
            "redis",
            [
                str(redis_server_binary()),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._redis_dir),
                "--daemonize",
                "no",
            ],
        )
        if not wait_for_port(self.redis_port, self.start_timeout, self.redis.proc):
            raise StackError(f"Redis did not start on {self.redis_url}:\n{self.redis.log_tail()}")
        RedisStore(self.redis_url).wait_ready(self.start_timeout)

    def stop(self) -> None:
        for proc in (self.redis, self.broker):
            if proc is not None:
                proc.stop()
                proc.cleanup()
        self.redis = self.broker = None
        shutil.rmtree(self._redis_dir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
