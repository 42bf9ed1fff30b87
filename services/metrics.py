"""Prometheus metrics every service has (HTTP, fast lane) and their rendering. A service's own metrics
live in that service's package (its metrics.py). With several worker processes,
PROMETHEUS_MULTIPROC_DIR aggregates them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

HTTP_REQUESTS = Counter(
    "jifen_http_requests_total", "HTTP requests served", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "jifen_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FAST_LANE = Counter(
    "jifen_fast_lane_requests_total",
    "Requests on a fast-lane path: served by the fast lane, or fallen through to FastAPI",
    ["route", "outcome"],
)


class _WithSamples:
    """A registry's metric families that have samples: a labelled metric no request of this service has
    touched (the fast lane's, in a service without one) is left out instead of shown empty."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            if family.samples:
                yield family


def render() -> tuple[bytes, str]:
    registry: Any = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(_WithSamples(registry)), CONTENT_TYPE_LATEST
