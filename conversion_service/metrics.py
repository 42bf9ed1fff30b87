"""Prometheus metrics of the conversion service (served by the shared /metrics route)."""

from __future__ import annotations

from prometheus_client import Counter

CONVERSIONS_FINISHED = Counter(
    "jifen_conversions_finished_total", "Conversions that reached a final state", ["state"]
)
SAGA_STEPS = Counter(
    "jifen_conversion_saga_steps_total", "Ledger calls made by conversion sagas", ["step", "outcome"]
)
