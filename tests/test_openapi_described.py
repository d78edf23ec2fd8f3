"""Every member, parameter and enumeration of the OpenAPI document is described (issue 21):
the document at /openapi.json is walked whole — components (the per-type facts and attrs of
x-event-types included), request bodies, answers and parameters — and any property without
a description, or an enumeration outside a described member, fails the test by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import World, deployment, open_world


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = Path(tmp_path_factory.mktemp("openapi"))
    with deployment("sqlite", root) as settings, open_world(settings) as world:
        yield served(world)


def served(world: World) -> dict[str, Any]:
    r = world.http.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def undescribed(node: Any, where: str, inside: bool = False) -> Iterator[str]:
    """Where a property lacks a description, or an enumeration stands outside a described
    property (`inside`: within one, as its items, key names or alternatives)."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from undescribed(item, f"{where}[{i}]", inside)
        return
    if not isinstance(node, dict):
        return
    if "enum" in node and not inside and not node.get("description"):
        yield f"{where} (an enumeration)"
    for name, prop in node.get("properties", {}).items():
        if not isinstance(prop, dict) or not str(prop.get("description", "")).strip():
            yield f"{where}.{name}"
        yield from undescribed(prop, f"{where}.{name}", inside=True)
    for key, value in node.items():
        if key in ("properties", "enum", "examples", "example", "default"):
            continue
        yield from undescribed(value, f"{where}/{key}", inside)


def test_every_member_and_enumeration_is_described(document: dict[str, Any]) -> None:
    found = list(undescribed(document.get("components", {}), "components"))
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for part in ("requestBody", "responses"):
                found += undescribed(operation.get(part, {}), f"{method.upper()} {path} {part}")
    assert not found, "undescribed:\n" + "\n".join(found)


def test_every_parameter_is_described(document: dict[str, Any]) -> None:
    found = [
        f"{method.upper()} {path} ?{parameter['name']}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        for parameter in operation.get("parameters", ())
        if not str(parameter.get("description", "")).strip()
    ]
    assert not found, "undescribed parameters:\n" + "\n".join(found)


def test_the_walk_sees_what_it_checks(document: dict[str, Any]) -> None:
    """The walk reaches the per-type schemas and the enumerations (a walk that saw nothing
    would pass anything), and would name a member left without a description."""
    schemas = document["components"]["schemas"]
    assert {"facts.consent.granted", "attrs.referral.made", "CaseSummary"} <= set(schemas)
    granted = schemas["facts.consent.granted"]["properties"]
    assert "survivor" in str(granted["given_by"]) and granted["given_by"]["description"]
    broken = {"components": {"schemas": {"X": {"properties": {"y": {"type": "string"}}}}}}
    assert list(undescribed(broken, "c")) == ["c/components/schemas/X.y"]
    bare = {"properties": {"z": {"description": "z", "items": {"enum": ["a"]}}}, "enum": ["b"]}
    assert list(undescribed(bare, "c")) == ["c (an enumeration)"]
