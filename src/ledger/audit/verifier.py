"""`verify`: the steps in log order, with the registry, gates and ids that depend on order."""

from __future__ import annotations

import json
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.audit.checks import CHUNK, Checks
from ledger.audit.keys import KeyState, UnverifiedAgency, key_history
from ledger.audit.report import AuditFailure, AuditReport, Unacknowledged, failure_order
from ledger.audit.state import SavedState
from ledger.audit.tally import Tally
from ledger.contract import crypto
from ledger.contract.entries import ENTRY_MEMBERS, REGISTRY_ACTIONS, key_change_message
from ledger.contract.envelope import ENVELOPE_MEMBERS
from ledger.contract.gates import (
    NAMED_AGENCY_FACTS,
    CaseState,
    check_consent_gate,
    check_permission,
    check_references,
    disclosed_categories,
    may_unseal_attrs,
)
from ledger.contract.notes import NoteError
from ledger.contract.notices import told_of
from ledger.contract.roles import AGENCY_ROLES
from ledger.contract.vocabulary import ACK_KINDS, is_agency_id, is_uuid4, parse_timestamp
from ledger.errors import LedgerError
from ledger.log import merkle
from ledger.log.checkpoint import verify_checkpoint


@dataclass(frozen=True)
class _Told:
    """A withdrawal or an erasure, and the agencies it told (asked to acknowledge)."""

    case_id: str
    kind: str
    agencies: frozenset[str]
    at: str


