"""Interoperability: what leaves the ledger in formats other systems read.

- `consent_receipt`: the survivor's consent receipt (ISO/IEC TS 27560 structure, signed note)
- `printout`: its printable rendering (HTML, PDF) in the consent's language
- `fhir`: FHIR R4 Consent resources for partner systems
- `htcds`: the HTCDS / CTDC-style anonymised yearly export
- `record`: one consent as these formats see it, and the keyed codes derived from a case key
- `service`: the access rules and access logging around them (the API and CLI call it)
"""
