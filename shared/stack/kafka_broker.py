"""Apache Kafka as a plain JVM process: one KRaft node (broker + controller) on loopback.

The jars are resolved once through Maven from `ops/kafka/pom.xml` and cached; the storage is
formatted with Kafka's own StorageTool; the broker stays on the same data directory and
ports across `restart()`, as a real broker comes back after a crash (DESIGN §6).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from shared.kafka.admin import wait_for_broker
from shared.stack.processes import (
    BrokerProcess,
    ManagedProcess,
    StackError,
    free_port,
    wait_for_port,
)

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
KAFKA_DIR = REPO / "ops" / "kafka"

# Settings that make one node start and rebalance fast. The limits a client meets stay
# Kafka's defaults (1 MiB records, timestamps at most an hour ahead), but for the smallest
# session timeouts a group takes.
FAST_ONE_NODE: dict[str, str] = {
    "num.partitions": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # The KIP-848 protocol's heartbeats (5 s by default) pace its rebalances.
    "group.consumer.heartbeat.interval.ms": "500",
    "group.consumer.min.heartbeat.interval.ms": "500",
    # ... and a dead member of a KIP-848 group is noticed after 6 s (45 s by default), as
    # with the services' classic session (HEADWATER_SESSION_TIMEOUT_MS).
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.session.timeout.ms": "1000",
    # Tests move a killed member's partitions sooner with a 2 s session (Kafka's floor is 6 s).
    "group.min.session.timeout.ms": "1000",
    "log.cleaner.dedupe.buffer.size": str(2 * 1024 * 1024),  # taken from the heap otherwise
    "auto.create.topics.enable": "false",  # a missing topic is an error, as in production
}


def kafka_version(env_file: Path = REPO / ".env") -> str:
    """KAFKA_VERSION from the repository's .env, which docker-compose reads too."""
    try:
        lines = env_file.read_text().splitlines()
    except OSError as exc:
        raise StackError(
            f"cannot read the pinned Kafka version from {env_file}: {exc}; "
            "run Headwater from its source tree"
        ) from None
    for line in lines:
        name, _, value = line.partition("=")
        if name.strip() == "KAFKA_VERSION" and value.strip():
            return value.strip()
    raise StackError(f"{env_file} does not set KAFKA_VERSION")


def cache_root() -> Path:
    """$HEADWATER_CACHE_DIR, else $XDG_CACHE_HOME/headwater, else ~/.cache/headwater."""
    override = os.environ.get("HEADWATER_CACHE_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "headwater"


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise StackError(
            f"`{name}` not found on PATH: Apache Kafka needs Java 17+ and Maven "
            f"(Debian: apt-get install {package})"
        )
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One resolver at a time (two test sessions, or a stack and a demo, starting at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def kafka_jars(
    version: str | None = None, say: Callable[[str], None] = log.info, timeout: float = 600.0
) -> Path:
    """The folder of the broker's jars, resolved through Maven the first time only."""
    version = version or kafka_version()
    lib = cache_root() / f"kafka-{version}" / "lib"
    with _locked(lib.parent / ".lock"):
        if (lib / f"kafka_2.13-{version}.jar").is_file():
            return lib
        mvn = _tool("mvn", "maven")
        say(f"Downloading Apache Kafka {version} through Maven (first run only)")
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix="lib-", dir=lib.parent))
        argv = [
            mvn,
            "--batch-mode",
            "--quiet",
            "-f",
            str(KAFKA_DIR / "pom.xml"),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            raise StackError(
                f"Maven did not resolve Kafka {version} within {timeout:.0f}s"
            ) from None
        if done.returncode != 0 or not (staging / f"kafka_2.13-{version}.jar").is_file():
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise StackError(
                f"Maven could not download Apache Kafka {version} "
                f"(org.apache.kafka:kafka_2.13, exit code {done.returncode}):\n{tail}"
            )
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)  # whole or absent: an interrupted download is never used
        say(f"  {len(list(lib.glob('*.jar')))} jars in {lib} ({time.monotonic() - started:.0f}s)")
        return lib


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class KafkaBroker(BrokerProcess):
    """A single-node KRaft broker; `start()`, `kill()`, `restart()`, `stop()`."""

    def __init__(
        self,
        port: int | None = None,
        *,
        heap: str = "512m",
        overrides: Mapping[str, str] | None = None,
        listeners: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = (),
        say: Callable[[str], None] = log.info,
    ) -> None:
        """`listeners`: more client listeners, name -> security protocol (e.g.
        {"SECURE": "SASL_SSL"}), each on a free port (`listener_ports`) and configured through
        `overrides` (listener.name.secure.*); PLAINTEXT stays the inter-broker listener.
        `jvm_options`: e.g. system properties (-Dname=value) the broker reads."""
        self.port = port or free_port()
        self.controller_port = free_port()
        self.listeners = dict(listeners or {})
        self.listener_ports = {name: free_port() for name in self.listeners}
        self.jvm_options = list(jvm_options)
        self.heap = heap
        self.overrides = dict(overrides or {})
        self.say = say
        self.data_dir = Path(tempfile.mkdtemp(prefix="headwater-kafka-"))
        self.process: ManagedProcess | None = None
        self._java = ""
        self._lib: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict[str, str]:
        clients = {"PLAINTEXT": self.port, **self.listener_ports}
        advertised = ",".join(f"{name}://127.0.0.1:{port}" for name, port in clients.items())
        protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", **self.listeners}
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"{advertised},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": advertised,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
            "log.dirs": str(self.data_dir / "log"),
            **FAST_ONE_NODE,
        }
        props.update(self.overrides)
        return props

    def _java_cmd(self, main: str, *args: str, heap: str) -> list[str]:
        assert self._lib is not None
        return [
            self._java,
            f"-Xmx{heap}",
            "-Xss1m",
            "-XX:+UseSerialGC",  # one GC thread: the machine's cores belong to the services
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
            *self.jvm_options,
            "-cp",
            f"{self._lib}/*",
            main,
            *args,
        ]

    def start(self, timeout: float = 60.0) -> KafkaBroker:
        self._java = _tool("java", "openjdk-17-jre-headless")
        self._lib = kafka_jars(say=self.say)
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        # Always formatted: it also writes the feature levels the KIP-848 protocol needs.
        fmt = subprocess.run(
            self._java_cmd(
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={_cluster_id()}",  # an id may begin with "-"
                "-c",
                str(config),
                heap="256m",
            ),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if fmt.returncode != 0:
            raise StackError(
                f"kafka-storage format failed (exit code {fmt.returncode}):\n"
                f"{(fmt.stdout + fmt.stderr).strip()[-2000:]}"
            )
        self._launch(timeout)
        return self

    def _launch(self, timeout: float) -> None:
        config = self.data_dir / "server.properties"
        self.process = ManagedProcess(
            "kafka", self._java_cmd("kafka.Kafka", str(config), heap=self.heap)
        )
        if not wait_for_port(self.port, timeout, self.process.proc):
            raise StackError(
                f"Apache Kafka did not start on {self.bootstrap}:\n{self.process.log_tail()}"
            )
        wait_for_broker(self.bootstrap, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash: the data directory stays for `restart()`."""
        if self.process is not None:
            self.process.kill()

    def restart(self, timeout: float = 60.0) -> None:
        """Start again on the same data directory and ports (after `kill()` or `stop()`)."""
        self._stop_process()
        self._launch(timeout)

    def stop(self) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL after 10 s; the data is removed."""
        self._stop_process()
        shutil.rmtree(self.data_dir, ignore_errors=True)
