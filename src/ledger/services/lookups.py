"""What a submission's decision reads besides its body, behind one interface: `Lookups`
reads the store for a lone submission; `BatchLookups` answers a batch's items from what it
looked up once for all of them, and from what the items before it decided."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.contract import crypto
from ledger.contract.case import Case, Cases
from ledger.contract.envelope import Submission
from ledger.contract.gates import named_agencies
from ledger.contract.sealing import unseal_item
from ledger.errors import Gone, LedgerError
from ledger.services.access import CaseAccess
from ledger.services.keystore import KeyStore
from ledger.services.registry import Registry
from ledger.services.tokens import Principal
from ledger.storage.base import Commit, RecordedEvent, Store


@dataclass(repr=False)
class Planned:
    """An accepted submission, sealed, with the commit that records it. Its repr names ids
    only: the submission holds plaintext."""

    def __repr__(self) -> str:
        return f"Planned(event={self.sub.event_id}, case={self.sub.case_id} v{self.version})"

    sub: Submission
    case: Case  # the batch's working copy: later items of the case move it on
    version: int  # the case version this event makes
    record: dict[str, Any]
    commit: Commit
    leaf: bytes
    added: dict[str, Any]  # what the log entry holds beside the envelope and signature
    extra: dict[str, Any]


class Lookups:
    """A lone submission's look-ups, each read from the store when the decision asks."""

    def __init__(
        self, store: Store, keys: KeyStore, cases: Cases, registry: Registry, access: CaseAccess
    ) -> None:
        self.store, self.keys, self.cases = store, keys, cases
        self.registry, self.access = registry, access

    def planned(self, case_id: str) -> Case | None:
        """The case as earlier items of the batch left it, if any planned an event of it."""
        return None

    def related(self, case_id: str, agency: str | None) -> bool:
        """Whether the agency is related to the case (decided before the case is loaded)."""
        return agency is not None and bool(self.store.related([(case_id, agency)]))

    def exists(self, case_id: str) -> bool:
        return bool(self.store.case_versions([case_id]))

    def load(self, case_id: str) -> Case | None:
        return self.cases.load(case_id)

    def prior(self, event_id: str) -> RecordedEvent | None:
        """The recorded event with this id, if any."""
        return self.store.find_event(event_id)

    def earlier(self, event_id: str) -> tuple[bytes, int] | None:
        """(fingerprint, item) of an earlier item of the batch with this event id."""
        return None

    def verify_key(self, agency: str, key_id: str) -> crypto.VerifyKey | None:
        return self.registry.verify_key(agency, key_id)

    def live_agencies(self, names: Sequence[str]) -> set[str]:
        """Those of the agencies that are registered, not removed, with a live key."""
        return self.store.live_agencies(names)

    def case_key(self, case_id: str, new: bool) -> bytes:
        """The key to seal with: a new case's is created and stored now, an existing case's
        read (410 once it is destroyed)."""
        key = self.keys.create(case_id) if new else self.keys.get(case_id)
        if key is None:
            raise Gone("the case's key was destroyed")
        return key

    def age_band(self, case: Case) -> str | None:
        """The latest assessed age band (sealed), for the assent exemption."""
        return self.access.age_band(case)


