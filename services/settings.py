"""Settings shared by every service, read from the environment (DESIGN §2)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JIFEN_", extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "JIFEN_DATABASE_URL")
    )
    data_dir: Path = REPO_ROOT / ".jifen"
    host: str = "127.0.0.1"
    ledger_port: int = Field(default=8001, ge=1, le=65535)
    conversion_port: int = Field(default=8002, ge=1, le=65535)
    catalog_port: int = Field(default=8003, ge=1, le=65535)
    ledger_url: str | None = None
    conversion_url: str | None = Field(
        default=None, description="The conversion API (the console reads its sagas)"
    )
    catalog_url: str | None = Field(default=None, description="The catalog API (the console reads its sagas)")
    console_session_secret: SecretStr | None = Field(
        default=None, description="Seals the console's session cookie; generated in the data dir when unset"
    )
    console_session_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 86_400)
    console_cookie_secure: bool = Field(
        default=False, description="Mark the console's cookies Secure (set it when served over HTTPS)"
    )
    admin_api_key: SecretStr | None = None
    ledger_api_key: SecretStr | None = Field(
        default=None, description="This service's own key for calling the ledger (conversion, catalog)"
    )
    pii_key: SecretStr | None = None
    workers: int | None = Field(
        default=None, ge=1, le=64, description="uvicorn workers of every service; unset: service_workers()"
    )
    db_pool_size: int = Field(default=16, ge=1, le=200)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="json: one object per line, for machines; text: one readable line per request "
        "(coloured by status when stdout is a terminal)",
    )
    access_log: bool = True
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    fast_lane: bool = Field(
        default=True, description="Serve the hottest write routes without FastAPI's dependency resolution"
    )
    ledger_coalesce: bool = True
    ledger_coalesce_window_ms: float = Field(default=1.0, ge=0, le=50)
    ledger_coalesce_max_batch: int = Field(default=48, ge=1, le=60)
    hold_sweep_interval_s: float = Field(default=1.0, gt=0)
    pending_release_interval_s: float = Field(default=60.0, gt=0)  # ledger: release due pending points
    event_sequence_interval_s: float = Field(default=0.2, gt=0)
    webhook_interval_s: float = Field(default=0.5, gt=0)
    expiry_interval_s: float = Field(default=300.0, gt=0)
    tier_review_interval_s: float = Field(default=3600.0, gt=0)
    profile_refresh_interval_s: float = Field(default=300.0, gt=0)
    notice_interval_s: float = Field(default=900.0, gt=0)
    batch_interval_s: float = Field(default=0.5, gt=0)
    batch_chunk_rows: int = Field(default=20_000, ge=100, le=1_000_000)
    # Workers posting one batch's member partitions at once (each a connection, a PostgreSQL core).
    batch_workers: int = Field(default=2, ge=1, le=32)
    batch_partitions: int = Field(default=4, ge=1, le=256)
    idempotency_retention_days: int = Field(default=30, ge=30)

    def service_workers(self, service: str) -> int:
        """Worker processes for `service`: JIFEN_WORKERS when set, else sized from the CPU count. The ledger
        takes one per core: every earn and every saga step of the other two lands there, and its group
        commit needs a process per core to keep PostgreSQL's cores busy. The conversion and catalog
        services take one per two cores (at least one): with aiohttp their CPU per request is a small
        share of the ledger's and PostgreSQL's, and more processes on the same cores only add context
        switches and per-process pools (measured: README, Sizing)."""
        if self.workers is not None:
            return self.workers
        cpus = os.cpu_count() or 1
        return cpus if service == "ledger" else max(1, cpus // 2)

    def service_port(self, service: str) -> int:
        port: int = getattr(self, f"{service}_port")
        return port

    def ledger_base_url(self) -> str:
        return self.ledger_url or f"http://{self.host}:{self.ledger_port}"

    def conversion_base_url(self) -> str:
        return self.conversion_url or f"http://{self.host}:{self.conversion_port}"

    def catalog_base_url(self) -> str:
        return self.catalog_url or f"http://{self.host}:{self.catalog_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
