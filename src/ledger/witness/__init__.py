"""`ledger witness`: a transparency-log witness (c2sp.org/tlog-witness), a program of its own
for an independent organisation to run.

It is configured with the logs it witnesses (each one's origin and verifier key line) and
knows nothing of a ledger but what the protocol sends it: a checkpoint signed by a log key it
trusts, with a consistency proof from the last checkpoint it cosigned of that log. It cosigns
(cosignature/v1) only a checkpoint consistent with that one, so never two different roots for
one size, and records it durably before answering, so that holds across a crash.

`config` reads the logs it trusts, `state` keeps the latest checkpoint cosigned per log
(SQLite, fsynced at every commit) and the fork evidence it saw, `protocol` is add-checkpoint
itself, `server` its HTTP face, and `cli` the `ledger witness keygen` and `serve` commands.
"""
