"""Witness policies (the Sigsum format) and a checkpoint held against one: k-of-n groups, any,
all, nested groups and quorum none; every malformed line refused with its number; the quorum
fails closed and names the missing witnesses; cosignature times that stand out are flagged."""

from __future__ import annotations

import pytest

from ledger.audit.policy import PolicyError, parse_policy
from ledger.audit.quorum import check_quorum, skewed
from ledger.contract import crypto
from ledger.contract.notes import sign_note
from ledger.log.checkpoint import Checkpoint
from ledger.log.cosignature import cosign

ORIGIN = "ledger.example.org/log"
LOG = crypto.generate_signing_key(ORIGIN)
NAMES = ("ngo-a", "uni", "press", "regulator")
WITNESSES = {
    n: crypto.generate_signing_key(f"witness.{n}.example", crypto.COSIGNATURE_TYPE) for n in NAMES
}
NOW = 1_790_000_000


def policy_text(*tail: str) -> str:
    lines = [f"log {LOG.verify_key.line()} https://ledger.example.org"]
    lines += [f"witness {n} {k.verify_key.line()}" for n, k in WITNESSES.items()]
    return "\n".join([*lines, *tail]) + "\n"


REFERENCE = policy_text(
    "group civil 2 ngo-a uni press   # 2 of 3 independent witnesses",
    "group required all civil regulator",
    "quorum required",
)


def cosigned(*names: str, at: int = NOW, size: int = 5) -> str:
    body = Checkpoint(ORIGIN, size, bytes(32)).body()
    return sign_note(body, LOG) + "".join(cosign(body, WITNESSES[n], at) for n in names)


def test_the_reference_example_parses() -> None:
    policy = parse_policy(REFERENCE)
    assert policy.logs == (LOG.verify_key,)
    assert list(policy.witnesses) == list(NAMES)
    assert policy.groups["civil"].threshold == 2
    assert policy.groups["required"].threshold == 2  # all: both members
    assert policy.quorum == "required"
    assert policy.witnesses["ngo-a"].key == WITNESSES["ngo-a"].verify_key


@pytest.mark.parametrize(
    ("acted", "ok"),
    [
        ({"ngo-a", "uni", "regulator"}, True),
        ({"uni", "press", "regulator"}, True),
        ({"ngo-a", "uni", "press"}, False),  # the regulator always
        ({"ngo-a", "regulator"}, False),  # only 1 of the civil 3
        (set(), False),
    ],
)
def test_nested_groups_need_k_of_n_and_all(acted: set[str], ok: bool) -> None:
    assert parse_policy(REFERENCE).satisfied(acted) is ok


def test_any_and_a_single_witness_and_none() -> None:
    any_of = parse_policy(policy_text("group g any ngo-a uni", "quorum g"))
    assert any_of.satisfied({"uni"}) and not any_of.satisfied({"press"})
    single = parse_policy(policy_text("quorum press"))
    assert single.satisfied({"press"}) and not single.satisfied({"ngo-a", "uni"})
    none = parse_policy(policy_text("quorum none"))
    assert none.quorum is None and none.satisfied(set())


def test_the_shortfall_names_the_missing_witnesses() -> None:
    policy = parse_policy(REFERENCE)
    text = policy.shortfall({"ngo-a", "regulator"})
    assert "no valid cosignature from uni, press" in text
    assert "group civil needs 2 of ngo-a, uni, press and has 1" in text
    assert policy.shortfall({"ngo-a", "uni", "regulator"}) == ""


@pytest.mark.parametrize(
    ("tail", "line", "says"),
    [
        (["quorum nobody"], 6, "not defined on an earlier line"),
        (["quorum civil", "group civil 2 ngo-a uni"], 6, "not defined"),  # used before defined
        (["group g 4 ngo-a uni press", "quorum g"], 6, "1 to 3"),
        (["group g 0 ngo-a", "quorum g"], 6, "1 to 1"),
        (["group g 02 ngo-a uni", "quorum g"], 6, "not '02'"),
        (["group g two ngo-a uni", "quorum g"], 6, "not 'two'"),
        (["group g 1 ngo-a ngo-a", "quorum g"], 6, "twice"),
        (["group g 1", "quorum g"], 6, "group <name>"),
        (["group uni 1 ngo-a", "quorum uni"], 6, "defined twice"),
        (["group none 1 ngo-a", "quorum none"], 6, "'none' is not a name"),
        (["quorum ngo-a", "quorum uni"], 7, "exactly one quorum"),
        (["quorum ngo-a uni"], 6, "quorum <name>|none"),
        (["witness extra"], 6, "witness <name> <vkey>"),
        (["quroum ngo-a"], 6, "unknown keyword"),
        ([f"witness w2 {LOG.verify_key.line()}", "quorum w2"], 6, "cosignature/v1 key"),
        ([f"log {WITNESSES['uni'].verify_key.line()}", "quorum uni"], 6, "Ed25519 note key"),
        ([f"witness hex {WITNESSES['uni'].verify_key.raw.hex()}", "quorum hex"], 6, "vkey"),
        ([], 0, "needs a quorum line"),
    ],
)
def test_a_malformed_policy_is_refused_naming_its_line(
    tail: list[str], line: int, says: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy_text(*tail))
    assert caught.value.line == line
    assert says in str(caught.value)


