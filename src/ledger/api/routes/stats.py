from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ledger.api.deps import CurrentPrincipal, ReadModelsDep

router = APIRouter(tags=["statistics"])


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    period: str


class ReleaseTable(BaseModel):
    dims: list[str]
    cells: list[dict[str, str | int | bool | None]] = Field(
        description='{"<dim>": "<value>", ..., "count": <int or null>, "suppressed": <bool>}'
    )


class Release(BaseModel):
    """A frozen release (documented here; served as stored, byte for byte)."""

    period: str
    unit: Literal["cases"]
    k: int
    rounding: int
    tables: dict[str, ReleaseTable]


@router.post(
    "/v1/stats/releases",
    status_code=201,
    responses={
        201: {"model": Release, "description": "the release, frozen now"},
        200: {"model": Release, "description": "the period's existing release"},
    },
)
def create_release(body: ReleaseIn, principal: CurrentPrincipal, models: ReadModelsDep) -> Any:
    """Freeze the statistics release of a month that has ended (monitor). The same period
    again returns the existing release (200)."""
    created, release = models.create_release(principal, body.period)
    return JSONResponse(release, status_code=201 if created else 200)


@router.get("/v1/stats/releases/{period}", responses={200: {"model": Release}})
def get_release(period: str, principal: CurrentPrincipal, models: ReadModelsDep) -> Any:
    """A frozen release: small cells suppressed (k = 11, with secondary suppression across
    the whole set), counts rounded down to multiples of 5."""
    return models.release(principal, period)
