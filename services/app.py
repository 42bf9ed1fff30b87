"""The common FastAPI application: lifespan, errors, middleware, health, readiness and metrics."""

from __future__ import annotations

import gc
import importlib.util
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi_offline import FastAPIOffline
from starlette.responses import JSONResponse, RedirectResponse, Response

from services.auth import KeyStore
from services.db import Database
from services.errors import install_error_handlers
from services.fastlane import FastLane, lane_routes
from services.logs import configure_logging
from services.metrics import render
from services.middleware import RequestContextMiddleware
from services.openapi import install_openapi
from services.settings import Settings

log = logging.getLogger("jifen.app")

Hook = Callable[[FastAPI], Awaitable[None]]


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    from services.pg import EmbeddedPostgres

    server = EmbeddedPostgres(settings.data_dir / "pgdata")
    server.start()
    server.ensure_database("jifen")
    return server.url("jifen")


def examples_file(service: str) -> Path | None:
    """The service's recorded OpenAPI examples (`make examples`), beside its package's modules."""
    spec = importlib.util.find_spec(f"{service}_service")  # none for an app built in a test
    return Path(spec.origin).with_name("openapi_examples.json") if spec and spec.origin else None


# The tag of the routes every service has (below): listed after the service's own tags.
OPS_TAG = {"name": "ops", "description": "Health, readiness, metrics"}


def build_app(
    *,
    service: str,
    title: str,
    description: str,
    settings: Settings,
    routers: Sequence[APIRouter],
    on_start: Sequence[Hook] = (),
    on_stop: Sequence[Hook] = (),
    openapi_tags: list[dict[str, Any]] | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(service, settings.log_level, settings.log_format)
        db = Database(
            resolve_database_url(settings), pool_size=settings.db_pool_size, application_name=service
        )
        app.state.settings = settings
        app.state.db = db
        app.state.keys = KeyStore(db)
        await app.state.keys.start()
        for hook in on_start:
            await hook(app)
        # What start-up allocated lives as long as the process: out of the collector's way, so a full
        # collection under load scans only what requests allocate (shorter pauses, lower p99).
        gc.collect()
        gc.freeze()
        log.info("service started")
        try:
            yield
        finally:
            for hook in reversed(on_stop):
                await hook(app)
            await app.state.keys.stop()
            await db.dispose()
            log.info("service stopped")

    # Swagger UI and ReDoc from the assets fastapi-offline ships (/static-offline-docs): /docs works with
    # no network. validatorUrl off: Swagger UI would otherwise send the document to an outside validator.
    app = FastAPIOffline(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        openapi_tags=[*(openapi_tags or []), OPS_TAG],
        swagger_ui_parameters={"validatorUrl": None},
    )
    install_error_handlers(app)
    install_openapi(app, examples_file(service))

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/healthz", tags=["ops"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="The database is reachable",
        response_model=dict[str, str],
        responses={503: {"description": "The database cannot be reached", "model": dict[str, str]}},
    )
    async def readyz(request: Request) -> Response:
        try:
            await request.app.state.db.ping()
        except Exception as exc:
            log.warning("readiness check failed", extra={"error": repr(exc)})
            return JSONResponse({"status": "unavailable", "service": service}, status_code=503)
        return JSONResponse({"status": "ready", "service": service})

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
    )
    async def metrics() -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)

    for router in routers:
        app.include_router(router)
    # The fast lane's table is read once, here, from the routers' `@fast_lane` routes.
    fast_routes = lane_routes(routers)
    if fast_routes:  # added first, so it runs inside the request-context middleware
        app.add_middleware(FastLane, routes=fast_routes, enabled=settings.fast_lane)
    app.add_middleware(
        RequestContextMiddleware,
        service=service,
        max_body_bytes=settings.max_body_bytes,
        access_log_enabled=settings.access_log,
    )
    return app
