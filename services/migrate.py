"""Runs Alembic to head for a given database URL."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from services.settings import REPO_ROOT


def upgrade(url: str) -> None:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
