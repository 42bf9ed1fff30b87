"""One Alembic environment for every service schema. The URL comes from the caller or the settings."""

from __future__ import annotations

import asyncio

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from migrations.script_sql import run_script

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from services.app import resolve_database_url
    from services.settings import Settings

    return resolve_database_url(Settings())


def _at_head() -> bool:
    heads = set(ScriptDirectory.from_config(config).get_heads())
    return set(context.get_context().get_current_heads()) == heads


def _run(connection: Connection) -> None:
    context.configure(connection=connection, version_table_schema="public")
    with context.begin_transaction():
        context.run_migrations()
        # The ledger's functions and triggers come from their source files, applied at head in
        # the same transaction as the migrations (ledger_service/sql/__init__.py says why).
        if _at_head():
            from ledger_service.sql import script

            run_script(script(), connection)


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `jifen migrate`")
asyncio.run(_run_async())
