"""The house's rule: every import points down. Each module belongs to one part of the system,
a part may import only the parts below it (`BELOW`), and no two modules import each other,
directly or round a loop. Imports inside functions and under TYPE_CHECKING count too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "src" / "ledger", ROOT / "projections"]

# Each part, the parts it may import (besides itself), lowest first.
BELOW: dict[str, set[str]] = {
    "base": set(),  # errors, settings, private files, the concurrency toolkit, charts
    "contract": {"base"},  # the event contract and its rules: pure
    "log": {"base", "contract"},  # RFC 9162 log: hashing, proofs, checkpoints
    "audit": {"base", "contract", "log"},  # the auditor's verifier: needs no server
    "client": {"base", "contract", "log", "audit"},  # the agencies' SDK
    "storage": {"base", "contract", "log"},  # the stores, behind the log's interface
    "projections": {"base", "contract", "storage"},  # read models of the log
    "services": {"base", "contract", "log", "storage", "projections"},  # the application
    "ledger": {"base", "contract", "log", "storage", "projections", "services"},  # its root
    "interop": {"base", "contract", "log", "storage", "services", "ledger"},
    "api": {"base", "contract", "log", "storage", "projections", "services", "ledger", "interop"},
    # Parts that run as programs of their own, in their own trust domain: an agency's console
    # talks to the ledger only through the client SDK; a witness knows only the log's format.
    "console": {"base", "contract", "log", "audit", "client"},
    "witness": {"base", "contract", "log"},
}
# The command line and its programs (commands/: its groups beyond cli.py): may import any part.
TOOLS = {"cli", "bench", "demo", "commands"}
BASE = {"errors", "settings", "private_files", "concurrency", "server", "charts"}


def module_name(path: Path) -> str:
    base = ROOT / "src" if path.is_relative_to(ROOT / "src") else ROOT
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for source in SOURCES for p in sorted(source.rglob("*.py"))}


def part_of(module: str) -> str:
    if module.split(".")[0] == "projections":
        return "projections"
    parts = module.split(".")
    if len(parts) == 1:  # the package itself: its docstring and version
        return "base"
    second = parts[1]
    if second in BASE:
        return "base"
    if second == "deploy":  # builds the Ledger and its read models from settings
        return "ledger"
    if second in TOOLS:
        return "tools"
    return second


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules this one imports (a name imported from a package that is a
    module of its own counts as that module)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != module}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {m: imports_of(m, p, known) for m, p in found.items()}


def test_every_module_belongs_to_a_known_part() -> None:
    unknown = {m for m in modules() if part_of(m) not in {*BELOW, "tools"}}
    assert unknown == set(), f"add these to a part in BELOW: {sorted(unknown)}"


def test_every_import_points_down() -> None:
    upward = []
    for module, deps in graph().items():
        part = part_of(module)
        if part == "tools":
            continue
        for dep in sorted(deps):
            if dep == "ledger":  # the package itself: its version only
                continue
            target = part_of(dep)
            if target != part and target not in BELOW[part]:
                upward.append(f"{module} ({part}) imports {dep} ({target})")
    assert upward == []


def test_no_module_imports_itself_round_a_loop() -> None:
    edges = graph()
    # Package __init__ modules that only collect their children are not loops of their own.
    state: dict[str, int] = {}
    loops: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in sorted(edges[module]):
            if module.startswith(dep + "."):  # a module importing its own package's names
                continue
            if state.get(dep) == 1:
                loops.append([*trail[trail.index(dep) :], dep] if dep in trail else [module, dep])
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert loops == []


def test_the_parts_themselves_form_no_loop() -> None:
    done: set[str] = set()

    def depth(part: str, trail: tuple[str, ...]) -> None:
        assert part not in trail, f"BELOW has a loop: {' -> '.join((*trail, part))}"
        for lower in BELOW[part]:
            depth(lower, (*trail, part))
        done.add(part)

    for part in BELOW:
        depth(part, ())
    assert done == set(BELOW)


def test_no_module_is_over_about_500_lines() -> None:
    """About: 520 at most, so a docstring more does not force a split."""
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > 520}
    assert long == {}, "split these: one room per concept"
