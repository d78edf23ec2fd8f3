"""One Settings class: every knob comes from `LEDGER_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Deployment settings; paths are relative to the working directory."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    home: Path = Path(".ledger")
    keys: Path = Path("keys")
    database_url: str | None = None
    pg_schema: str = "ledger"
    freshness_s: int = 300
    max_body_bytes: int = 1_048_576
    log_level: str = "info"
    checkpoint_every: int = 1000  # sign a checkpoint every N entries ...
    checkpoint_interval_s: float = 10.0  # ... or every T seconds when the log has grown

    @property
    def is_postgres(self) -> bool:
        url = self.database_url or ""
        return url.startswith(("postgres://", "postgresql://"))
