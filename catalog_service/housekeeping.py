"""Background work in every catalog process: drop Idempotency-Keys past their retention (30 days
at least, DESIGN §3; the shared purge keeps a pending key whatever its age). Safe with several
processes: each batch is one statement."""

from __future__ import annotations

from services.db import Database
from services.idempotency import purge_expired_keys
from services.periodic import Periodic

PURGE_EVERY_S = 3600.0


class Housekeeper(Periodic):
    def __init__(self, db: Database, *, retention_days: int, interval_s: float = PURGE_EVERY_S) -> None:
        super().__init__(
            "catalog", [("keys", interval_s, lambda: purge_expired_keys(db, "catalog", retention_days))]
        )
