"""Counts how complete the three services' OpenAPI documents are, and how many schema-conformance
failures schemathesis finds against the running services. Repeatable: the same command on any
checkout (`--root`) gives the same kind of numbers, so a before and an after can be compared.

    python tools/openapi_report.py                      # this checkout, OpenAPI counts only
    python tools/openapi_report.py --schemathesis       # and a bounded schemathesis run per service
    python tools/openapi_report.py --root /tmp/base ... # another checkout (e.g. `git archive main`)

The services are started with `jifen run` (embedded PostgreSQL in a temporary folder, demo data),
on free loopback ports; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

SERVICES = ("ledger", "conversion", "catalog")
CHECKS = ",".join(
    (
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)
METHODS = ("get", "put", "post", "patch", "delete")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _has_example(media: dict[str, Any]) -> bool:
    return bool(media.get("example") is not None or media.get("examples"))


def count(spec: dict[str, Any]) -> dict[str, int]:
    """Operations, those with a request example (of those that take a body) and a 2xx response
    example, error responses and those declared as application/problem+json, HTTPValidationError."""
    c = dict.fromkeys(
        (
            "operations",
            "with_body",
            "request_examples",
            "response_examples",
            "both_examples",
            "error_responses",
            "problem_json",
            "listing_codes",
            "http_validation_error",
        ),
        0,
    )
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


def _start(root: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", "--workers", "1"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C to stop." in line:
            return proc
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("jifen run did not start:\n" + "".join(lines[-40:]))


def schemathesis_failures(url: str, key: str, max_examples: int, workdir: Path) -> dict[str, Any]:
    report = workdir / f"st-{secrets.token_hex(4)}.json"
    cmd = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(max_examples),
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "1",
        "--workers",
        "1",
        "--no-shrink",
        "--continue-on-failure",
        "-H",
        f"Authorization: Bearer {key}",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    (workdir / f"{report.stem}.out").write_text(done.stdout + done.stderr)
    if not report.exists():
        return {"error": (done.stdout + done.stderr)[-2000:]}
    data = json.loads(report.read_text())
    return summarize(data)


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Unique failures, by kind, and the operations they were found on."""
    by_kind = {f"{f['code']} {f['title']}": f["count"] for f in data.get("failures", [])}
    operations = {op for f in data.get("failures", []) for op in f.get("operations", [])}
    return {
        "failures": data["test_cases"]["unique_failures"],
        "operations_failing": len(operations),
        "operations_tested": data["operations"]["tested"],
        "by_kind": by_kind,
        "errors": len(data.get("errors", [])),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--schemathesis", action="store_true")
    parser.add_argument("--max-examples", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="keep schemathesis' reports in this folder")
    args = parser.parse_args()
    root = args.root.resolve()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="jifen-openapi-"))
    workdir.mkdir(parents=True, exist_ok=True)
    key = "adm_" + secrets.token_hex(16)
    ports = {s: _free_port() for s in SERVICES}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env.update(
        PYTHONPATH=str(root),
        JIFEN_DATA_DIR=str(workdir / "data"),
        JIFEN_ADMIN_API_KEY=key,
        JIFEN_ACCESS_LOG="false",
        JIFEN_LOG_LEVEL="WARNING",
        **{f"JIFEN_{s.upper()}_PORT": str(p) for s, p in ports.items()},
    )
    proc = _start(root, env)
    results: dict[str, Any] = {}
    try:
        for s in SERVICES:
            url = f"http://127.0.0.1:{ports[s]}"
            spec = httpx.get(f"{url}/openapi.json", timeout=30).json()
            results[s] = count(spec)
            if args.schemathesis:
                results[s]["schemathesis"] = schemathesis_failures(url, key, args.max_examples, workdir)
            print(s, json.dumps(results[s]), flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