def test_a_policy_without_a_log_is_refused() -> None:
    with pytest.raises(PolicyError, match="at least one log"):
        parse_policy(f"witness w {WITNESSES['uni'].verify_key.line()}\nquorum w\n")


def test_comments_blank_lines_and_spacing_carry_no_meaning() -> None:
    spaced = REFERENCE.replace(" ", "   \t").replace("\n", "\n\n# a comment line\n")
    assert parse_policy(spaced) == parse_policy(REFERENCE)


# -- a checkpoint against a policy ------------------------------------------------------------


def test_two_of_three_passes_with_two_and_three_of_three_fails_naming_the_missing() -> None:
    note = cosigned("ngo-a", "press")
    two = parse_policy(policy_text("group g 2 ngo-a uni press", "quorum g"))
    three = parse_policy(policy_text("group g all ngo-a uni press", "quorum g"))
    passed = check_quorum(note, two, LOG.verify_key, now=NOW)
    assert passed.ok and passed.cosigned == {"ngo-a": NOW, "press": NOW} and passed.size == 5
    failed = check_quorum(note, three, LOG.verify_key, now=NOW)
    assert not failed.ok
    assert "no valid cosignature from uni" in failed.failures[0].message


def test_a_checkpoint_without_cosignatures_fails_a_quorum_and_passes_none() -> None:
    note = cosigned()
    assert not check_quorum(note, parse_policy(REFERENCE), LOG.verify_key, now=NOW).ok
    none = parse_policy(policy_text("quorum none"))
    assert check_quorum(note, none, LOG.verify_key, now=NOW).ok


def test_a_cosignature_that_does_not_verify_rejects_the_checkpoint() -> None:
    note = cosigned("ngo-a", "uni", "press", "regulator")
    body = Checkpoint(ORIGIN, 6, bytes(32)).body()  # uni's line for another checkpoint
    forged = note + cosign(body, WITNESSES["uni"], NOW)
    result = check_quorum(forged, parse_policy(REFERENCE), LOG.verify_key, now=NOW)
    assert not result.ok and "does not verify" in result.failures[0].message


def test_a_policy_that_does_not_name_the_log_accepts_nothing() -> None:
    other = crypto.generate_signing_key(ORIGIN)
    text = REFERENCE.replace(LOG.verify_key.line(), other.verify_key.line())
    result = check_quorum(cosigned(*NAMES), parse_policy(text), LOG.verify_key, now=NOW)
    assert not result.ok and "names no log" in result.failures[0].message


def test_a_checkpoint_not_signed_by_the_log_fails() -> None:
    impostor = crypto.generate_signing_key(ORIGIN)
    body = Checkpoint(ORIGIN, 5, bytes(32)).body()
    note = sign_note(body, impostor) + "".join(cosign(body, WITNESSES[n], NOW) for n in NAMES)
    result = check_quorum(note, parse_policy(REFERENCE), LOG.verify_key, now=NOW)
    assert not result.ok and "not the log's" in result.failures[0].message


def test_a_cosignature_time_far_from_the_others_is_reported() -> None:
    body = Checkpoint(ORIGIN, 5, bytes(32)).body()
    note = sign_note(body, LOG) + "".join(
        cosign(body, WITNESSES[n], at)
        for n, at in [("ngo-a", NOW), ("uni", NOW + 2), ("press", NOW + 3_600), ("regulator", NOW)]
    )
    result = check_quorum(note, parse_policy(REFERENCE), LOG.verify_key, now=NOW + 3_600)
    assert result.ok
    assert [f.message.split(",")[0] for f in result.flags] == [
        f"witness press cosigned at {NOW + 3_600}"
    ]


def test_a_cosignature_time_ahead_of_the_clock_is_reported() -> None:
    flags = skewed({"a": NOW + 1_000, "b": NOW + 1_001}, now=NOW, skew_s=300)
    assert len(flags) == 2 and all("ahead of this clock" in f.message for f in flags)
    assert skewed({"a": NOW, "b": NOW + 10}, now=NOW, skew_s=300) == []
