"""The ledger service (DESIGN §4): programs, accounts, postings, holds."""

from __future__ import annotations

from fastapi import FastAPI

from ledger_service.api_keys.endpoints import router as api_keys_router
from ledger_service.batches.endpoints import router as batches_router
from ledger_service.console.endpoints import install as install_console
from ledger_service.console.session import SessionCodec
from ledger_service.events.endpoints import router as events_router
from ledger_service.finance.endpoints import router as finance_router
from ledger_service.housekeeping import Housekeeper
from ledger_service.jobs.endpoints import router as jobs_router
from ledger_service.members.endpoints import router as members_router
from ledger_service.notices.endpoints import router as notices_router
from ledger_service.partners.endpoints import router as partners_router
from ledger_service.postings.endpoints import router as postings_router
from ledger_service.postings.engine import PostingEngine
from ledger_service.profiles.endpoints import router as profiles_router
from ledger_service.programs.endpoints import router as programs_router
from ledger_service.reports.endpoints import router as reports_router
from ledger_service.rules.endpoints import router as rules_router
from ledger_service.rules.service import RuleBook
from ledger_service.segments.endpoints import router as segments_router
from services.app import build_app
from services.keyfiles import console_secret, pii_key
from services.settings import Settings

DESCRIPTION = """
Double-entry points ledger. Every write needs `Authorization: Bearer <api key>` and an
`Idempotency-Key`; a retry with the same key and body returns the original response with
`Idempotent-Replayed: true`. Points are integers; errors are `application/problem+json`
with a stable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    async def start(app: FastAPI) -> None:
        app.state.engine = PostingEngine(
            app.state.db,
            coalesce=settings.ledger_coalesce,
            window_s=settings.ledger_coalesce_window_ms / 1000,
            max_batch=settings.ledger_coalesce_max_batch,
        )
        app.state.rules = RuleBook(app.state.db)
        app.state.pii_key = pii_key(settings)
        app.state.console_sessions = SessionCodec(console_secret(settings), settings.console_session_ttl_s)
        app.state.housekeeper = Housekeeper(app.state.db, settings)
        app.state.housekeeper.start()

    async def stop(app: FastAPI) -> None:
        await app.state.housekeeper.stop()

    app = build_app(
        service="ledger",
        title="Jifen ledger",
        description=DESCRIPTION,
        settings=settings,
        routers=[
            programs_router,
            rules_router,
            postings_router,
            members_router,
            reports_router,
            finance_router,
            partners_router,
            profiles_router,
            notices_router,
            segments_router,
            batches_router,
            events_router,
            api_keys_router,
            jobs_router,
        ],
        on_start=[start],
        on_stop=[stop],
        openapi_tags=[
            {"name": "programs", "description": "Points currencies and their configuration"},
            {"name": "rules", "description": "Earning rules: versions and dry runs"},
            {"name": "points", "description": "Earn, burn, reverse, transfer, adjust"},
            {"name": "holds", "description": "Authorize now, capture or void later"},
            {"name": "members", "description": "Balances, tiers, expiring points and statements"},
            {"name": "reports", "description": "Issued, redeemed, expired, outstanding, liability"},
            {"name": "partners", "description": "Coalition partners, their terms, fundings and settlement"},
            {"name": "events", "description": "The event feed and webhook subscriptions"},
            {"name": "api keys", "description": "Create, list, revoke and rotate API keys (ledger:admin)"},
            {
                "name": "jobs",
                "description": "Expiry and tier review, on demand (they also run on a schedule)",
            },
        ],
    )
    install_console(app)  # the ops console at /console (DESIGN §11)
    return app
