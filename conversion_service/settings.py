"""Settings of the conversion service, read from the environment with the prefix JIFEN_CONVERSION_.

The shared settings (database, ports, the ledger's URL and this service's ledger key) come from
services.settings.Settings; these are the conversion service's own knobs.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.saga import SagaTiming

_FAULT = re.compile(r"^(crash_after_debit|pause_after_debit:\d+(\.\d+)?)$")


class ConversionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JIFEN_CONVERSION_", extra="ignore")

    quote_ttl_s: int = Field(
        default=300, ge=1, le=3600, description="How long a quote holds its rate, at most (seconds)"
    )
    lease_s: float = Field(
        default=30.0, gt=0, le=3600, description="A saga driver's lease; recovery takes over after it"
    )
    recovery_interval_s: float = Field(default=2.0, gt=0, le=3600)
    retry_base_s: float = Field(default=1.0, gt=0, le=3600, description="First retry delay of a saga step")
    retry_max_s: float = Field(default=60.0, gt=0, le=86_400, description="Longest retry delay")
    ledger_timeout_s: float = Field(default=5.0, gt=0, le=120)
    ledger_attempts: int = Field(default=4, ge=1, le=20, description="Tries per ledger call, with backoff")
    program_cache_s: float = Field(default=10.0, ge=0, le=3600, description="How long a program is cached")
    # TEST ONLY. Makes the saga misbehave on purpose so the tests can crash it between two steps:
    #   crash_after_debit        the process exits (os._exit) right after the debit's state is stored
    #   pause_after_debit:<s>    the saga sleeps <s> seconds after the debit, before the credit
    fault: str | None = None

    def saga_timing(self) -> SagaTiming:
        return SagaTiming(self.lease_s, self.retry_base_s, self.retry_max_s, self.recovery_interval_s)

    @field_validator("fault")
    @classmethod
    def _known_fault(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not _FAULT.match(value):
            raise ValueError("fault must be crash_after_debit or pause_after_debit:<seconds>")
        return value