class BatchLookups(Lookups):
    """What a batch has decided but not committed yet, and what it looked up once for all
    its items (which cases exist and are related to their callers, which event ids are
    recorded, agency keys, case keys); the items after it see it. Its repr gives counts only:
    it holds plaintext submissions and raw case keys.

    A concurrent writer can make the look-ups stale: every such fact behind an accepted item
    is checked again at commit under the log lock (the case's version, the event id, the
    signing key, the named agencies), and an item that fails there is decided again on its
    own; a refusal is the answer as of the batch's look-up."""

    def __init__(
        self,
        store: Store,
        keys: KeyStore,
        cases: Cases,
        registry: Registry,
        access: CaseAccess,
        items: Sequence[tuple[Principal, Submission | LedgerError]] = (),
    ) -> None:
        super().__init__(store, keys, cases, registry, access)
        self.related_pairs: set[tuple[str, str]] = set()  # (case, agency) at look-up
        self.existing: set[str] = set()  # of those cases (and of case.opened items' cases),
        # the ones that had events at look-up
        self.loaded: dict[str, Case | None] = {}  # those cases, loaded then
        self.priors: dict[str, RecordedEvent] = {}  # recorded at look-up
        self.verify_keys: dict[tuple[str, str], crypto.VerifyKey | None] = {}
        self.agencies: dict[str, bool] = {}  # named agencies: live or not
        self.data_keys: dict[str, bytes] = {}  # case keys read or made
        self.new_keys: dict[str, bytes] = {}  # new cases': stored at commit
        self.plans: list[tuple[int, Planned]] = []
        self.subs: dict[int, tuple[Principal, Submission]] = {}
        self.cases_planned: dict[str, Case] = {}
        self.events: dict[str, tuple[bytes, int]] = {}  # fingerprint, item
        self.records: dict[tuple[str, int], dict[str, Any]] = {}
        self.case_items: dict[str, list[int]] = {}  # planned items by case
        # Refusals decided on planned items' state, by the items they leaned on: decided
        # again after the commit if one of those did not commit.
        self.leaned: dict[int, set[int]] = {}
        self.broken: set[str] = set()  # cases an item failed on (not a refusal)
        self.deferred: list[int] = []  # their later items: decided alone
        if items:
            self._look_up(items)

    def __repr__(self) -> str:
        return (
            f"BatchLookups(plans={len(self.plans)}, cases={len(self.cases_planned)},"
            f" keys={len(self.data_keys) + len(self.new_keys)})"
        )

    def _look_up(self, items: Sequence[tuple[Principal, Submission | LedgerError]]) -> None:
        """The look-ups for all the (remaining) items at once. Only the cases their callers
        are related to are loaded, and only their keys read: a case an agency is unrelated to
        costs it what an unused id costs (step 3 answers both alike, in time too);
        `case.opened` items also ask whether their case exists."""
        valid = [(p, s) for p, s in items if isinstance(s, Submission)]
        pairs = sorted({(s.case_id, p.agency) for p, s in valid if p.agency is not None})
        self.related_pairs = self.store.related(pairs) if pairs else set()
        opening = {s.case_id for _, s in valid if s.type == "case.opened"}
        visible = {case_id for case_id, _ in self.related_pairs}
        versions = self.store.case_versions(sorted(visible | opening))
        named = sorted({n for _, s in valid for n in named_agencies(s.type, s.facts)})
        live = self.store.live_agencies(named) if named else set()
        to_load = {c: v for c, v in versions.items() if c in visible}
        self.existing = set(versions)
        self.agencies = {n: n in live for n in named}
        self.priors = self.store.find_events(sorted({s.event_id for _, s in valid}))
        self.loaded = self.cases.load_many(to_load)
        self.data_keys = self.keys.get_many(sorted(to_load))

    # -- what the items decided ------------------------------------------------------------

    def add(self, item: int, principal: Principal, plan: Planned) -> None:
        self.plans.append((item, plan))
        self.subs[item] = (principal, plan.sub)
        self.cases_planned[plan.sub.case_id] = plan.case
        self.events[plan.sub.event_id] = (plan.sub.fingerprint, item)
        self.records[(plan.sub.case_id, plan.version)] = plan.record
        self.case_items.setdefault(plan.sub.case_id, []).append(item)

    def leaned_on(self, sub: Submission) -> set[int]:
        """The planned items a decision on `sub` saw: its case's, and its event id's."""
        items = set(self.case_items.get(sub.case_id, ()))
        if sub.event_id in self.events:
            items.add(self.events[sub.event_id][1])
        return items

    # -- the look-ups, from the batch's ------------------------------------------------------

    def planned(self, case_id: str) -> Case | None:
        return self.cases_planned.get(case_id)

    def related(self, case_id: str, agency: str | None) -> bool:
        return (case_id, agency or "") in self.related_pairs

    def exists(self, case_id: str) -> bool:
        return case_id in self.existing

    def load(self, case_id: str) -> Case | None:
        if case_id in self.loaded:
            # Taken, not shared: should this item be refused after it changed the case, the
            # next item of the case loads it afresh.
            return self.loaded.pop(case_id)
        return self.cases.load(case_id)

    def prior(self, event_id: str) -> RecordedEvent | None:
        return self.priors.get(event_id)

    def earlier(self, event_id: str) -> tuple[bytes, int] | None:
        return self.events.get(event_id)

    def verify_key(self, agency: str, key_id: str) -> crypto.VerifyKey | None:
        if (agency, key_id) not in self.verify_keys:
            self.verify_keys[(agency, key_id)] = self.registry.verify_key(agency, key_id)
        return self.verify_keys[(agency, key_id)]

    def live_agencies(self, names: Sequence[str]) -> set[str]:
        unknown = [n for n in names if n not in self.agencies]
        if unknown:
            live = self.store.live_agencies(unknown)
            self.agencies.update((n, n in live) for n in unknown)
        return {n for n in names if self.agencies[n]}

    def case_key(self, case_id: str, new: bool) -> bytes:
        """A new case's key is made now and stored by the batch before its commit; an
        existing case's is read once per batch."""
        key: bytes | None
        if case_id in self.data_keys:
            key = self.data_keys[case_id]
        elif new:
            key = self.new_keys[case_id] = crypto.new_data_key()
        else:
            key = self.keys.get(case_id)
        if key is None:
            raise Gone("the case's key was destroyed")
        self.data_keys[case_id] = key
        return key

    def age_band(self, case: Case) -> str | None:
        """From the batch's own keys and records first (a new case's key is not stored yet)."""
        if case.state.age_version == 0:
            return self.access.age_band(case)
        case_id = case.state.case_id
        key = self.data_keys.get(case_id) or self.keys.get(case_id)
        if key is None:
            return None
        at = (case_id, case.state.age_version)
        record = self.records.get(at) or self.cases.record_at(case, case.state.age_version)
        return str(unseal_item(key, case_id, record, "attrs").get("age_band"))