class _Verifier:
    def __init__(
        self, origin: str, agency_keys: Mapping[str, crypto.VerifyKey], freshness_s: int
    ) -> None:
        self.origin = origin
        self.freshness_s = freshness_s
        self.trusted = agency_keys
        self.keys: dict[str, dict[str, KeyState]] = {}
        self.key_ids: set[str] = set()  # every key id a registration has named, ever
        self.event_ids: set[int] = set()  # 128-bit ints: a log holds millions of events
        self.recorded_at: datetime | None = None  # the previous entry's
        self.recorded_text: object = None  # and as it was written
        self.cases: dict[str, CaseState] = {}
        self.signer: bytes | None = None  # the key the last event must verify under
        self.failures: list[AuditFailure] = []
        self.flags: list[AuditFailure] = []
        self.events = 0
        self.told: dict[int, _Told] = {}  # by the withdrawal's or erasure's position
        self.readers: dict[str, set[str]] = {}  # case -> agencies with unsealed reads
        self.tally = Tally()  # for the auditor's report
        # Agencies the log registered whose line the auditor lacks or holds otherwise: one
        # failure each (at the end of `verify`), their events' signatures not checked, and
        # their keys taken from the log for the rest, so nothing else fails because of it.
        self.unverified: dict[str, UnverifiedAgency] = {}

    def fail(self, position: int | None, check: str, message: str) -> None:
        self.failures.append(AuditFailure(check, message, position))

    def recorded(self, position: int, entry: dict[str, Any]) -> None:
        """`recorded_at` never goes back from one entry to the next.

        The ledger commits entries with non-decreasing recording times, so time and position
        agree: a key change's or an event's freshness against its `recorded_at` then also
        ties it to a stretch of the log, and an entry written in later cannot claim an
        earlier time than the entries around it.
        """
        text = entry["recorded_at"]
        if text == self.recorded_text:
            return  # the same second as the entry before: the usual case under load
        try:
            at = parse_timestamp(text)
        except ValueError:
            self.fail(position, "entry format", "recorded_at is not a YYYY-MM-DDTHH:MM:SSZ time")
            return
        if self.recorded_at is not None and at < self.recorded_at:
            self.fail(position, "recorded time", "recorded_at is earlier than the previous entry's")
        self.recorded_at, self.recorded_text = at, text

    # step 3 ------------------------------------------------------------------------------

    def parse(self, position: int, raw: bytes) -> dict[str, Any] | None:
        """JSON of a known kind with its members (the canonical form is checked by a worker)."""
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            self.fail(position, "entry format", "entry bytes are not JSON")
            return None
        kind = entry.get("kind") if isinstance(entry, dict) else None
        expected = set(ENTRY_MEMBERS.get(str(kind), ()))
        if kind == "registry" and entry.get("action") == "key.revoked":
            expected.add("compromised_since")
        if not expected or set(entry) != expected:
            self.fail(position, "entry format", "unknown entry kind or members")
            return None
        return dict(entry)

    # step 4 ------------------------------------------------------------------------------

    def registry(self, position: int, entry: dict[str, Any]) -> None:
        action, agency = entry["action"], entry["agency"]
        try:
            key = crypto.parse_verify_key(entry["key"])
        except crypto.BadKeyLine:
            self.fail(position, "key registry", "the key is not a C2SP verifier key line")
            return
        if key.name != agency or action not in REGISTRY_ACTIONS:
            self.fail(position, "key registry", "key name or action does not fit the agency")
            return
        keys = self.keys.setdefault(agency, {})
        if action != "key.revoked":
            # A key id names one key for the whole log. Registered again after its
            # revocation, a stolen key would sign again with no trace of its compromise
            # (the server holds the log key: replaying the original, validly signed
            # `key.added` is within its reach, forging an agency signature is not).
            if key.key_id in self.key_ids:
                self.fail(
                    position,
                    "key registry",
                    f"key {key.key_id} was registered earlier in the log: "
                    "a key id cannot be registered twice",
                )
                return
            self.key_ids.add(key.key_id)
        if action == "agency.registered":
            trusted = self.trusted.get(agency)
            if keys:
                self.fail(position, "key registry", f"agency {agency} registered twice")
            else:
                if trusted is None or trusted.line() != key.line():
                    self.unverified[agency] = UnverifiedAgency(position, missing=trusted is None)
                keys[key.key_id] = KeyState(key, position, entry["recorded_at"])
        elif action == "key.added":
            self.key_added(position, entry, key, keys)
        elif action == "key.revoked":
            state = keys.get(key.key_id)
            if state is None or state.revoked_at is not None:
                self.fail(position, "key registry", "revocation of a key that is not current")
                return
            state.revoked_at, state.revoked_time = position, entry["recorded_at"]
            since = entry.get("compromised_since")
            state.compromised_since = since if isinstance(since, int) else None
            if state.compromised_since is not None:
                # The revocation comes after the events it casts doubt on: flag them now.
                for flagged in state.signed[bisect_left(state.signed, state.compromised_since) :]:
                    self.flags.append(
                        AuditFailure(
                            "compromised key",
                            f"signed by a key reported compromised from position {since}",
                            flagged,
                        )
                    )
            state.signed = array("q")  # nothing it signs from here on verifies

    def key_added(
        self,
        position: int,
        entry: dict[str, Any],
        key: crypto.VerifyKey,
        keys: dict[str, KeyState],
    ) -> None:
        signatures = entry["signatures"]
        current = {k: s for k, s in keys.items() if s.revoked_at is None}
        recorded = parse_timestamp(entry["recorded_at"])
        signers = set()
        stale = False
        if not isinstance(signatures, list):
            signatures = []
        for sig in signatures:
            try:
                signed_at = parse_timestamp(sig["signed_at"])
            except (KeyError, TypeError, ValueError):
                continue
            # The ledger takes a key change only signed within the freshness window, as
            # an event: one recorded far from its signing time is a replay of old
            # signatures (or a back-dated key change), whoever signed it.
            if abs((recorded - signed_at).total_seconds()) > self.freshness_s + 1:
                stale = True
                continue
            try:
                signer = key if sig["key"] == key.key_id else current[sig["key"]].key
                message = key_change_message(
                    self.origin, entry["agency"], key.line(), sig["signed_at"]
                )
                crypto.verify(signer, message, crypto.b64decode_strict(sig["signature"]))
                signers.add("new" if signer == key else "current")
            except (KeyError, TypeError, ValueError, crypto.BadSignature):
                continue
        if stale:
            self.fail(
                position,
                "key change signatures",
                "a key-change signature's signed_at is further from recorded_at than "
                "freshness allows",
            )
            return
        if signers != {"new", "current"}:
            self.fail(
                position,
                "key change signatures",
                "a key change must be signed by a current key and by the new key",
            )
            return
        keys[key.key_id] = KeyState(key, position, entry["recorded_at"])

    # step 5 and 6 ------------------------------------------------------------------------

    def event(self, position: int, entry: dict[str, Any]) -> None:
        self.events += 1
        env = entry["envelope"]
        if not isinstance(env, dict) or set(env) != set(ENVELOPE_MEMBERS):
            self.fail(position, "entry format", "the envelope's members are not the contract's")
            return
        if env["log"] != self.origin:
            self.fail(position, "origin", "the event names another log")
        if not isinstance(env["facts"], dict):
            self.fail(position, "entry format", "facts is not an object")
            return
        lag = parse_timestamp(entry["recorded_at"]) - parse_timestamp(env["signed_at"])
        if abs(lag.total_seconds()) > self.freshness_s + 1:
            # The gates use recorded_at as "now": the server may not move it far from the
            # time the agency signed (back-dating a share past a consent's expiry).
            self.fail(
                position,
                "recorded time",
                "recorded_at is further from the agency's signed_at than freshness allows",
            )
        agency = env["agency"]
        unverified = self.unverified.get(agency)
        if agency not in self.trusted and unverified is None:  # and never registered
            self.fail(
                position,
                "agency keys",
                f"event by agency {agency}, which is not in the auditor's agency keys",
            )
            return
        state = self.keys.get(agency, {}).get(env["key"])
        if state is None or (state.revoked_at is not None and state.revoked_at < position):
            self.fail(
                position,
                "signing key",
                "signed by a key that is not registered, or revoked, at this position",
            )
        elif unverified is not None:  # said once, for all its events
            unverified.events += 1
            state.signed.append(position)
        else:
            self.signer = state.key.raw
            state.signed.append(position)
        self.recipients(position, env)
        self.gates(position, entry, env)
        self.event_id(position, env["event_id"])

    def event_id(self, position: int, event_id: object) -> None:
        """An event is recorded once: the same signed event again is a replay (a consent
        granted twice, a share counted twice), however valid its signature."""
        if not isinstance(event_id, str) or not is_uuid4(event_id):
            self.fail(position, "event ids", "the event id is not a lowercase UUID v4")
            return
        value = int(event_id.replace("-", ""), 16)
        if value in self.event_ids:
            self.fail(
                position,
                "event ids",
                "the event id was recorded earlier in the log: an event is recorded once",
            )
            return
        self.event_ids.add(value)

    def recipients(self, position: int, env: dict[str, Any]) -> None:
        """Every agency an event names as a recipient is registered (before this position)
        and not removed (it keeps a key that is not revoked).

        Otherwise whoever registers that id later (a typo's owner, or the server itself)
        reads what the consent, referral or share disclosed to it.
        """
        for name in NAMED_AGENCY_FACTS.get(env["type"], ()):
            value = env["facts"].get(name)
            for agency in value if isinstance(value, list) else [value]:
                keys = self.keys.get(agency) if isinstance(agency, str) else None
                if keys and any(state.revoked_at is None for state in keys.values()):
                    continue
                self.tally.refuse(env["type"], position)
                shown = agency if is_agency_id(agency) else "a malformed agency id"
                self.fail(
                    position,
                    "gates",
                    f"facts.{name} names {shown}, not a registered agency at this position",
                )

    def gates(self, position: int, entry: dict[str, Any], env: dict[str, Any]) -> None:
        etype, facts = env["type"], env["facts"]
        case = self.cases.get(env["case_id"])
        try:
            self.tally.gate(etype)
            now = parse_timestamp(entry["recorded_at"])
            if case is None and etype != "case.opened":
                raise LedgerError(f"{etype} for a case that was never opened")
            if case is not None:
                if etype == "case.opened":
                    raise LedgerError("case.opened for a case that already exists")
                if case.erased and etype != "notice.acknowledged":
                    raise LedgerError(f"{etype} appended to an erased case")
                if env["agency"] not in case.related:
                    raise LedgerError("appended by an agency with no relation to the case")
            if entry["role"] not in AGENCY_ROLES:
                raise LedgerError(f"appended with a {entry['role']} token")
            check_references(case, etype, facts)
            check_permission(
                case, etype, facts, agency=env["agency"], role=entry["role"], actor=entry["actor"]
            )
            if case is not None:
                check_consent_gate(case, etype, facts, now, None, agency=env["agency"])
        except (LedgerError, KeyError, TypeError, ValueError) as exc:
            message = exc.message if isinstance(exc, LedgerError) else "malformed facts"
            check = "two-supervisor rule" if etype == "case.erased" else "gates"
            self.fail(position, check, message)
            self.tally.refuse(etype, position)
        if case is None:
            case = self.cases[env["case_id"]] = CaseState(case_id=env["case_id"])
        if etype == "notice.acknowledged":
            self.acknowledgement(position, env, case)
        try:
            case.apply(env, entry["actor"], entry["recorded_at"])
            if etype in ACK_KINDS:
                readers = self.readers.get(case.case_id, set())
                told = told_of(case, etype, facts, env["agency"], readers)
                self.told[position] = _Told(
                    case.case_id, etype, frozenset(told), entry["recorded_at"]
                )
        except (KeyError, TypeError, ValueError):
            self.fail(position, "gates", "the event cannot be applied to its case")

    def acknowledgement(self, position: int, env: dict[str, Any], case: CaseState) -> None:
        """Only an agency a withdrawal or erasure told acknowledges it, and once: the server
        keeps the notices, the log alone says who they told."""
        facts, agency = env["facts"], env["agency"]
        at = facts.get("position")
        told = self.told.get(at) if isinstance(at, int) else None
        if told is None or told.case_id != case.case_id or told.kind != facts.get("kind"):
            self.fail(
                position,
                "acknowledgements",
                "acknowledges no withdrawal or erasure of this case at that position",
            )
        elif agency not in told.agencies:
            self.fail(
                position,
                "acknowledgements",
                f"acknowledged by {agency}, which that {told.kind} did not tell",
            )
        elif (facts["position"], agency) in case.acknowledged:
            self.fail(position, "acknowledgements", "acknowledged twice by the same agency")

    def unacknowledged(
        self, cases: Mapping[str, CaseState], before: datetime
    ) -> list[Unacknowledged]:
        """Every agency told of a withdrawal or erasure recorded before `before` that has
        not acknowledged it."""
        out = []
        for position, told in sorted(self.told.items()):
            if parse_timestamp(told.at) >= before:
                continue
            acked = cases[told.case_id].acknowledged
            out += [
                Unacknowledged(position, told.kind, told.case_id, agency, told.at)
                for agency in sorted(told.agencies)
                if (position, agency) not in acked
            ]
        return out

    def access(self, position: int, entry: dict[str, Any]) -> None:
        case = self.cases.get(entry["case_id"])
        agency = entry["agency"]
        self.readers.setdefault(entry["case_id"], set()).add(agency)
        if case is None or agency not in case.related:
            self.fail(position, "access", "unsealed read by an agency with no relation to it")
            return
        if case.erased:
            self.fail(position, "access", "unsealed read of an erased case")
            return
        if agency == case.holder:
            return
        # The server's rule (gates.py): reads follow what was sent to the agency, under a
        # consent that still counts; attrs alone also for a referral's recipient.
        now = parse_timestamp(entry["recorded_at"])
        categories = set(entry["categories"])
        if categories and not categories <= disclosed_categories(case, agency, now, None):
            self.fail(position, "access", "read categories not sent to it under a counting consent")
        elif not categories and not may_unseal_attrs(case, agency, now, None):
            self.fail(position, "access", "unsealed attrs of a case nothing was sent to it of")


