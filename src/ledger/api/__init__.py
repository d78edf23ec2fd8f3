"""The HTTP API (FastAPI): thin routes over `ledger.Ledger`."""
