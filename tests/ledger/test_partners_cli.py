"""`jifen partners ...` and `jifen settle` against a ledger process; two `jifen settle` processes at
once close each period once."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import create_program, earn, unique_code


async def _jifen(url: str, key: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, "--url", url, "--key", key,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_operators_commands(client: httpx.AsyncClient, admin_key: str, live_ledger: Any) -> None:
    program = await create_program(client, timezone="Asia/Shanghai")
    code = unique_code("C")
    rc, out = await _jifen(
        live_ledger.url, admin_key, "partners", "create", code, "--roles", "issuer,acceptor"
    )
    assert rc == 0, out
    since = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    rc, out = await _jifen(
        live_ledger.url, admin_key, "partners", "terms", code, program,
        "--issue", "100:80", "--accept", "100:70", "--period", "daily", "--effective-from", since,
    )  # fmt: skip
    assert rc == 0, out
    assert json.loads(out)["issue_price"] == {"points": 100, "cash_minor": 80}
    for d in range(3):
        at = (datetime.now(UTC) - timedelta(days=3 - d)).isoformat()
        await earn(client, program, "cli", 1000, partner=code, occurred_at=at)
    # Two settle processes at once: every period closes once, in one or the other.
    (rc1, out1), (rc2, out2) = await asyncio.gather(
        _jifen(live_ledger.url, admin_key, "settle"), _jifen(live_ledger.url, admin_key, "settle")
    )
    assert rc1 == rc2 == 0, out1 + out2
    mine = [line for line in (out1 + out2).splitlines() if line.startswith(code)]
    closed = (await client.get(f"/v1/partners/{code}/statements")).json()["data"]
    assert len(mine) == len(closed) >= 3
    assert len({x["period_start"] for x in closed}) == len(closed)
    rc, out = await _jifen(live_ledger.url, admin_key, "partners", "statements", code, "--csv")
    assert rc == 0 and out.splitlines()[0].startswith("partner,program,period_start")
    assert sum(int(r.split(",")[4]) for r in out.splitlines()[1:]) == sum(x["points_issued"] for x in closed)
    rc, out = await _jifen(live_ledger.url, admin_key, "partners", "suspend", code)
    assert rc == 0 and json.loads(out)["status"] == "suspended"
