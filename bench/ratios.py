"""The ratios of one `make bench` run: every saga path against earn, from the results the three benchmark
scripts wrote (`--result`), with the targets of issue 17 beside them.

Run with `.venv/bin/python bench/ratios.py DIR` (DIR holds ledger.json, catalog.json, conversion.json).
Exits 0 even when a target is missed: the benchmark measured; whether the figure is good enough is for
the reader (the machine may be shared).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# (what, value, target, whether higher is better)
Row = tuple[str, float | None, float, bool]


def _load(directory: Path, name: str) -> dict[str, Any]:
    path = directory / f"{name}.json"
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())[f"bench_{name}"]
    return data


def _earn(ledger: dict[str, Any]) -> dict[str, Any] | None:
    for case in ledger.get("cases", []):
        if case.get("kind") == "earn" and "error" not in case:
            return dict(case)
    return None


def rows(directory: Path) -> tuple[float | None, list[Row]]:
    ledger, catalog, conversion = (_load(directory, n) for n in ("ledger", "catalog", "conversion"))
    earn = _earn(ledger)
    earn_rps = None if earn is None else float(earn["ok_per_s"])

    def ratio(value: float | None) -> float | None:
        return None if value is None or not earn_rps else value / earn_rps

    conv = conversion.get("conversions_per_s")
    val = conversion.get("valuations", {}).get("valuations_per_s")
    red = catalog.get("redemptions_per_s")
    flash = catalog.get("flash_sale", {})
    out: list[Row] = [
        ("conversion / earn", ratio(conv), 0.25, True),
        ("conversion p99 ms", conversion.get("latency_ms", {}).get("p99"), 50.0, False),
        ("redemption / earn", ratio(red), 0.25, True),
        ("redemption p99 ms", catalog.get("latency_ms", {}).get("p99"), 50.0, False),
        ("valuation / earn", ratio(val), 0.5, True),
        ("flash sale p99 ms", flash.get("latency_ms", {}).get("p99"), 250.0, False),
    ]
    return earn_rps, out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    earn_rps, table = rows(Path(argv[0]))
    print()
    print("ratios of this run" + ("" if earn_rps is None else f" (earn {earn_rps:,.0f} req/s)"))
    for what, value, target, higher in table:
        if value is None:
            print(f"  {what:<20} {'-':>9}   (not measured in this run)")
            continue
        met = value >= target if higher else value < target
        sign = ">=" if higher else "<"
        shown = f"{value:.3f}x" if "/" in what else f"{value:.1f}"
        print(f"  {what:<20} {shown:>9}   target {sign} {target:g}: {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
