"""One Settings class: every knob comes from `LEDGER_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WitnessSetting(BaseModel):
    """A witness the ledger asks to cosign its checkpoints (c2sp.org/tlog-witness)."""

    name: str  # what the ledger calls it (`ledger log status`, its logs)
    key: str  # its cosignature/v1 verifier key line (`ledger witness keygen`), type 0x04
    url: str  # its submission prefix: the ledger POSTs to <url>/add-checkpoint


class Settings(BaseSettings):
    """Deployment settings; paths are relative to the working directory."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore", populate_by_name=True)

    home: Path = Path(".ledger")
    keys: Path = Path("keys")
    # The key-encryption key, default `<keys>/kek.key`; kept on another volume than the
    # database and the other keys (docker-compose does), so no single copy holds both the
    # wrapped case keys and what unwraps them. Its rotation's next key lies beside it.
    kek_file: Path | None = None
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

    # Notices: delivered to agencies' webhooks, time-based ones made, by the API process or
    # by `ledger worker` (unset: wherever the projections run).
    notices_in_api_setting: bool | None = Field(default=None, alias="LEDGER_NOTICES_IN_API")
    webhook_retry_period_s: float = 259_200.0  # retry a notice three days, then dead-letter it
    webhook_retry_base_s: float = 5.0  # the first retry after about this long, doubling ...
    webhook_retry_max_s: float = 3_600.0  # ... up to this long between attempts (with jitter)
    webhook_lease_s: float = 30.0  # an endpoint is one worker's for this long at a time
    webhook_concurrency: int = 8  # endpoints delivered to at once, per process
    webhook_poll_s: float = 0.1  # how often a worker looks for new notices
    webhook_connect_timeout_s: float = 5.0
    webhook_read_timeout_s: float = 10.0
    # Development only: plain http to a loopback address (127.0.0.1, ::1).
    webhook_allow_http_loopback: bool = False
    # Networks beyond the public internet that webhooks may reach (CIDRs, e.g. an agency's
    # VPN: ["10.8.0.0/16"]); private, loopback and link-local addresses are refused otherwise.
    webhook_allowed_networks: list[str] = []
    timers_interval_s: float = 5.0  # how often due consent expiries and referrals are told

    # Witnesses: every new checkpoint is sent to each (in parallel, each with its timeout);
    # LEDGER_WITNESSES is a JSON list of {"name", "key", "url"}. A witness that fails is
    # retried with backoff up to witness_retry_max_s apart; none ever holds up the log.
    witnesses: list[WitnessSetting] = []
    witness_timeout_s: float = 5.0  # one add-checkpoint request, connecting included
    witness_retry_max_s: float = 60.0
    # GET /metrics (Prometheus) answers only this bearer token; unset: metrics are not served.
    metrics_token: str | None = None

    @property
    def notices_in_api(self) -> bool:
        if self.notices_in_api_setting is not None:
            return self.notices_in_api_setting
        return self.projections_in_api

    @property
    def projections_in_api(self) -> bool:
        if self.projections_in_api_setting is not None:
            return self.projections_in_api_setting
        return not self.is_postgres

    @property
    def is_postgres(self) -> bool:
        url = self.database_url or ""
        return url.startswith(("postgres://", "postgresql://"))
