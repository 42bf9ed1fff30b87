"""The catalog service. Its features arrive with their own issue; today it serves ops endpoints."""

from __future__ import annotations

from fastapi import FastAPI

from services.app import build_app
from services.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return build_app(
        service="catalog",
        title="Jifen catalog",
        description="Catalog service of Jifen (see DESIGN.md).",
        settings=settings or Settings(),
        routers=[],
    )
