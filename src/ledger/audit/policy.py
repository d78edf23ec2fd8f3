"""Witness policies, in the Sigsum policy format: the logs a verifier accepts and the quorum of
witness cosignatures it requires on their checkpoints.

Line based; items separated by white space; `#` starts a comment to the end of the line:

    log <vkey> [<url>]                       a log the verifier accepts
    witness <name> <vkey> [<url>]            a witness, named locally in this file
    group <name> <k>|all|any <member>...     acts when k of its n members act (any: 1, all: n)
    quorum <name>|none                       exactly one: the witness or group that must act

A name is defined on a line before any line that uses it (so there are no cycles); witnesses
and groups share one namespace. A witness acts when it made a valid cosignature on the
checkpoint being verified. Keys are C2SP verifier key lines, not Sigsum's raw hex: a log's is
its Ed25519 note key (type 0x01), a witness's its cosignature/v1 key (type 0x04), whose name
is the one its cosignature lines carry.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass

from ledger.contract import crypto

NONE = "none"
_K = re.compile(r"[1-9][0-9]{0,5}")


class PolicyError(ValueError):
    """A policy file that does not follow the format; says which line and why."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"policy line {line}: {message}")


@dataclass(frozen=True)
class PolicyWitness:
    name: str
    key: crypto.VerifyKey
    url: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """The accepted logs, the witnesses and groups by name, and the quorum (None: none)."""

    logs: tuple[crypto.VerifyKey, ...]
    witnesses: dict[str, PolicyWitness]
    groups: dict[str, Group]
    quorum: str | None

    def accepts(self, log_key: crypto.VerifyKey) -> bool:
        return log_key in self.logs

    def acts(self, name: str, acted: Set[str]) -> bool:
        """Whether a witness or group acts, given the witnesses that cosigned."""
        group = self.groups.get(name)
        if group is None:
            return name in acted
        return sum(self.acts(m, acted) for m in group.members) >= group.threshold

    def satisfied(self, acted: Set[str]) -> bool:
        return self.quorum is None or self.acts(self.quorum, acted)

    def witnesses_under(self, name: str) -> list[str]:
        """Every witness a group counts, directly or through its groups, in file order."""
        group = self.groups.get(name)
        if group is None:
            return [name]
        seen: list[str] = []
        for member in group.members:
            seen += [w for w in self.witnesses_under(member) if w not in seen]
        return seen

    def shortfall(self, acted: Set[str]) -> str:
        """What the quorum lacks, naming the witnesses whose cosignatures are missing."""
        if self.satisfied(acted):
            return ""
        assert self.quorum is not None
        short: list[str] = []

        def visit(name: str) -> None:
            group = self.groups.get(name)
            if group is None or self.acts(name, acted):
                return
            have = [m for m in group.members if self.acts(m, acted)]
            short.append(
                f"group {name} needs {group.threshold} of {', '.join(group.members)}"
                f" and has {len(have)}"
            )
            for member in group.members:
                visit(member)

        visit(self.quorum)
        missing = [w for w in self.witnesses_under(self.quorum) if w not in acted]
        why = f" ({'; '.join(short)})" if short else ""
        return f"quorum {self.quorum} not met: no valid cosignature from {', '.join(missing)}{why}"


def parse_policy(text: str) -> Policy:
    """Parse a policy file strictly (PolicyError names the line that is wrong)."""
    logs: list[crypto.VerifyKey] = []
    witnesses: dict[str, PolicyWitness] = {}
    groups: dict[str, Group] = {}
    quorum: tuple[str | None] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        items = raw.split("#", 1)[0].split()
        if not items:
            continue
        keyword, args = items[0], items[1:]
        if keyword == "log":
            if len(args) not in (1, 2):
                raise PolicyError(number, "a log line is: log <vkey> [<url>]")
            logs.append(_key(number, args[0], crypto.ED25519_TYPE, "log"))
        elif keyword == "witness":
            if len(args) not in (2, 3):
                raise PolicyError(number, "a witness line is: witness <name> <vkey> [<url>]")
            name = _new_name(number, args[0], witnesses, groups)
            key = _key(number, args[1], crypto.COSIGNATURE_TYPE, "witness")
            witnesses[name] = PolicyWitness(name, key, args[2] if len(args) == 3 else None)
        elif keyword == "group":
            if len(args) < 3:
                raise PolicyError(number, "a group line is: group <name> <k>|all|any <member>...")
            name = _new_name(number, args[0], witnesses, groups)
            members = tuple(args[2:])
            for member in members:
                if member not in witnesses and member not in groups:
                    raise PolicyError(number, f"{member!r} is not defined on an earlier line")
            if len(set(members)) != len(members):
                raise PolicyError(number, f"group {name} names a member twice")
            groups[name] = Group(name, _threshold(number, args[1], len(members)), members)
        elif keyword == "quorum":
            if len(args) != 1:
                raise PolicyError(number, "a quorum line is: quorum <name>|none")
            if quorum is not None:
                raise PolicyError(number, "a policy has exactly one quorum line")
            name = args[0]
            if name != NONE and name not in witnesses and name not in groups:
                raise PolicyError(number, f"{name!r} is not defined on an earlier line")
            quorum = (None if name == NONE else name,)
        else:
            raise PolicyError(number, f"unknown keyword {keyword!r}: log, witness, group, quorum")
    if quorum is None:
        raise PolicyError(0, "a policy needs a quorum line (quorum none requires no witness)")
    if not logs:
        raise PolicyError(0, "a policy names at least one log")
    return Policy(tuple(logs), witnesses, groups, quorum[0])


def _key(number: int, line: str, signature_type: bytes, what: str) -> crypto.VerifyKey:
    try:
        return crypto.parse_verify_key(line, signature_type)
    except crypto.BadKeyLine as exc:
        raise PolicyError(number, f"the {what} key: {exc} (keys are C2SP vkey lines)") from exc


def _new_name(
    number: int, name: str, witnesses: dict[str, PolicyWitness], groups: dict[str, Group]
) -> str:
    if name == NONE:
        raise PolicyError(number, "'none' is not a name (quorum none means no witness)")
    if name in witnesses or name in groups:
        raise PolicyError(number, f"{name!r} is defined twice")
    return name


def _threshold(number: int, text: str, members: int) -> int:
    if text == "all":
        return members
    if text == "any":
        return 1
    if not _K.fullmatch(text) or not 1 <= int(text) <= members:
        raise PolicyError(number, f"a group's k is all, any or 1 to {members}, not {text!r}")
    return int(text)
