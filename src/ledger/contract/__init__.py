"""The event contract and its rules: the submission (its vocabulary, per-type schemas, canonical
form and strict parsing), the cryptography, the gates of the refusal order, the Case aggregate,
sealing and the erasure receipt. Pure: nothing here reads or writes storage."""
