"""Schemathesis over each service's OpenAPI, against the three services as real processes on a
database of their own (what the fuzzer creates, revokes or expires touches no other test's data).

`make test` runs a bounded pass (tests/services/test_openapi_fuzz.py: a fixed number of examples
per operation, a fixed seed, deterministic generation); `make fuzz` runs the same with more
examples and the stateful phase (JIFEN_FUZZ_EXAMPLES, JIFEN_FUZZ_PHASES, JIFEN_FUZZ_SEED). The one
check is `not_a_server_error`: any 5xx, or a connection the server drops, fails the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

EXAMPLES = int(os.environ.get("JIFEN_FUZZ_EXAMPLES", "3"))
SEED = int(os.environ.get("JIFEN_FUZZ_SEED", "20261203"))
PHASES = os.environ.get("JIFEN_FUZZ_PHASES", "examples,fuzzing")
MAX_TIME = os.environ.get("JIFEN_FUZZ_MAX_TIME")  # seconds per service, for a long `make fuzz`

# Operations left out: revoking or rotating an API key would end the run's own key (every later
# request a 401, nothing left to fuzz); the console is HTML for people, behind a session cookie.
EXCLUDE_PATHS = r"^/v1/api-keys/|^/console"


@dataclass(frozen=True)
class FuzzRun:
    service: str
    cases: int
    failures: int
    returncode: int
    output: str


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    return int(found.group(1).replace(",", "")) if found else 0


def run_schemathesis(service: str, base_url: str, key: str, report_dir: Path) -> FuzzRun:
    """One `st run` over the service's /openapi.json; its figures read from the JUnit report."""
    junit = report_dir / f"{service}.xml"
    cmd = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--phases",
        PHASES,
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--no-shrink",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--exclude-path-regex",
        EXCLUDE_PATHS,
        "--header",
        f"Authorization: Bearer {key}",
        "--report",
        "junit,har",
        "--report-junit-path",
        str(junit),
        "--report-har-path",
        str(report_dir / f"{service}.har"),
        "--no-color",
        "--warnings",
        "off",
    ]
    if MAX_TIME:
        cmd += ["--max-time", MAX_TIME]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    # In the report folder: schemathesis keeps a cache in its working directory, not in the checkout.
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=1800, check=False, cwd=report_dir
    )
    output = done.stdout + done.stderr
    report = junit.read_text() if junit.exists() else ""
    return FuzzRun(
        service=service,
        cases=_count(r"([\d,]+) (?:test cases|generated)", output),
        failures=_count(r'failures="(\d+)"', report) + _count(r'errors="(\d+)"', report),
        returncode=done.returncode,
        output=output,
    )
