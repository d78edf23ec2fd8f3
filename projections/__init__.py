"""Read models projected from the ledger's log: one module per read model.

Each projection owns its tables and handlers and records its position with eventsourcing
tracking in the same transaction as its update (exactly once). They follow the ledger's log,
the one gapless sequence of every entry in commit order (events' envelopes, registry changes
and unsealed reads), and never store unsealed data: what they show from `attrs` or the
payload is unsealed at request time. The frozen statistics releases are kept apart, by
`ledger.services.releases`: they are disclosure control, not a projection of the log.
"""

from projections.base import Projection
from projections.cases import CasesProjection
from projections.consents import ConsentsProjection
from projections.disclosures import DisclosuresProjection
from projections.erasures import ErasureRequestsProjection
from projections.referrals import ReferralsProjection


def all_projections() -> list[Projection]:
    return [
        CasesProjection(),
        ConsentsProjection(),
        ReferralsProjection(),
        DisclosuresProjection(),
        ErasureRequestsProjection(),
    ]


__all__ = ["Projection", "all_projections"]
