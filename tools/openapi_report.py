"""Counts how complete the three services' OpenAPI documents are, and how many schema-conformance
failures schemathesis finds against the running services. Repeatable: the same command on any
checkout (`--root`) gives the same numbers, so a before and an after can be compared.

    python tools/openapi_report.py                      # this checkout, OpenAPI counts only
    python tools/openapi_report.py --schemathesis       # and a bounded, seeded schemathesis run each
    python tools/openapi_report.py --root /tmp/base ... # another checkout (e.g. `git archive main`)

The services are started with `jifen run` from `--root` (embedded PostgreSQL in a temporary folder,
demo data) on free loopback ports; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.openapi import SERVICES, jifen_run, schemathesis_run

METHODS = ("get", "put", "post", "patch", "delete")
COUNTS = (
    "operations",
    "with_body",
    "request_examples",
    "response_examples",
    "both_examples",
    "error_responses",
    "problem_json",
    "listing_codes",
    "http_validation_error",
)


def _has_example(media: dict[str, Any]) -> bool:
    return bool(media.get("example") is not None or media.get("examples"))


def count(spec: dict[str, Any]) -> dict[str, int]:
    """Operations; those with a request example (of those that take a body), with a 2xx response
    example, with both (an operation without a body needs only the response); 4xx/5xx responses, those
    declared as application/problem+json and those listing their codes; HTTPValidationError mentions."""
    c = dict.fromkeys(COUNTS, 0)
    for item in spec.get("paths", {}).values():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            c["operations"] += 1
            body = op.get("requestBody", {}).get("content", {})
            req = True
            if body:
                c["with_body"] += 1
                req = any(_has_example(m) for m in body.values())
                c["request_examples"] += req
            ok = [r for s, r in op.get("responses", {}).items() if s.startswith("2")]
            resp = any(_has_example(m) for r in ok for m in r.get("content", {}).values())
            c["response_examples"] += resp
            c["both_examples"] += req and resp
            for status, r in op.get("responses", {}).items():
                if status[0] not in "45":
                    continue
                c["error_responses"] += 1
                content = r.get("content", {})
                c["problem_json"] += "application/problem+json" in content
                c["listing_codes"] += "x-problem-codes" in r
                c["http_validation_error"] += "HTTPValidationError" in json.dumps(content)
    return c


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--schemathesis", action="store_true")
    parser.add_argument("--max-examples", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="keep schemathesis' reports in this folder")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="jifen-openapi-"))
    results: dict[str, Any] = {}
    with jifen_run(args.root.resolve(), data_dir=workdir / "data") as (urls, key):
        for s in SERVICES:
            results[s] = count(httpx.get(f"{urls[s]}/openapi.json", timeout=30).json())
            if args.schemathesis:
                results[s]["schemathesis"] = schemathesis_run(
                    urls[s], key, max_examples=args.max_examples, workdir=workdir
                )
            print(s, json.dumps(results[s]), flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