def verify(
    checkpoint_text: str,
    entries: Iterable[bytes],
    log_key: crypto.VerifyKey,
    agency_keys: Mapping[str, crypto.VerifyKey],
    saved: SavedState | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    freshness_s: int = 300,
    ack_days: int = 7,
    now: datetime | None = None,
) -> AuditReport:
    """Verify the log up to the checkpoint; the steps are in the `ledger.audit` docstring."""
    origin = log_key.name
    # 1. The checkpoint is signed by the log key the auditor trusts.
    try:
        checkpoint = verify_checkpoint(checkpoint_text, log_key, origin)
    except NoteError as exc:
        report = AuditReport(origin, 0, "")
        report.failures.append(AuditFailure("checkpoint signature", str(exc)))
        return report
    report = AuditReport(origin, checkpoint.size, crypto.b64(checkpoint.root))
    verifier = _Verifier(origin, agency_keys, freshness_s)
    checks = Checks(workers, expected=checkpoint.size)
    tree = merkle.MemoryTree()
    leaves: list[bytes] = []  # appended to the tree a chunk at a time
    saved_root: bytes | None = None
    count = 0
    for raw in entries:
        position = count
        count += 1
        if position >= checkpoint.size:
            break
        leaves.append(merkle.leaf_hash(raw))
        at_saved = saved is not None and count == saved.size
        if len(leaves) >= CHUNK or at_saved:
            tree.append(leaves)
            leaves = []
        if at_saved:
            saved_root = tree.root()
        # 3. Canonical bytes of a known kind; then 4-6 by kind.
        entry = verifier.parse(position, raw)
        if entry is not None:
            check = {
                "registry": verifier.registry,
                "event": verifier.event,
                "access": verifier.access,
            }[entry["kind"]]
            verifier.signer = None
            try:
                verifier.tally.entry(entry)
                verifier.recorded(position, entry)
                check(position, entry)
            except Exception:  # a malformed entry is reported, never a crash of the audit
                verifier.fail(position, "entry format", "malformed entry")
            checks.add(position, raw, verifier.signer)
        if progress is not None:
            progress(1)
    if leaves:
        tree.append(leaves)
    report.ran.update(range(2, 7))
    # 2. Completeness.
    if count < checkpoint.size:
        verifier.fail(
            count,
            "completeness",
            f"{checkpoint.size - count} entries missing below the checkpoint size",
        )
    # 3 and 5. Canonical bytes and signatures, from the worker processes.
    verifier.failures.extend(checks.results())
    report.signatures = checks.signatures
    # 7. The root recomputed from every entry.
    if count >= checkpoint.size:
        report.ran.add(7)
        if tree.root() != checkpoint.root:
            verifier.fail(
                None, "root", "the root recomputed from the entries is not the checkpoint's"
            )
    # 8. Consistency with the checkpoint saved last time.
    if saved is not None:
        report.ran.add(8)
        if saved.origin != origin or saved.size > checkpoint.size:
            verifier.fail(
                None,
                "consistency with saved checkpoint",
                "the log shrank or changed origin since the saved checkpoint",
            )
        elif saved.size > 0 and saved_root != saved.root:
            verifier.fail(
                None,
                "consistency with saved checkpoint",
                f"the first {saved.size} entries no longer give the saved root: "
                "the history was rewritten (a fork)",
            )
    for agency, unverified in verifier.unverified.items():  # once each, at its registration
        verifier.fail(unverified.registered_at, "agency keys", unverified.message(agency))
    report.events = verifier.events
    report.tally, report.keys, report.saved = verifier.tally, key_history(verifier.keys), saved
    report.tally.read = min(count, checkpoint.size)
    report.ack_days = ack_days
    before = (now or datetime.now(UTC)) - timedelta(days=ack_days)
    report.unacknowledged = verifier.unacknowledged(verifier.cases, before)
    report.failures = sorted(verifier.failures, key=failure_order)
    report.flags = sorted(verifier.flags, key=failure_order)
    return report
