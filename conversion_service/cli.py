"""The conversion service's part of `jifen run` (services/cli.py composes it): its demo rates."""

from __future__ import annotations

from services.db import Database


async def prepare_run(db: Database, *, demo: bool) -> list[str]:
    if not demo:
        return []
    from conversion_service.demo import load_demo

    return await load_demo(db)
