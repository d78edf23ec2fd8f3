"""One Settings class: every knob comes from `LEDGER_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Deployment settings; paths are relative to the working directory."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore", populate_by_name=True)

    home: Path = Path(".ledger")
    keys: Path = Path("keys")
    database_url: str | None = None
    pg_schema: str = "ledger"
    freshness_s: int = 300
    # Request body caps, enforced by the API's gate before and while reading: one event, a
    # batch of up to 1,000 (1,000 events of 1 KiB payloads are about 2.2 MB), anything else.
    max_body_bytes: int = 1_048_576
    max_batch_bytes: int = 4_194_304
    max_other_body_bytes: int = 65_536
    # Body bytes one token may have read and not yet answered in one API process (429 past
    # it); at least max_batch_bytes, or no batch could ever be sent.
    inflight_bytes_per_token: int = 8_388_608
    log_level: str = "info"
    workers: int = 1  # `ledger serve` processes
    rate_per_s: float = 500.0  # requests per second per token (0: no limit) ...
    rate_burst: int = 1000  # ... with bursts up to this many
    rate_pause_s: float = 1.0  # a 429 is answered after up to this long (its Retry-After)
    checkpoint_every: int = 1000  # sign a checkpoint every N entries ...
    checkpoint_interval_s: float = 10.0  # ... or every T seconds when the log has grown
    # Finish interrupted erasures (committed over a minute ago) and drop orphaned case keys
    # every T seconds while serving (0: only at start-up).
    recover_interval_s: float = 60.0
    # Run the projections inside the API process (the embedded default) or leave them to a
    # separate `ledger worker` (PostgreSQL deployments). Unset: in the API for SQLite only.
    projections_in_api_setting: bool | None = Field(default=None, alias="LEDGER_PROJECTIONS_IN_API")

    @property
    def projections_in_api(self) -> bool:
        if self.projections_in_api_setting is not None:
            return self.projections_in_api_setting
        return not self.is_postgres

    @property
    def is_postgres(self) -> bool:
        url = self.database_url or ""
        return url.startswith(("postgres://", "postgresql://"))
