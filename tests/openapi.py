"""The OpenAPI examples, from real answers: one scenario that calls every operation of the three services
in an order where each has what it needs (a program before its earns, a hold before its capture).

`make examples` runs it against `jifen run --no-demo` on a fresh embedded database and writes what was
sent and answered to `{service}_service/openapi_examples.json`, which services/openapi.py puts on the
operations. tests/services/test_openapi_examples.py runs the same scenario against the test stack and
checks each answer has the recorded status and matches the documented schema.

Names in `{braces}` are filled in from `Run.names` (program codes, member refs: fixed when recording,
unique when replaying, since the test database is shared) and from earlier answers (`save`).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("ledger", "conversion", "catalog")
# Dates that stay valid: a reward's window ends far in the future, so the example redeems as pasted.
FAR_FUTURE = "2099-12-31T16:00:00Z"
CSV_BATCH = (
    "external_id,type,program,member_ref,amount_minor,currency,merchant_id,mcc,channel,occurred_at,points\n"
    "{run}-TX-0001,earn,{P1},m-10001,12345,CNY,M-COFFEE-01,5814,pos,{today},\n"
    "{run}-TX-0002,earn,{P1},m-10002,50000,CNY,M-AIR-7,4511,online,{today},\n"
    "{run}-TX-0003,earn,{P1},m-10003,9900,CNY,,,,{today},99\n"
)


@dataclass
class Step:
    service: str
    op: str  # "METHOD /path/{template}" as in the OpenAPI document
    url: str  # the path to call, with {names}
    body: Any = None
    query: dict[str, Any] | None = None
    idempotent: bool = False  # sends an Idempotency-Key
    save: dict[str, str] = field(default_factory=dict)  # name -> field of the answer
    content_type: str | None = None  # for a body that is not JSON
    summary: str | None = None


def write(service: str, op: str, body: Any, *, url: str | None = None, **fields: Any) -> Step:
    """A step that sends an Idempotency-Key; its `url` is the operation's path unless that has parameters."""
    return Step(service, op, url or op.split(" ", 1)[1], body, idempotent=True, **fields)


