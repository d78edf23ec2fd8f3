from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from ledger.api.deps import CurrentPrincipal, Cursor, InteropDep, Limit, ReadModelsDep
from ledger.services import paging

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


class ReleaseListed(BaseModel):
    period: str = Field(description="YYYY-MM")
    created_at: str = Field(description="when it was frozen")


class ReleaseList(BaseModel):
    releases: list[ReleaseListed]
    next: str | None = Field(default=None, description=paging.NEXT_DOC)


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    year: int = Field(description="a year that has ended (cases by year of identification)")


@router.get("/v1/stats/releases", response_model=ReleaseList, response_model_exclude_unset=True)
def list_releases(
    principal: CurrentPrincipal,
    models: ReadModelsDep,
    cursor: Cursor = None,
    limit: Limit = paging.DEFAULT_LIMIT,
) -> Any:
    """A page of the frozen releases, the newest period first (monitor)."""
    page = paging.page_of("releases", (str,), cursor, limit)
    return models.release_list(principal, page)


@router.post(
    "/v1/stats/htcds",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "the year's frozen export"}},
)
def htcds_export(body: ExportIn, principal: CurrentPrincipal, service: InteropDep) -> Any:
    """The HTCDS / CTDC-style one-row-per-case CSV of a closed year (monitor): k = 11, l = 2,
    no ids, no free text. The first export of a year is frozen and every later one returns
    it, byte for byte (a POST: the first one unseals the year's cases to make it)."""
    text, _ = service.htcds_for(principal, body.year)
    return PlainTextResponse(text, media_type="text/csv; charset=utf-8")


@router.get("/v1/stats/releases/{period}", responses={200: {"model": Release}})
def get_release(period: str, principal: CurrentPrincipal, models: ReadModelsDep) -> Any:
    """A frozen release: small cells suppressed (k = 11, with secondary suppression across
    the whole set), counts rounded down to multiples of 5."""
    return models.release(principal, period)
