"""Secrets generated on first start and kept in the data folder (mode 0600)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from services.auth import SCOPES, create_api_key, new_secret
from services.db import Database
from services.settings import Settings


def _read_or_create(path: Path, make: str) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make + "\n")
    return make


def admin_secret(settings: Settings) -> str:
    if settings.admin_api_key is not None:
        return settings.admin_api_key.get_secret_value()
    return _read_or_create(settings.data_dir / "admin-api-key", new_secret())


def pii_key(settings: Settings) -> bytes:
    if settings.pii_key is not None:
        return settings.pii_key.get_secret_value().encode()
    return _read_or_create(settings.data_dir / "pii-key", secrets.token_hex(32)).encode()


def console_secret(settings: Settings) -> bytes:
    """The secret that seals the ops console's session cookies."""
    if settings.console_session_secret is not None:
        return settings.console_session_secret.get_secret_value().encode()
    return _read_or_create(settings.data_dir / "console-secret", secrets.token_hex(32)).encode()


async def ensure_admin_key(db: Database, settings: Settings) -> str:
    secret = admin_secret(settings)
    await create_api_key(db, name="bootstrap-admin", scopes=SCOPES, secret=secret, keep_revoked=True)
    return secret


# The scopes each service's own ledger key carries: only what it needs.
SERVICE_LEDGER_SCOPES: dict[str, tuple[str, ...]] = {
    "conversion": ("ledger:read", "ledger:earn", "ledger:burn"),
    "catalog": ("ledger:read", "ledger:burn"),
}


async def ensure_service_keys(db: Database, settings: Settings) -> dict[str, str]:
    """Each calling service's ledger key, generated once and kept in the data folder."""
    keys = {}
    for service, scopes in SERVICE_LEDGER_SCOPES.items():
        secret = _read_or_create(settings.data_dir / f"{service}-ledger-key", new_secret())
        await create_api_key(db, name=f"{service}-service", scopes=scopes, secret=secret, keep_revoked=True)
        keys[service] = secret
    return keys
