"""Prometheus helpers: one registry per service, names by Prometheus conventions.

Each service builds its metrics on its own `CollectorRegistry` so that several services
(or tests) in one process never collide on the default global registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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
        if not name.endswith("_seconds") and not name.endswith("_bytes"):
            raise ValueError(f"histogram {name!r} must end with a unit (_seconds or _bytes)")
        return Histogram(self._name(name), doc, labels, registry=self.registry, buckets=buckets)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics on `port`; 0 leaves the exporter off."""
        if port:
            start_http_server(port, addr=addr, registry=self.registry)
            log.info("metrics exporter listening", extra={"fields": {"port": port}})
