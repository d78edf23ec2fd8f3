"""The application's services, each one concern: tokens, the registry of agencies and keys,
ingest, erasure, case access, the key store, the log's time, read models and statistics
releases. `ledger.ledger.Ledger` composes them."""
