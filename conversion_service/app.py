"""The conversion service (DESIGN §5): rates, quotes, conversions (sagas over the ledger's HTTP API)
and valuations. It reaches the ledger only over HTTP, with its own API key."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from conversion_service.conversions.endpoints import router as conversions_router
from conversion_service.conversions.saga import ConversionSaga
from conversion_service.deps import Context
from conversion_service.housekeeping import Housekeeper
from conversion_service.programs.endpoints import router as programs_router
from conversion_service.quotes.endpoints import router as quotes_router
from conversion_service.rates.endpoints import router as rates_router
from conversion_service.settings import ConversionSettings
from conversion_service.valuations.endpoints import router as valuations_router
from services.app import build_app
from services.ledger_client import LedgerClient
from services.saga import SagaRunner
from services.settings import Settings

log = logging.getLogger("jifen.conversion")

DESCRIPTION = """
Moves members' points between programs at published (or cash-value derived) rates, and values points in
cash for points + cash checkout. Every call needs `Authorization: Bearer <api key>`; `POST /v1/conversions`
needs an `Idempotency-Key`. Points are integers; errors are `application/problem+json` with a stable `code`.
"""


def create_app(settings: Settings | None = None, conversion: ConversionSettings | None = None) -> FastAPI:
    settings = settings or Settings()
    conversion = conversion or ConversionSettings()

    async def start(app: FastAPI) -> None:
        if settings.ledger_api_key is None:
            log.error("JIFEN_LEDGER_API_KEY is not set: every call to the ledger will be refused")
        if conversion.fault is not None:
            log.warning("TEST-ONLY fault injection is on", extra={"fault": conversion.fault})
        api_key = settings.ledger_api_key.get_secret_value() if settings.ledger_api_key else ""
        ledger = LedgerClient(
            settings.ledger_base_url(),
            api_key,
            timeout_s=conversion.ledger_timeout_s,
            attempts=conversion.ledger_attempts,
        )
        saga = SagaRunner(ConversionSaga(conversion), app.state.db, ledger, conversion.saga_timing())
        app.state.conversion = Context(db=app.state.db, ledger=ledger, settings=conversion)
        app.state.saga = saga
        app.state.recovery = saga.recovery()
        app.state.recovery.start()  # its first pass runs at once: unfinished conversions resume on start
        app.state.housekeeper = Housekeeper(app.state.db, retention_days=settings.idempotency_retention_days)
        app.state.housekeeper.start()

    async def stop(app: FastAPI) -> None:
        await app.state.housekeeper.stop()
        await app.state.recovery.stop()
        await app.state.conversion.ledger.aclose()

    return build_app(
        service="conversion",
        title="Jifen conversion",
        description=DESCRIPTION,
        settings=settings,
        routers=[rates_router, programs_router, quotes_router, conversions_router, valuations_router],
        on_start=[start],
        on_stop=[stop],
        openapi_tags=[
            {"name": "rates", "description": "Published exchange rates between programs, versioned"},
            {"name": "programs", "description": "Per-program conversion policy (derived rates)"},
            {"name": "quotes", "description": "Price a conversion; the rate holds until the quote expires"},
            {"name": "conversions", "description": "Move a member's points between programs (a saga)"},
            {"name": "valuations", "description": "Points in cash, and points needed for cash"},
        ],
    )
