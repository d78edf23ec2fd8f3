"""The event contract and its rules: the envelope and its canonical form, the cryptography,
the gates of the refusal order, the Case aggregate, sealing and the erasure receipt. Pure:
nothing here reads or writes storage."""
