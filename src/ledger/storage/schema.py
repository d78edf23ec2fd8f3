"""The SQL backends' tables, as DDL (the ledger's, and the case keys' kept apart), and the
cursor every SQL module reads and writes through."""

from __future__ import annotations

from typing import Any, Protocol


class Cursor(Protocol):
    def execute(self, sql: Any, params: Any = ...) -> Any: ...
    def executemany(self, sql: Any, params: Any) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...


LEDGER_TABLES = """
CREATE TABLE IF NOT EXISTS {s}ledger_meta (
  key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}log_head (
  id INTEGER PRIMARY KEY CHECK (id = 1), size BIGINT NOT NULL, recorded_at TEXT);
INSERT INTO {s}log_head (id, size) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}log_entries (
  position BIGINT PRIMARY KEY, kind TEXT NOT NULL, leaf_hash {blob} NOT NULL,
  entry {blob} NOT NULL, case_id TEXT, agency TEXT);
CREATE INDEX IF NOT EXISTS log_entries_case_kind ON {s}log_entries (case_id, kind);
CREATE TABLE IF NOT EXISTS {s}tree_nodes (
  level INTEGER NOT NULL, idx BIGINT NOT NULL, hash {blob} NOT NULL,
  PRIMARY KEY (level, idx));
CREATE TABLE IF NOT EXISTS {s}events_index (
  event_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, position BIGINT NOT NULL,
  case_version INTEGER NOT NULL, fingerprint {blob} NOT NULL, extra TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}agencies (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, position BIGINT NOT NULL,
  removed_at TEXT);
CREATE TABLE IF NOT EXISTS {s}agency_keys (
  key_id TEXT PRIMARY KEY, agency TEXT NOT NULL, line TEXT NOT NULL,
  added_at BIGINT NOT NULL, revoked_at BIGINT);
CREATE INDEX IF NOT EXISTS agency_keys_agency ON {s}agency_keys (agency);
CREATE TABLE IF NOT EXISTS {s}case_relations (
  case_id TEXT NOT NULL, agency TEXT NOT NULL, PRIMARY KEY (case_id, agency));
CREATE TABLE IF NOT EXISTS {s}receipt_codes (
  code_mac {blob} PRIMARY KEY, case_id TEXT NOT NULL, consent_id TEXT NOT NULL,
  kind TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS receipt_codes_case ON {s}receipt_codes (case_id);
CREATE TABLE IF NOT EXISTS {s}checkpoints (
  size BIGINT PRIMARY KEY, root {blob} NOT NULL, note TEXT NOT NULL, signed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}cosignatures (
  size BIGINT NOT NULL, witness TEXT NOT NULL, line TEXT NOT NULL, cosigned_at TEXT NOT NULL,
  PRIMARY KEY (size, witness));
CREATE TABLE IF NOT EXISTS {s}witness_status (
  witness TEXT PRIMARY KEY, held BIGINT, cosigned_size BIGINT, cosigned_at TEXT,
  attempted_at TEXT, error TEXT, lease_owner TEXT, lease_until_ms BIGINT);
CREATE TABLE IF NOT EXISTS {s}erasures (
  case_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, position BIGINT NOT NULL,
  erased_at TEXT NOT NULL, key_destroyed INTEGER NOT NULL DEFAULT 0, receipt TEXT);
CREATE TABLE IF NOT EXISTS {s}notices (
  seq {serial}, agency TEXT NOT NULL, kind TEXT NOT NULL, case_id TEXT NOT NULL,
  subject TEXT, position BIGINT NOT NULL, created_at TEXT NOT NULL,
  UNIQUE (position, agency, kind));
CREATE INDEX IF NOT EXISTS notices_agency ON {s}notices (agency, seq);
CREATE INDEX IF NOT EXISTS notices_case ON {s}notices (case_id, seq);
CREATE TABLE IF NOT EXISTS {s}acknowledgements (
  position BIGINT NOT NULL, agency TEXT NOT NULL, kind TEXT NOT NULL, action TEXT NOT NULL,
  at TEXT NOT NULL, PRIMARY KEY (position, agency, kind));
CREATE TABLE IF NOT EXISTS {s}timers (
  kind TEXT NOT NULL, case_id TEXT NOT NULL, subject TEXT NOT NULL, position BIGINT NOT NULL,
  due_ms BIGINT NOT NULL, PRIMARY KEY (kind, case_id, subject));
CREATE INDEX IF NOT EXISTS timers_due ON {s}timers (due_ms);
CREATE TABLE IF NOT EXISTS {s}webhooks (
  id TEXT PRIMARY KEY, agency TEXT NOT NULL, url TEXT NOT NULL, secret {blob} NOT NULL,
  old_secret {blob}, old_until_ms BIGINT, created_at TEXT NOT NULL, removed_at TEXT,
  through_seq BIGINT NOT NULL, attempts INTEGER NOT NULL, next_ms BIGINT,
  failing_since TEXT, last_error TEXT, lease_owner TEXT, lease_until_ms BIGINT);
CREATE INDEX IF NOT EXISTS webhooks_agency ON {s}webhooks (agency);
CREATE TABLE IF NOT EXISTS {s}deliveries (
  endpoint TEXT NOT NULL, seq BIGINT NOT NULL, outcome TEXT NOT NULL, attempts INTEGER NOT NULL,
  at TEXT NOT NULL, error TEXT, PRIMARY KEY (endpoint, seq));
CREATE TABLE IF NOT EXISTS {s}tokens (
  id TEXT PRIMARY KEY, hash {blob} NOT NULL UNIQUE, role TEXT NOT NULL, agency TEXT,
  label TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT, revoked_at TEXT)
"""

KEY_TABLE = """
CREATE TABLE IF NOT EXISTS {s}case_keys (
  case_id TEXT PRIMARY KEY, kek_id TEXT NOT NULL, wrapped {blob} NOT NULL,
  created_at TEXT NOT NULL, confirmed INTEGER NOT NULL DEFAULT 0)
"""
