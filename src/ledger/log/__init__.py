"""The ledger's RFC 9162 transparency log: Merkle tree hashing, proofs and signed checkpoints."""
