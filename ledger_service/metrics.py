"""The ledger's own Prometheus metrics. They join the process's default registry at import, so the
shared `/metrics` route (services/metrics.py `render`) exposes them beside the HTTP metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LEDGER_OPERATIONS = Counter(
    "jifen_ledger_operations_total", "Ledger write operations by outcome", ["op", "outcome"]
)
LEDGER_POINTS = Counter("jifen_ledger_points_total", "Points moved by successful operations", ["op"])
LEDGER_BATCH_SIZE = Histogram(
    "jifen_ledger_batch_size",
    "Requests applied per database transaction by the ledger's group commit",
    buckets=(1, 2, 4, 8, 16, 32, 48, 64),
)
