"""Checks every CycloneDX test makes of a lorahub BOM: the 1.6 schema (cyclonedx-python-lib's strict validator, a
dev dependency lorahub never imports at run time) and what the schema cannot check: unique bom-refs, references
that resolve, and reading ``lorahub:`` properties and nested pedigree back."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

PREFIX = "lorahub:"


def assert_valid(text: str) -> dict[str, Any]:
    """The BOM's text validates against the CycloneDX 1.6 JSON schema with no error, and its references hold."""
    validation = pytest.importorskip("cyclonedx.validation.json")
    schema = pytest.importorskip("cyclonedx.schema")
    error = validation.JsonStrictValidator(schema.SchemaVersion.V1_6).validate_str(text)
    assert error is None, str(error)
    bom: dict[str, Any] = json.loads(text)
    assert_references_hold(bom)
    return bom


def components(bom: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every component of the BOM: the subject, its ancestors at any depth, and the listed ones."""
    yield from _walk(bom["metadata"]["component"])
    for component in bom.get("components", []):
        yield from _walk(component)


def _walk(component: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield component
    for ancestor in component.get("pedigree", {}).get("ancestors", []):
        yield from _walk(ancestor)


def ancestors(component: Mapping[str, Any]) -> list[dict[str, Any]]:
    ancestors: list[dict[str, Any]] = component.get("pedigree", {}).get("ancestors", [])
    return ancestors


def values(component: Mapping[str, Any], name: str) -> list[str]:
    """The values of the ``lorahub:NAME`` properties of a component (or of a model card)."""
    return [p["value"] for p in component.get("properties", []) if p["name"] == PREFIX + name]


def value(component: Mapping[str, Any], name: str) -> str | None:
    found = values(component, name)
    assert len(found) <= 1, f"{name} appears {len(found)} times"
    return found[0] if found else None


def by_ref(bom: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["bom-ref"]: c for c in components(bom) if "bom-ref" in c}


def assert_references_hold(bom: Mapping[str, Any]) -> None:
    """What JSON Schema cannot say: each bom-ref is unique, and every reference names one."""
    refs = [c["bom-ref"] for c in components(bom) if "bom-ref" in c]
    assert len(refs) == len(set(refs)), "a bom-ref appears twice"
    named = set(refs)
    used = [d["ref"] for d in bom["dependencies"]] + [r for d in bom["dependencies"] for r in d.get("dependsOn", [])]
    for component in components(bom):
        datasets = component.get("modelCard", {}).get("modelParameters", {}).get("datasets", [])
        used += [d["ref"] for d in datasets]
        used += values(component, "base-model") + values(component, "described-above")
    assert set(used) <= named, f"references to nothing: {set(used) - named}"
    # an uncatalogued parent's dependencies are unknown, which CycloneDX says by leaving it out of the graph
    known = {c["bom-ref"] for c in components(bom) if "bom-ref" in c and value(c, "catalogued") != "false"}
    assert {d["ref"] for d in bom["dependencies"]} == known, "every known component is in the dependency graph"
