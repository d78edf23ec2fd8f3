from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ledger.api.deps import CurrentPrincipal, Cursor, LedgerDep, Limit
from ledger.contract.vocabulary import AGENCY_RE
from ledger.services import paging

router = APIRouter(tags=["agencies"])


class AgencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[str, StringConstraints(pattern=AGENCY_RE)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    verify_key: Annotated[str, Field(description="C2SP verifier key line named after the id")]


class AgencyOut(BaseModel):
    id: str
    index: int


class DirectoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="the agency's id, as events and consents name it")
    name: str = Field(description="its name as registered")
    type: str = Field(description="its kind as registered (ngo, health, legal, ...)")
    active: bool = Field(
        description="registered, not removed, with a current signing key: may be named now"
    )


class Directory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agencies: list[DirectoryEntry]
    next: str | None = Field(default=None, description=paging.NEXT_DOC)


@router.get("/v1/agencies", response_model=Directory, response_model_exclude_unset=True)
def directory(
    principal: CurrentPrincipal,
    ledger: LedgerDep,
    cursor: Cursor = None,
    limit: Limit = paging.DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Any token: a page of the registered agencies (what the log's registry entries say),
    by id, so that consents, referrals and shares name recipients chosen from a list, not
    typed."""
    page = paging.page_of("agencies", (str,), cursor, limit)
    shown, last = paging.in_memory("agencies", ledger.agencies(), lambda a: (a["id"],), page)
    return paging.answer("agencies", shown, "agencies", last)


@router.post("/v1/agencies", status_code=201, response_model=AgencyOut)
def register_agency(body: AgencyIn, principal: CurrentPrincipal, ledger: LedgerDep) -> AgencyOut:
    """Admin: register an agency and its first signing key (a registry entry in the log)."""
    result = ledger.register_agency(principal, body.id, body.name, body.type, body.verify_key)
    return AgencyOut(**result)


class KeySignature(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    key: str = Field(description="key id (<agency>+<8 hex>) of the signing key")
    signed_at: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
    signature: str = Field(
        description="b64 Ed25519 over b'ledger-key-v1\\n' + JCS({log, agency, key, signed_at})"
    )


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    verify_key: str
    signatures: Annotated[list[KeySignature], Field(min_length=2, max_length=4)]


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    compromised_since: int | None = None


class KeyOut(BaseModel):
    id: str
    key: str
    index: int


@router.post("/v1/agencies/{agency_id}/keys", status_code=201, response_model=KeyOut)
def add_key(agency_id: str, body: KeyIn, principal: CurrentPrincipal, ledger: LedgerDep) -> KeyOut:
    """Add a key, signed by a current key of the agency and by the new key (key.added)."""
    sigs = [s.model_dump() for s in body.signatures]
    return KeyOut(**ledger.add_key(principal, agency_id, body.verify_key, sigs))


@router.post("/v1/agencies/{agency_id}/keys/{key_id}/revoke", response_model=KeyOut)
def revoke_key(
    agency_id: str, key_id: str, body: RevokeIn, principal: CurrentPrincipal, ledger: LedgerDep
) -> KeyOut:
    """Revoke a key (key.revoked); `compromised_since` flags its events from that position."""
    return KeyOut(**ledger.revoke_key(principal, agency_id, key_id, body.compromised_since))


class AgencyRemoved(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    revoked_keys: list[int] = Field(description="log positions of the key.revoked entries")
    revoked_tokens: int


@router.delete("/v1/agencies/{agency_id}", response_model=AgencyRemoved)
def remove_agency(agency_id: str, principal: CurrentPrincipal, ledger: LedgerDep) -> dict[str, Any]:
    """Admin: remove an agency: its keys are revoked in the log and its tokens stop working;
    its history stays verifiable."""
    return ledger.remove_agency(principal, agency_id)
