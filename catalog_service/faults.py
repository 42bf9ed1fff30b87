"""TEST-ONLY fault injection, so tests can kill the catalog between two saga steps.

`JIFEN_CATALOG_FAULT` lists `point` or `point:member_ref` entries, comma-separated. When a redemption
(of that member, or of anyone) reaches `point`, the process exits at once with `os._exit(1)`: no
shutdown hooks, no commit, exactly like a crash. Unset in production; the points are:

- `crash_before_debit`: the redemption is stored as `debiting`, the burn not yet sent;
- `crash_after_debit`: the ledger posted the burn, the catalog has not recorded it;
- `crash_after_refund`: the ledger posted the refund (reversal), the catalog has not recorded it.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("jifen.catalog.faults")

POINTS = frozenset({"crash_before_debit", "crash_after_debit", "crash_after_refund"})


class Faults:
    def __init__(self, spec: str | None) -> None:
        self._rules: list[tuple[str, str | None]] = []
        for raw in (spec or "").split(","):
            entry = raw.strip()
            if not entry:
                continue
            point, _, member = entry.partition(":")
            if point not in POINTS:
                raise ValueError(f"unknown fault point {point!r}; known: {', '.join(sorted(POINTS))}")
            self._rules.append((point, member or None))
        if self._rules:
            log.warning("TEST-ONLY fault injection is on", extra={"faults": spec})

    def hit(self, point: str, member_ref: str) -> None:
        for rule_point, rule_member in self._rules:
            if rule_point == point and rule_member in (None, member_ref):
                log.critical("injected crash", extra={"point": point, "member_ref": member_ref})
                sys.stderr.flush()
                os._exit(1)
