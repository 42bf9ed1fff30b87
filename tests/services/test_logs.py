"""Logs (issue 13): JIFEN_LOG_FORMAT=json|text, and an access log line that names the API key and the
problem code of an error, however the error was made."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import httpx
import orjson
from fastapi import APIRouter, Depends

from services.app import build_app
from services.auth import Principal, create_api_key, require
from services.errors import Unprocessable
from services.logs import JsonFormatter, TextFormatter, make_formatter
from services.settings import Settings


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _access_record(**fields: Any) -> logging.LogRecord:
    record = logging.getLogger("jifen.access").makeRecord(
        "jifen.access", logging.INFO, __file__, 1, "request", (), None, extra=fields
    )
    return record


def test_text_is_one_readable_line_per_request_coloured_only_for_a_terminal() -> None:
    record = _access_record(
        method="POST", path="/v1/burn", route="/v1/burn", status=422, duration_ms=3.2,
        code="insufficient_points", api_key_id=7,
    )  # fmt: skip
    plain = TextFormatter("ledger", colour=False).format(record)
    assert "\n" not in plain and "\x1b" not in plain
    assert "ledger" in plain and "POST" in plain and "/v1/burn 422 3.2ms insufficient_points key=7" in plain
    coloured = TextFormatter("ledger", colour=True).format(record)
    assert "\x1b[33m422\x1b[0m" in coloured  # a 4xx in yellow
    ok = TextFormatter("ledger", colour=True).format(
        _access_record(method="GET", path="/healthz", route="/healthz", status=200, duration_ms=0.4)
    )
    assert "\x1b[32m200\x1b[0m" in ok and "key=" not in ok
    other = TextFormatter("ledger", colour=False).format(
        logging.getLogger("jifen.x").makeRecord("jifen.x", logging.WARNING, __file__, 1, "slow", (), None)
    )
    assert "warning jifen.x: slow" in other


class _NotATerminal:
    def isatty(self) -> bool:
        return False


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_the_format_setting_chooses_the_formatter() -> None:
    assert isinstance(make_formatter("ledger", "json", _Terminal()), JsonFormatter)  # type: ignore[arg-type]
    text = make_formatter("ledger", "text", _NotATerminal())  # type: ignore[arg-type]
    assert isinstance(text, TextFormatter) and not text.colour
    assert make_formatter("ledger", "text", _Terminal()).colour  # type: ignore[arg-type, attr-defined]
    assert Settings(log_format="text").log_format == "text"
    line = JsonFormatter("ledger").format(_access_record(status=404, code="not_found", api_key_id=3))
    assert orjson.loads(line)["code"] == "not_found" and orjson.loads(line)["api_key_id"] == 3


async def test_the_access_log_carries_the_key_id_and_the_problem_code(test_settings: Settings) -> None:
    router = APIRouter()

    @router.get("/refuse")
    async def refuse(principal: Annotated[Principal, Depends(require("ledger:read"))]) -> dict[str, str]:
        raise Unprocessable("no", code="insufficient_points")

    @router.get("/fine")
    async def fine(principal: Annotated[Principal, Depends(require("ledger:read"))]) -> dict[str, str]:
        return {"ok": "yes"}

    app = build_app(
        service="logtest", title="t", description="t",
        settings=test_settings.model_copy(update={"access_log": True}), routers=[router],
    )  # fmt: skip
    records = Records()
    async with app.router.lifespan_context(app):
        access = logging.getLogger("jifen.access")
        access.addHandler(records)
        level = access.level
        access.setLevel(logging.INFO)  # the suite runs at WARNING
        try:
            key_id, secret = await create_api_key(app.state.db, name="log", scopes=["ledger:read"])
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                auth = {"Authorization": f"Bearer {secret}"}
                assert (await c.get("/refuse", headers=auth)).status_code == 422
                assert (await c.get("/fine", headers=auth)).status_code == 200
                assert (await c.get("/fine")).status_code == 401
                assert (await c.get("/nowhere")).status_code == 404
        finally:
            access.removeHandler(records)
            access.setLevel(level)
    seen = [(r.path, r.status, getattr(r, "code", None), r.api_key_id) for r in records.records]  # type: ignore[attr-defined]
    assert seen == [
        ("/refuse", 422, "insufficient_points", key_id),
        ("/fine", 200, None, key_id),
        ("/fine", 401, "unauthorized", None),
        ("/nowhere", 404, "not_found", None),
    ]
