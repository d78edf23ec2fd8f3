"""The ledger's RFC 9162 transparency log: Merkle tree hashing, proofs and signed checkpoints.

Its interface to storage is `ledger.log.store.LogStore` (implemented by the stores) and, for
the stores' appends, `merkle.nodes_to_store`; the log never imports storage."""
