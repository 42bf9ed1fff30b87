"""`/metrics` shows only series a service has (issue 13: conversion and catalog exposed the fast lane's
empty series, a ledger-only metric)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, sys
importlib.import_module(sys.argv[1])
from services.metrics import render
text = render()[0].decode()
families = [l.split()[2] for l in text.splitlines() if l.startswith("# TYPE")]
empty = [f for f in families if not any(l.startswith(f) for l in text.splitlines() if not l.startswith("#"))]
print("FAMILIES", *families)
print("EMPTY", *empty)
"""


def test_conversion_and_catalog_expose_no_empty_series() -> None:
    for app in ("conversion_service.app", "catalog_service.app"):  # each alone, as `jifen run` runs it
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, app], cwd=ROOT, capture_output=True, text=True, check=True
        )
        lines = dict(line.split(" ", 1) if " " in line else (line, "") for line in done.stdout.splitlines())
        assert lines["EMPTY"] == "", (app, lines)
        assert "jifen_fast_lane" not in lines["FAMILIES"] and "process_cpu_seconds_total" in lines["FAMILIES"]