def _steps() -> list[Step]:
    L, C, K = "ledger", "conversion", "catalog"
    program = {
        "code": "{P1}",
        "name": "Ping An Wanlitong",
        "cash_value": {"points": 500, "cash_minor": 100, "currency": "CNY"},
        "expiry": {"policy": "rolling", "months": 24},
        "tiers": [{"code": "silver", "min_points": 50000}, {"code": "gold", "min_points": 200000}],
        "timezone": "Asia/Shanghai",
        "expiry_notices_days": [30, 7],
    }
    return [
        Step(L, "GET /healthz", "/healthz"),
        Step(L, "GET /readyz", "/readyz"),
        Step(L, "POST /v1/programs", "/v1/programs", program),
        Step(
            L,
            "POST /v1/programs",
            "/v1/programs",
            {
                "code": "{P2}",
                "name": "Alipay Jifenbao",
                "cash_value": {"points": 100, "cash_minor": 100, "currency": "CNY"},
                "timezone": "Asia/Shanghai",
            },
            summary=None,
        ),
        Step(L, "GET /v1/programs", "/v1/programs", query={"limit": 2}),
        Step(L, "GET /v1/programs/{code}", "/v1/programs/{P1}"),
        Step(L, "PATCH /v1/programs/{code}", "/v1/programs/{P1}", {"name": "Ping An Wanlitong (WLT)"}),
        Step(
            L,
            "POST /v1/programs/{code}/rules",
            "/v1/programs/{P1}/rules",
            {
                "effective_from": "{today}",
                "base": {"points": 1, "per_amount_minor": 100},
                "rules": [
                    {"name": "coffee 10x", "match": {"mcc": "5814"}, "multiplier": 10},
                    {"name": "air travel bonus", "match": {"mcc": ["4511", "3000"]}, "bonus_points": 200},
                ],
                "caps": {"per_transaction": 50000, "per_member_per_day": 100000},
            },
        ),
        Step(L, "GET /v1/programs/{code}/rules", "/v1/programs/{P1}/rules"),
        Step(
            L,
            "POST /v1/programs/{code}/rules/evaluate",
            "/v1/programs/{P1}/rules/evaluate",
            {
                "member_ref": "m-10001",
                "purchase": {"amount_minor": 12345, "currency": "CNY", "mcc": "5814", "channel": "pos"},
            },
        ),
        write(
            L,
            "POST /v1/earn",
            {
                "program": "{P1}",
                "member_ref": "m-10001",
                "purchase": {
                    "amount_minor": 12345,
                    "currency": "CNY",
                    "merchant_id": "M-COFFEE-01",
                    "mcc": "5814",
                },
                "kind": "purchase",
                "reference": "pos-42-order-7781",
            },
            save={"earn": "id"},
        ),
        write(
            L,
            "POST /v1/earn",
            {
                "program": "{P1}",
                "member_ref": "m-10002",
                "points": 20000,
                "kind": "bonus",
                "reference": "welcome",
            },
        ),
        write(
            L,
            "POST /v1/burn",
            {"program": "{P1}", "member_ref": "m-10001", "points": 200, "reference": "order-7790"},
            save={"burn": "id"},
        ),
        write(
            L,
            "POST /v1/holds",
            {
                "program": "{P1}",
                "member_ref": "m-10001",
                "points": 500,
                "reference": "cart-981",
                "expires_in_s": 900,
            },
            save={"hold": "id"},
        ),
        write(
            L,
            "POST /v1/holds/{hold_id}/capture",
            {"points": 400},
            url="/v1/holds/{hold}/capture",
            save={"capture": "id"},
        ),
        write(
            L,
            "POST /v1/holds",
            {"program": "{P1}", "member_ref": "m-10001", "points": 300, "reference": "cart-982"},
            save={"hold2": "id"},
        ),
        write(L, "POST /v1/holds/{hold_id}/void", {"reason": "cart abandoned"}, url="/v1/holds/{hold2}/void"),
        Step(L, "GET /v1/holds/{hold_id}", "/v1/holds/{hold}"),
        write(
            L,
            "POST /v1/transactions/{transaction_id}/reverse",
            {"points": 100, "reason": "item returned"},
            url="/v1/transactions/{capture}/reverse",
        ),
        write(
            L,
            "POST /v1/transfers",
            {
                "program": "{P1}",
                "from_member_ref": "m-10002",
                "to_member_ref": "m-10003",
                "points": 1000,
                "reference": "family-pool",
            },
        ),
        write(
            L,
            "POST /v1/adjustments",
            {"program": "{P1}", "member_ref": "m-10003", "points": 50, "reason": "goodwill: ticket 5521"},
        ),
        Step(L, "GET /v1/programs/{code}/members/{member_ref}", "/v1/programs/{P1}/members/m-10001"),
        Step(
            L,
            "GET /v1/programs/{code}/members/{member_ref}/transactions",
            "/v1/programs/{P1}/members/m-10001/transactions",
            query={"limit": 2},
        ),
        Step(
            L, "GET /v1/programs/{code}/members/{member_ref}/tiers", "/v1/programs/{P1}/members/m-10001/tiers"
        ),
        Step(L, "GET /v1/transactions/{transaction_id}", "/v1/transactions/{earn}"),
        Step(L, "GET /v1/programs/{code}/report", "/v1/programs/{P1}/report"),
        Step(
            L, "GET /v1/programs/{code}/liability", "/v1/programs/{P1}/liability", query={"period": "month"}
        ),
        Step(L, "GET /v1/programs/{code}/liability/aging", "/v1/programs/{P1}/liability/aging"),
        Step(L, "GET /v1/programs/{code}/cohorts", "/v1/programs/{P1}/cohorts"),
        Step(L, "POST /v1/jobs/profiles", "/v1/jobs/profiles", query={"program": "{P1}"}),
        Step(
            L,
            "GET /v1/programs/{code}/members/{member_ref}/profile",
            "/v1/programs/{P1}/members/m-10001/profile",
        ),
        Step(L, "POST /v1/jobs/notices", "/v1/jobs/notices", query={"program": "{P1}"}),
        Step(
            L,
            "POST /v1/programs/{code}/segments",
            "/v1/programs/{P1}/segments",
            {
                "code": "coffee_fans",
                "name": "Coffee drinkers who have not redeemed",
                "criteria": {
                    "all": [
                        {"field": "mcc", "op": "eq", "value": "5814"},
                        {"field": "tag", "op": "eq", "value": "never_redeemed"},
                    ]
                },
            },
        ),
        Step(L, "GET /v1/programs/{code}/segments", "/v1/programs/{P1}/segments"),
        Step(
            L,
            "POST /v1/programs/{code}/segments/{segment}/refresh",
            "/v1/programs/{P1}/segments/coffee_fans/refresh",
        ),
        Step(L, "GET /v1/programs/{code}/segments/{segment}", "/v1/programs/{P1}/segments/coffee_fans"),
        Step(
            L,
            "GET /v1/programs/{code}/segments/{segment}/members",
            "/v1/programs/{P1}/segments/coffee_fans/members",
        ),
        Step(
            L,
            "POST /v1/partners",
            "/v1/partners",
            {"code": "{PA}", "name": "China Eastern Airlines", "roles": ["issuer", "acceptor"]},
        ),
        Step(L, "GET /v1/partners", "/v1/partners", query={"limit": 2}),
        Step(L, "PATCH /v1/partners/{code}", "/v1/partners/{PA}", {"name": "China Eastern"}),
        Step(L, "GET /v1/partners/{code}", "/v1/partners/{PA}"),
        Step(
            L,
            "PUT /v1/partners/{code}/terms/{program}",
            "/v1/partners/{PA}/terms/{P1}",
            {
                "issue_price": {"points": 100, "cash_minor": 25},
                "accept_price": {"points": 100, "cash_minor": 20},
                "currency": "CNY",
                "period": "monthly",
                "funding": "prepaid",
            },
        ),
        Step(L, "GET /v1/partners/{code}/terms", "/v1/partners/{PA}/terms"),
        write(
            L,
            "POST /v1/partners/{code}/fundings",
            {"program": "{P1}", "points": 1000000, "cash_minor": 250000, "reference": "PO-2026-118"},
            url="/v1/partners/{PA}/fundings",
        ),
        write(
            L,
            "POST /v1/earn",
            {
                "program": "{P1}",
                "member_ref": "m-10004",
                "points": 3000,
                "reference": "flight MU5101",
                "partner": "{PA}",
            },
        ),
        Step(L, "GET /v1/partners/{code}/position", "/v1/partners/{PA}/position"),
        Step(L, "POST /v1/settlements", "/v1/settlements", save={"settlement": "id"}),
        Step(L, "GET /v1/settlements", "/v1/settlements", query={"limit": 2}),
        Step(L, "GET /v1/settlements/{settlement_id}", "/v1/settlements/{settlement}"),
        Step(L, "GET /v1/partners/{code}/statements", "/v1/partners/{PA}/statements"),
        write(L, "POST /v1/batches", CSV_BATCH, content_type="text/csv", save={"batch": "id"}),
        Step(L, "GET /v1/batches", "/v1/batches", query={"limit": 2}),
        Step(L, "GET /v1/batches/{batch_id}", "/v1/batches/{batch}"),
        Step(L, "GET /v1/batches/{batch_id}/rejections", "/v1/batches/{batch}/rejections"),
        Step(L, "GET /v1/events", "/v1/events", query={"limit": 2}),
        Step(
            L,
            "POST /v1/webhooks",
            "/v1/webhooks",
            {"url": "http://127.0.0.1:9/jifen/events", "programs": ["{P1}"], "types": ["earn", "burn"]},
            save={"webhook": "id"},
        ),
        Step(L, "GET /v1/webhooks", "/v1/webhooks"),
        Step(L, "GET /v1/webhooks/{webhook_id}", "/v1/webhooks/{webhook}"),
        Step(L, "DELETE /v1/webhooks/{webhook_id}", "/v1/webhooks/{webhook}"),
        Step(
            L,
            "POST /v1/api-keys",
            "/v1/api-keys",
            {
                "name": "pos-terminals",
                "scopes": ["ledger:read", "ledger:earn", "ledger:burn"],
                "programs": ["{P1}"],
            },
            save={"key1": "id"},
        ),
        Step(
            L,
            "POST /v1/api-keys",
            "/v1/api-keys",
            {"name": "reporting", "scopes": ["ledger:read"]},
            save={"key2": "id"},
        ),
        Step(L, "GET /v1/api-keys", "/v1/api-keys", query={"limit": 2}),
        Step(L, "GET /v1/api-keys/{key_id}", "/v1/api-keys/{key1}"),
        Step(L, "POST /v1/api-keys/{key_id}/rotate", "/v1/api-keys/{key1}/rotate"),
        Step(L, "POST /v1/api-keys/{key_id}/revoke", "/v1/api-keys/{key2}/revoke"),
        Step(L, "POST /v1/jobs/expire", "/v1/jobs/expire", query={"program": "{P1}"}),
        Step(L, "POST /v1/jobs/tier-review", "/v1/jobs/tier-review"),
        # conversion
        Step(C, "GET /healthz", "/healthz"),
        Step(C, "GET /readyz", "/readyz"),
        Step(
            C,
            "PUT /v1/rates/{from_program}/{to_program}",
            "/v1/rates/{P1}/{P2}",
            {"from_points": 5, "to_points": 1, "fee_bps": 200, "min_from_points": 500},
        ),
        Step(C, "GET /v1/rates/{from_program}/{to_program}", "/v1/rates/{P1}/{P2}"),
        Step(C, "GET /v1/rates", "/v1/rates", query={"from_program": "{P1}"}),
        Step(C, "GET /v1/rates/{from_program}/{to_program}/versions", "/v1/rates/{P1}/{P2}/versions"),
        Step(
            C,
            "PUT /v1/programs/{code}/settings",
            "/v1/programs/{P2}/settings",
            {"allow_derived_rates": False},
        ),
        Step(C, "GET /v1/programs/{code}/settings", "/v1/programs/{P2}/settings"),
        Step(
            C,
            "POST /v1/quotes",
            "/v1/quotes",
            {"from_program": "{P1}", "to_program": "{P2}", "member_ref": "m-10002", "from_points": 5000},
            save={"quote": "id"},
        ),
        Step(C, "GET /v1/quotes/{quote_id}", "/v1/quotes/{quote}"),
        write(C, "POST /v1/conversions", {"quote_id": "{quote}"}, save={"conv": "id"}),
        Step(C, "GET /v1/conversions/{conversion_id}", "/v1/conversions/{conv}"),
        Step(C, "GET /v1/conversions", "/v1/conversions", query={"member_ref": "m-10002"}),
        Step(C, "POST /v1/valuations", "/v1/valuations", {"program": "{P1}", "points": 5000}),
        Step(
            C,
            "POST /v1/valuations",
            "/v1/valuations",
            {"program": "{P1}", "cash_minor": 3000, "currency": "CNY"},
        ),
        # catalog
        Step(K, "GET /healthz", "/healthz"),
        Step(K, "GET /readyz", "/readyz"),
        Step(
            K,
            "POST /v1/rewards",
            "/v1/rewards",
            {
                "sku": "{SKU}",
                "name": "Luckin latte voucher",
                "type": "voucher",
                "program": "{P1}",
                "price_points": 800,
                "cash_price_minor": 500,
                "currency": "CNY",
                "per_member_limit": 5,
                "active_to": FAR_FUTURE,
            },
        ),
        Step(K, "GET /v1/rewards", "/v1/rewards", query={"program": "{P1}", "affordable_for": "m-10001"}),
        Step(K, "PATCH /v1/rewards/{sku}", "/v1/rewards/{SKU}", {"price_points": 600}),
        Step(K, "GET /v1/rewards/{sku}", "/v1/rewards/{SKU}"),
        Step(
            K,
            "POST /v1/rewards/{sku}/codes",
            "/v1/rewards/{SKU}/codes",
            {"codes": ["{run}-LK-7Q2M-0001", "{run}-LK-7Q2M-0002", "{run}-LK-7Q2M-0003"]},
        ),
        write(
            K,
            "POST /v1/redemptions",
            {"sku": "{SKU}", "program": "{P1}", "member_ref": "m-10001", "quantity": 1},
            save={"redemption": "id"},
        ),
        Step(K, "GET /v1/redemptions/{redemption_id}", "/v1/redemptions/{redemption}"),
        Step(K, "GET /v1/redemptions", "/v1/redemptions", query={"member_ref": "m-10001"}),
        write(
            K,
            "POST /v1/redemptions/{redemption_id}/cancel",
            {"reason": "ordered by mistake"},
            url="/v1/redemptions/{redemption}/cancel",
        ),
    ]


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format_map(names) if "{" in value else value
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


