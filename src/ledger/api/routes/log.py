from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from ledger.api.deps import CurrentPrincipal, LedgerDep
from ledger.contract import crypto

router = APIRouter(tags=["log"])
TEXT = "text/plain; charset=utf-8"
# Positions and sizes up to 2^53 - 1, the integers JSON carries exactly (as in envelopes);
# larger ones are 400, never a number the database cannot hold.
MAX_POSITION = 2**53 - 1


class Entry(BaseModel):
    index: int
    leaf: str


class Entries(BaseModel):
    entries: list[Entry]


class InclusionProof(BaseModel):
    index: int
    size: int
    proof: list[str]


class ConsistencyProof(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: int = Field(alias="from")
    to: int
    proof: list[str]


@router.get("/v1/log/checkpoint", response_class=PlainTextResponse)
def checkpoint(principal: CurrentPrincipal, ledger: LedgerDep) -> PlainTextResponse:
    """The newest C2SP checkpoint, an Ed25519 signed note by the log key.

    Signed on the log's schedule (every N entries or T seconds), never by this request: a new
    entry is covered from the next scheduled checkpoint on.
    """
    return PlainTextResponse(ledger.log.checkpoint(), media_type=TEXT)


@router.get("/v1/log/key", response_class=PlainTextResponse)
def log_key(principal: CurrentPrincipal, ledger: LedgerDep) -> PlainTextResponse:
    """The log's verifier key line (auditors should bring their own copy)."""
    return PlainTextResponse(ledger.log.verify_key.line() + "\n", media_type=TEXT)


@router.get("/v1/log/entries", response_model=Entries)
def entries(
    principal: CurrentPrincipal,
    ledger: LedgerDep,
    start: Annotated[int, Query(ge=0, le=MAX_POSITION)],
    end: Annotated[int, Query(ge=0, le=MAX_POSITION)],
) -> Entries:
    """Entries [start, min(end, start + 1000, size)) as base64 of their canonical bytes."""
    rows = ledger.log.entries(principal.role, start, end)
    return Entries(entries=[Entry(index=i, leaf=crypto.b64(b)) for i, b in rows])


@router.get("/v1/log/proof/inclusion", response_model=InclusionProof)
def inclusion(
    principal: CurrentPrincipal,
    ledger: LedgerDep,
    index: Annotated[int, Query(ge=0, le=MAX_POSITION)],
    size: Annotated[int, Query(ge=1, le=MAX_POSITION)],
) -> InclusionProof:
    """RFC 9162 inclusion proof of entry `index` in the tree of `size` entries."""
    proof = ledger.log.inclusion(principal.role, principal.agency, index, size)
    return InclusionProof(index=index, size=size, proof=[crypto.b64(p) for p in proof])


@router.get("/v1/log/proof/consistency", response_model=ConsistencyProof)
def consistency(
    principal: CurrentPrincipal,
    ledger: LedgerDep,
    first: Annotated[int, Query(alias="from", ge=1, le=MAX_POSITION)],
    to: Annotated[int, Query(ge=1, le=MAX_POSITION)],
) -> dict[str, object]:
    """RFC 9162 consistency proof between the trees of `from` and `to` entries."""
    proof = ledger.log.consistency(principal.role, first, to)
    return {"from": first, "to": to, "proof": [crypto.b64(p) for p in proof]}
