"""Prometheus helpers: one registry per service, names by Prometheus conventions.

Each service builds its metrics on its own `CollectorRegistry` so that several services
(or tests) in one process never collide on the default global registry.

Every stream service (ingest, features, learner, monitor) exports `StreamMetrics`, one
contract under `headwater_<service>_…` (the README's "Metrics" section lists it; the alert
rules and the dashboard are written against these names):

  records_total{outcome}                input records by what became of them
  records_out_total{topic}              records written, by output topic
  dead_letters_total{reason}            records dead-lettered, by reason code
  batch_processing_seconds              time to handle one consumed batch
  consumer_lag{topic,partition}         records behind the high watermark, per partition
  checkpoint_seconds                    time to write a checkpoint
  checkpoint_bytes                      size of the state last checkpointed
  checkpoint_age_seconds                since the last successful checkpoint (at scrape time)
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Checkpoints of large models take seconds: the latency buckets would put them all in +Inf.
CHECKPOINT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A histogram's name ends with its unit; `_events` counts stream positions (a label's lag).
HISTOGRAM_UNITS = ("_seconds", "_bytes", "_events")
INF = float("inf")


def _check_histogram_name(name: str) -> None:
    if not name.endswith(HISTOGRAM_UNITS):
        raise ValueError(
            f"histogram {name!r} must end with a unit ({', '.join(HISTOGRAM_UNITS[:-1])} "
            f"or {HISTOGRAM_UNITS[-1]})"
        )


class BulkHistogram(Collector):
    """A histogram that takes many observations in one call (`observe(value, n)`,
    `observe_all(values)`), for counts gathered per batch on a hot path: a
    `prometheus_client.Histogram` can only observe one value at a time. Exposed exactly as a
    histogram is (`_bucket`, `_count`, `_sum`)."""

    def __init__(self, name: str, doc: str, buckets: Iterable[float]) -> None:
        self.name, self.doc = name, doc
        self._bounds = sorted(float(b) for b in buckets)
        if self._bounds[-1] != INF:
            self._bounds.append(INF)
        self._counts = [0] * len(self._bounds)  # per bucket, not cumulative
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float, n: int = 1) -> None:
        """`n` observations of `value`."""
        if n <= 0:
            return
        i = bisect.bisect_left(self._bounds, value)
        with self._lock:
            self._counts[i] += n
            self._sum += value * n

    def observe_all(self, values: Iterable[float]) -> None:
        where = bisect.bisect_left
        bounds, counts = self._bounds, self._counts
        with self._lock:
            for value in values:
                counts[where(bounds, value)] += 1
                self._sum += value

    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    def totals(self) -> tuple[float, int]:
        """The sum and the number of the observations so far."""
        with self._lock:
            return self._sum, sum(self._counts)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, n in zip(self._bounds, counts, strict=True):
            running += n
            cumulative.append(("+Inf" if bound == INF else repr(bound), float(running)))
        family = HistogramMetricFamily(self.name, self.doc)
        family.add_metric([], cumulative, total)
        yield family


@dataclass
class ServiceMetrics:
    """Factory of `headwater_<service>_…` metrics on a private registry."""

    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def _name(self, name: str) -> str:
        return f"headwater_{self.service}_{name}"

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end with _total")
        # prometheus_client appends _total itself.
        return Counter(self._name(name[: -len("_total")]), doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(self._name(name), doc, labels, registry=self.registry)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> Histogram:
        _check_histogram_name(name)
        return Histogram(self._name(name), doc, labels, registry=self.registry, buckets=buckets)

    def bulk_histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> BulkHistogram:
        """A histogram without labels that takes a batch's observations in one call."""
        _check_histogram_name(name)
        histogram = BulkHistogram(self._name(name), doc, buckets)
        self.registry.register(histogram)
        return histogram

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics on `port`; 0 leaves the exporter off."""
        if port:
            start_http_server(port, addr=addr, registry=self.registry)
            log.info("metrics exporter listening", extra={"fields": {"port": port}})


class CheckpointMetrics:
    """checkpoint_seconds, checkpoint_bytes and checkpoint_age_seconds. The age is computed
    at scrape time: since the last successful checkpoint (or the service's start), while
    applied records wait for a checkpoint; 0 when none do."""

    def __init__(self, m: ServiceMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = m.histogram(
            "checkpoint_seconds", "Time to write a checkpoint.", buckets=CHECKPOINT_BUCKETS
        )
        self.bytes = m.gauge(
            "checkpoint_bytes",
            "Size of the state last checkpointed: the blob, or with a checkpoint per input "
            "partition the sum of the owned partitions' last blobs.",
        )
        self.age = m.gauge(
            "checkpoint_age_seconds",
            "Seconds since the last successful checkpoint (since the start before the first) "
            "while records wait for one; 0 when every record applied is checkpointed.",
        )
        self._clock = clock
        self.last_success = clock()
        # Records applied and not yet checkpointed, as the service counts them (set by the
        # service). An idle service has nothing to lose: its age is 0, not an alert.
        self.unsaved: Callable[[], int] | None = None
        self.age.set_function(self._age)

    def _age(self) -> float:
        """Read in the exporter's thread: the service's count may be mid-change, and then
        the plain age since the last checkpoint stands."""
        try:
            if self.unsaved is not None and self.unsaved() == 0:
                return 0.0
        except RuntimeError:  # a dict of partitions changed size while summed
            pass
        return self._clock() - self.last_success

    def written(self, seconds: float, nbytes: int) -> None:
        """A checkpoint succeeded: it took `seconds`; the checkpointed state is `nbytes`."""
        self.last_success = self._clock()
        self.seconds.observe(seconds)
        self.bytes.set(nbytes)


@dataclass
class StreamMetrics:
    """The metrics every stream service exports (see the module's docstring)."""

    records: Counter
    records_out: Counter
    dead_letters: Counter
    batch_seconds: Histogram
    consumer_lag: Gauge
    checkpoint: CheckpointMetrics

    @classmethod
    def create(cls, m: ServiceMetrics, outcomes: str) -> StreamMetrics:
        """`outcomes`: the values of records_total's `outcome` label, for its help text."""
        return cls(
            records=m.counter(
                "records_total", f"Input records by outcome: {outcomes}.", ("outcome",)
            ),
            records_out=m.counter("records_out_total", "Records written, by topic.", ("topic",)),
            dead_letters=m.counter(
                "dead_letters_total", "Records dead-lettered, by reason.", ("reason",)
            ),
            batch_seconds=m.histogram("batch_processing_seconds", "Time to handle one batch."),
            consumer_lag=m.gauge(
                "consumer_lag",
                "Records behind the partition's high watermark, per assigned input partition.",
                ("topic", "partition"),
            ),
            checkpoint=CheckpointMetrics(m),
        )


def serve_metrics(service: str, settings: Settings) -> ServiceMetrics:
    """A service's metrics, exposed on HEADWATER_METRICS_PORT (once per process: they
    outlive the service's restarts)."""
    metrics = ServiceMetrics(service)
    metrics.serve(settings.metrics_port)
    return metrics
