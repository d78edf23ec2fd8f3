"""The agency console: the web interface one agency runs beside its own signing key, for its
case workers and supervisors. It talks to the ledger only over the public HTTP API, through
the client SDK, and keeps no case data at rest: its own store holds accounts and sessions."""