@dataclass
class Call:
    step: Step
    request: Any
    status: int
    response: Any
    content_type: str


def names(*, unique: bool) -> dict[str, str]:
    now = datetime.now(UTC)
    tag = secrets.token_hex(3).upper() if unique else ""
    return {
        "P1": f"WLT{tag}" if unique else "WLT",
        "P2": f"JFB{tag}" if unique else "JFB",
        "PA": f"CEA{tag}" if unique else "CEA",
        "SKU": f"LUCKIN-LATTE-{tag}" if unique else "LUCKIN-LATTE",
        "run": tag or "2026",
        "now": now.isoformat().replace("+00:00", "Z"),
        "today": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def run(urls: dict[str, str], key: str, values: dict[str, str]) -> Iterator[Call]:
    """Each step in turn, against the services at `urls`; yields what was sent and answered."""
    values = dict(values)
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for step in _steps():
            body = _fill(step.body, values)
            headers = {"Idempotency-Key": "example-" + secrets.token_hex(8)} if step.idempotent else {}
            kwargs: dict[str, Any] = {"params": _fill(step.query, values), "headers": headers}
            if step.content_type is not None:
                headers["Content-Type"] = step.content_type
                kwargs["content"] = body.encode()
            elif body is not None:
                kwargs["json"] = body
            method = step.op.split(" ", 1)[0]
            r = client.request(method, urls[step.service] + _fill(step.url, values), **kwargs)
            ctype = r.headers.get("content-type", "").split(";")[0]
            answer: Any = r.json() if "json" in ctype else r.text
            for name, field_name in step.save.items():
                assert r.is_success, f"{step.op}: {r.status_code} {r.text}"
                values[name] = str(answer[field_name])
            yield Call(step, body, r.status_code, answer, ctype)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def jifen_run(
    root: Path = ROOT, *, demo: bool = True, data_dir: Path | None = None
) -> Iterator[tuple[dict[str, str], str]]:
    """`jifen run` from checkout `root` on a fresh embedded database and free ports: (urls, admin key)."""
    workdir = Path(tempfile.mkdtemp(prefix="jifen-run-"))
    key = "adm_" + secrets.token_hex(16)
    ports = {s: _free_port() for s in SERVICES}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    env.update(
        PYTHONPATH=str(root),
        JIFEN_DATA_DIR=str(data_dir or workdir / "data"),
        JIFEN_ADMIN_API_KEY=key,
        JIFEN_ACCESS_LOG="false",
        JIFEN_LOG_LEVEL="WARNING",
        **{f"JIFEN_{s.upper()}_PORT": str(p) for s, p in ports.items()},
    )
    cmd = [sys.executable, "-m", "services.cli", "run", "--workers", "1", *([] if demo else ["--no-demo"])]
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline, lines = time.monotonic() + 180, list[str]()
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("jifen run exited:\n" + "".join(lines[-40:]))
            lines.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        else:
            raise RuntimeError("jifen run did not start:\n" + "".join(lines[-40:]))
        yield {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}, key
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group `jifen run` leads: it and its services only
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# schema conformance only: the 5xx hunt is tests/services/test_api_fuzz.py's
CHECKS = (
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


# Left out of every schemathesis run: a webhook it subscribed would have the ledger POST events to
# whatever URL it generated (requests must not leave the machine), and revoking or rotating small key
# ids would revoke the keys of the services and tests sharing the database.
# tests/services/test_openapi_examples.py checks these operations' answers against their schemas.
NOT_FUZZED = r"^/v1/webhooks$|^/v1/api-keys/\{key_id\}/(revoke|rotate)$"


def schemathesis_run(url: str, key: str, *, max_examples: int, workdir: Path) -> dict[str, Any]:
    """A bounded, seeded schemathesis run against one service (but NOT_FUZZED): its unique failures,
    by kind, and where they were found (the full text is in `workdir`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / f"st-{secrets.token_hex(4)}.json"
    cmd = [
        str(Path(sys.executable).with_name("st")), "run", f"{url}/openapi.json",
        "--checks", ",".join(CHECKS), "--max-examples", str(max_examples),
        "--phases", "examples,coverage,fuzzing", "--seed", "1", "--workers", "1", "--no-shrink",
        "--continue-on-failure", "--request-timeout", "60", "-H", f"Authorization: Bearer {key}",
        "--report", "json", "--report-json-path", str(report),
        "--exclude-path-regex", NOT_FUZZED,
    ]  # fmt: skip
    # in workdir: schemathesis keeps a cache folder where it runs
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800, check=False)
    output = workdir / f"{report.stem}.txt"
    output.write_text(done.stdout + done.stderr)
    if not report.exists():
        raise RuntimeError(f"schemathesis wrote no report:\n{(done.stdout + done.stderr)[-3000:]}")
    data = json.loads(report.read_text())
    failures = data.get("failures", [])
    return {
        "failures": data["test_cases"]["unique_failures"],
        "operations_failing": len({op for f in failures for op in f.get("operations", [])}),
        "operations_tested": data["operations"]["tested"],
        "by_kind": {f"{f['code']} {f['title']}": f["count"] for f in failures},
        "errors": len(data.get("errors", [])),
        "error_details": data.get("errors", []),
        "output": str(output),
    }


def _redact(value: Any) -> Any:
    """No key secret goes into the repository, not even one from a throwaway database."""
    if isinstance(value, dict):
        return {k: "jf_EXAMPLE_NOT_A_REAL_KEY" if k == "secret" else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def examples_path(service: str) -> Path:
    return ROOT / f"{service}_service" / "openapi_examples.json"


def record() -> int:
    """Runs the scenario and writes the examples; the first successful answer of each operation wins."""
    found: dict[str, dict[str, Any]] = {s: {} for s in SERVICES}
    with jifen_run(demo=False) as (urls, key):
        for call in run(urls, key, names(unique=False)):
            if call.status >= 400:
                print(f"{call.step.op}: {call.status} {call.response}", file=sys.stderr)
                return 1
            if call.step.op in found[call.step.service]:
                continue
            example: dict[str, Any] = {"summary": call.step.summary or "Recorded from a real answer"}
            if call.request is not None:
                example["request"] = call.request
                if call.step.content_type:
                    example["request_content_type"] = call.step.content_type
            example["status"] = call.status
            example["response"] = _redact(call.response)
            if call.content_type != "application/json":
                example["response_content_type"] = call.content_type
            found[call.step.service][call.step.op] = example
    for service, examples in found.items():
        examples_path(service).write_text(json.dumps(examples, indent=2, ensure_ascii=False) + "\n")
        print(f"{examples_path(service).relative_to(ROOT)}: {len(examples)} operations")
    return 0


if __name__ == "__main__":
    sys.exit(record())
