"""The console's settings: every knob from `LEDGER_CONSOLE_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_CONSOLE_", extra="ignore")

    ledger_url: str = "http://127.0.0.1:8000"
    agency: str | None = None  # the agency this console serves (its signing key's name)
    agency_key_file: Path | None = None  # the agency's signing key (C2SP private key line)
    state_dir: Path = Path(".console")  # accounts, sessions and the console's own key
    # The key that seals each account's ledger token and TOTP secret (default: in state_dir);
    # kept elsewhere (a mounted secret), a copy of the store alone unseals nothing.
    key_file: Path | None = None
    database_url: str | None = None  # PostgreSQL for accounts and sessions (default SQLite)
    host: str = "127.0.0.1"
    port: int = 8100
    idle_timeout_s: float = 15 * 60
    absolute_timeout_s: float = 8 * 3600
    max_failed_logins: int = 5
    lockout_s: float = 15 * 60
    language: str = "es"  # the default for new accounts and the login page
    # Cookies marked Secure (serve the console over TLS); unset: on unless it listens on
    # loopback only. Behind a TLS proxy on 127.0.0.1, set it to true.
    secure_cookies: bool | None = None
    # The Host names the console answers to (a guard against DNS rebinding); its own host
    # and the loopback names are always allowed.
    allowed_hosts: list[str] = []
