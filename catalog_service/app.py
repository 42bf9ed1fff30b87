"""The catalog service (DESIGN §6): rewards, voucher codes, redemptions (sagas over the ledger's HTTP API)."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from catalog_service.codes.endpoints import router as codes_router
from catalog_service.faults import Faults
from catalog_service.housekeeping import Housekeeper
from catalog_service.redemptions.endpoints import router as redemptions_router
from catalog_service.redemptions.saga import RedemptionSaga
from catalog_service.rewards.endpoints import router as rewards_router
from catalog_service.settings import CatalogSettings
from services.app import build_app
from services.ledger_client import LedgerClient
from services.saga import SagaRunner
from services.settings import Settings

log = logging.getLogger("jifen.catalog")

DESCRIPTION = """
Rewards members redeem points for: physical gifts, services and e-vouchers. Points move only through
the ledger's API. Every call needs `Authorization: Bearer <api key>` (`catalog:read` to browse,
`catalog:write` to redeem, `catalog:admin` to manage rewards and codes). Redemptions and cancels need an
`Idempotency-Key`; a retry with the same key and body returns the original response with
`Idempotent-Replayed: true`. Errors are `application/problem+json` with a stable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    config = CatalogSettings.from_settings(settings)
    faults = Faults(config.catalog_fault)

    async def start(app: FastAPI) -> None:
        if config.ledger_api_key is None:
            raise RuntimeError(
                "the catalog needs its own ledger API key in JIFEN_LEDGER_API_KEY (`jifen run` sets it)"
            )
        ledger = LedgerClient(
            config.ledger_base_url(),
            config.ledger_api_key.get_secret_value(),
            timeout_s=config.catalog_ledger_timeout_s,
            attempts=config.catalog_ledger_attempts,
        )
        app.state.ledger = ledger
        saga = SagaRunner(RedemptionSaga(faults), app.state.db, ledger, config.saga_timing())
        app.state.saga = saga
        recovery = saga.recovery()
        app.state.recovery = recovery
        recovery.start()
        housekeeper = Housekeeper(app.state.db, retention_days=config.idempotency_retention_days)
        app.state.housekeeper = housekeeper
        housekeeper.start()

    async def stop(app: FastAPI) -> None:
        housekeeper = getattr(app.state, "housekeeper", None)
        if housekeeper is not None:
            await housekeeper.stop()
        recovery = getattr(app.state, "recovery", None)
        if recovery is not None:
            await recovery.stop()
        ledger = getattr(app.state, "ledger", None)
        if ledger is not None:
            await ledger.aclose()

    return build_app(
        service="catalog",
        title="Jifen catalog",
        description=DESCRIPTION,
        settings=config,
        routers=[rewards_router, codes_router, redemptions_router],
        on_start=[start],
        on_stop=[stop],
        openapi_tags=[
            {"name": "rewards", "description": "What members can redeem points for"},
            {"name": "voucher codes", "description": "E-coupon codes of voucher rewards"},
            {"name": "redemptions", "description": "Redeem, cancel, list"},
        ],
    )
