"""The catalog's own Prometheus metrics (served by the shared /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

REDEMPTIONS = Counter(
    "jifen_catalog_redemptions_total",
    "Redemption requests by outcome (fulfilled or a problem code)",
    ["outcome"],
)
