"""The catalog's settings: the shared ones plus its own (prefix `JIFEN_CATALOG_`)."""

from __future__ import annotations

from pydantic import Field

from services.saga import SagaTiming
from services.settings import Settings


class CatalogSettings(Settings):
    catalog_saga_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="How long the process driving a redemption owns it; a redemption left unfinished "
        "longer (its process died) is resumed by saga recovery. Must exceed one ledger call with retries.",
    )
    catalog_retry_s: float = Field(
        default=5.0, gt=0, description="First wait before retrying a saga step the ledger did not answer"
    )
    catalog_retry_max_s: float = Field(
        default=60.0, gt=0, description="Longest wait between retries (the wait doubles from catalog_retry_s)"
    )
    catalog_recovery_interval_s: float = Field(default=2.0, gt=0)
    catalog_ledger_timeout_s: float = Field(default=5.0, gt=0)
    catalog_ledger_attempts: int = Field(default=3, ge=1, le=10)
    catalog_fault: str | None = Field(
        default=None,
        description="TEST ONLY. Comma-separated `point` or `point:member_ref`: the process exits "
        "(os._exit) when a redemption reaches `point`. See catalog_service/faults.py.",
    )

    def saga_timing(self) -> SagaTiming:
        return SagaTiming(
            self.catalog_saga_lease_s,
            self.catalog_retry_s,
            self.catalog_retry_max_s,
            self.catalog_recovery_interval_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings | None) -> CatalogSettings:
        if settings is None:
            return cls()
        if isinstance(settings, CatalogSettings):
            return settings
        return cls(**settings.model_dump())
