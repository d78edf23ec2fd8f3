"""Survivor case ledger: signed, sealed, consent-gated case events in one verifiable log."""

__version__ = "0.1.0"
