"""`jifen batch upload` (issue 13): a file with rejected rows exits non-zero and prints the reasons with
their counts; a clean file exits 0."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from services.auth import SCOPES, create_api_key
from services.cli import main
from services.db import Database
from tests.conftest import unique_code
from tests.ledger.test_batches import HEADER


async def _setup(database_url: str, base: str) -> tuple[str, str]:
    db = Database(database_url, pool_size=1)
    try:
        _, secret = await create_api_key(db, name="cli-upload", scopes=SCOPES)
    finally:
        await db.dispose()
    code = unique_code()
    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=base, headers=auth) as c:
        body = {"code": code, "name": "cli", "cash_value": {"points": 1, "cash_minor": 1, "currency": "CNY"}}
        assert (await c.post("/v1/programs", json=body)).status_code == 201
    return secret, code


def test_upload_exits_non_zero_with_the_reasons_when_rows_are_rejected(
    live_ledger: Any, database_url: str, tmp_path: Path, capsys: Any
) -> None:
    secret, program = asyncio.run(_setup(database_url, live_ledger.url))
    bad = tmp_path / "bad.csv"
    rows = [
        f"CLI-1,earn,,{program},,m1,,,,,,,10",
        f"CLI-2,earn,,{program},,m1,1000,CNY,,,,,",  # the program has no earning rules
        f"CLI-3,earn,,{program},,m1,2000,CNY,,,,,",
        "garbage",
    ]
    bad.write_text("\n".join([HEADER, *rows]) + "\n")
    argv = ["batch", "upload", str(bad), "--url", live_ledger.url, "--key", secret]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "posted 1" in captured.out and "rejected 3" in captured.out
    reasons = {
        line.split()[0]: line.split()[1] for line in captured.err.splitlines() if line.startswith("  ")
    }
    assert reasons == {"no_earning_rules": "2", "malformed_line": "1"}, captured.err

    good = tmp_path / "good.csv"
    good.write_text(f"{HEADER}\nCLI-9,earn,,{program},,m1,,,,,,,10\n")
    assert main(["batch", "upload", str(good), "--url", live_ledger.url, "--key", secret]) == 0
    assert "rejected 0" in capsys.readouterr().out


def test_the_posting_bar_counts_rows_and_the_upload_bar_bytes() -> None:
    from rich.progress import DownloadColumn, MofNCompleteColumn, Progress

    from ledger_service.cli import _PerUnit

    column = _PerUnit(DownloadColumn(), MofNCompleteColumn())
    progress = Progress(column, disable=True)
    upload = progress.add_task("upload", total=2_000_000, completed=1_000_000)
    posting = progress.add_task("posting", total=200_000, completed=1_234, unit="rows")
    assert "MB" in column.render(progress.tasks[upload]).plain
    assert column.render(progress.tasks[posting]).plain.replace(" ", "") == "1234/200000"
