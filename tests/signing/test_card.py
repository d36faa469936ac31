"""The card: strict parsing that names the field, the JSON Schema agreeing with it, and canonical bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from jsonschema import Draft202012Validator

from lorahub import errors
from lorahub.signing import Card, Identity, Parent, canonical_bytes
from tests.signing.helpers import DIGEST_A, card_dict, full_card, minimal_card

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "reference" / "card.schema.json"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@pytest.fixture(params=["full", "minimal"])
def card(request: pytest.FixtureRequest, alice: Identity) -> Card:
    return full_card(alice) if request.param == "full" else minimal_card(alice)


def test_round_trip(card: Card) -> None:
    data = card.to_dict()
    assert Card.from_dict(data) == card
    assert Card.from_dict(json.loads(json.dumps(data))) == card
    assert card.validate() is card


def test_minimal_card_has_every_field_with_empty_values(alice: Identity) -> None:
    data = minimal_card(alice).to_dict()
    assert data["schema"] == "lorahub.card/v1"
    assert data["hashes"] == {} and data["lineage"] == [] and data["trigger_words"] == []
    assert data["consent"] == {"status": "unknown", "record": None, "manifest_digest": None}
    assert data["license"]["commercial_use"] == [] and data["license"]["credit_required"] is None


def test_creator_may_be_null(alice: Identity, validator: Draft202012Validator) -> None:
    data = card_dict(minimal_card(alice))
    data["creator"] = None
    assert Card.from_dict(data).creator is None
    assert validator.is_valid(data)


def test_lists_and_tuples_build_equal_cards(alice: Identity) -> None:
    card = full_card(alice)  # built with lists
    assert isinstance(card.layer_kinds, tuple) and isinstance(card.lineage, tuple)
    assert isinstance(card.license.commercial_use, tuple)
    assert Card.from_dict(card.to_dict()) == card


def test_schema_accepts_what_cards_write(card: Card, validator: Draft202012Validator) -> None:
    errors_found = [e.message for e in validator.iter_errors(card.to_dict())]
    assert errors_found == []


Damage = Callable[[dict[str, Any]], object]

STRICT_FAILURES: list[tuple[str, Damage, str]] = [
    ("unknown top-level field", lambda d: d.update(colour="red"), "colour"),
    ("unknown nested field", lambda d: d["license"].update(nsfw=False), "license.nsfw"),
    ("unknown parent field", lambda d: d["lineage"][0].update(weight=1), "lineage[0].weight"),
    ("missing field", lambda d: d.pop("created"), "created"),
    ("missing nested field", lambda d: d["base_model"].pop("name"), "base_model.name"),
    ("float weight", lambda d: d["lineage"][0]["parameters"].update(weight=0.7), "lineage[0].parameters.weight"),
    ("float deep in the record", lambda d: d["consent"]["record"].update(share=[1, 0.5]), "consent.record.share[1]"),
    ("float version", lambda d: d.update(version=2.0), "version"),
    ("boolean version", lambda d: d.update(version=True), "version"),
    ("version zero", lambda d: d.update(version=0), "version"),
    ("string version", lambda d: d.update(version="2"), "version"),
    (
        "bad commercial use",
        lambda d: d["license"].update(commercial_use=["image", "free"]),
        "license.commercial_use[1]",
    ),
    ("none with others", lambda d: d["license"].update(commercial_use=["none", "sell"]), "license.commercial_use"),
    (
        "repeated commercial use",
        lambda d: d["license"].update(commercial_use=["sell", "sell"]),
        "license.commercial_use[1]",
    ),
    ("commercial use not a list", lambda d: d["license"].update(commercial_use="image"), "license.commercial_use"),
    ("string boolean", lambda d: d["license"].update(credit_required="yes"), "license.credit_required"),
    ("trigger words as a string", lambda d: d.update(trigger_words="pxl style"), "trigger_words"),
    ("trigger word not a string", lambda d: d.update(trigger_words=["ok", 3]), "trigger_words[1]"),
    ("empty trigger word", lambda d: d.update(trigger_words=[""]), "trigger_words[0]"),
    ("padded tag", lambda d: d.update(tags=[" style"]), "tags[0]"),
    ("repeated tag", lambda d: d.update(tags=["style", "style"]), "tags[1]"),
    ("uppercase digest", lambda d: d.update(content_digest="A" * 64), "content_digest"),
    ("digest with a newline", lambda d: d.update(content_digest="a" * 64 + "\n"), "content_digest"),
    ("short weights digest", lambda d: d["base_model"].update(weights_digest="abc"), "base_model.weights_digest"),
    ("bad name", lambda d: d.update(name="Pixel Art"), "name"),
    ("bad family", lambda d: d["base_model"].update(family="SDXL 1.0"), "base_model.family"),
    ("bad consent status", lambda d: d["consent"].update(status="yes"), "consent.status"),
    ("record not an object", lambda d: d["consent"].update(record=["a"]), "consent.record"),
    ("bad relation", lambda d: d["lineage"][1].update(relation="child-of"), "lineage[1].relation"),
    ("parameters not an object", lambda d: d["lineage"][0].update(parameters=None), "lineage[0].parameters"),
    ("local time", lambda d: d.update(created="2025-03-01T12:00:00+01:00"), "created"),
    ("impossible date", lambda d: d.update(created="2025-02-30T12:00:00Z"), "created"),
    ("unknown hash", lambda d: d["hashes"].update(md5="0" * 32), "hashes.md5"),
    ("short hash", lambda d: d["hashes"].update(autov2="abc"), "hashes.autov2"),
    ("content hash differs", lambda d: d["hashes"].update(content="f" * 64), "hashes.content"),
    ("huge integer", lambda d: d["consent"]["record"].update(items=2**53), "consent.record.items"),
    ("lone surrogate", lambda d: d.update(description="bad \ud800"), "description"),
    ("other schema", lambda d: d.update(schema="lorahub.card/v2"), "schema"),
    ("creator not an object", lambda d: d.update(creator="Alice"), "creator"),
    ("lineage not a list", lambda d: d.update(lineage={}), "lineage"),
]


@pytest.mark.parametrize(
    ("damage", "field"), [(d, f) for _, d, f in STRICT_FAILURES], ids=[n for n, _, _ in STRICT_FAILURES]
)
def test_strict_validation_names_the_field(alice: Identity, damage: Damage, field: str) -> None:
    data = card_dict(full_card(alice))
    damage(data)
    with pytest.raises(errors.CardError) as caught:
        Card.from_dict(data)
    assert f"card field {field}" in str(caught.value)


SCHEMA_AND_CODE_REJECT = [
    "unknown top-level field",
    "unknown nested field",
    "missing field",
    "float weight",
    "float deep in the record",
    "string version",
    "version zero",
    "bad commercial use",
    "none with others",
    "repeated commercial use",
    "string boolean",
    "trigger words as a string",
    "empty trigger word",
    "padded tag",
    "uppercase digest",
    "bad consent status",
    "bad relation",
    "local time",
    "unknown hash",
    "short hash",
    "huge integer",
    "other schema",
]


@pytest.mark.parametrize("name", SCHEMA_AND_CODE_REJECT)
def test_schema_and_from_dict_agree_on_invalid_cards(
    alice: Identity, validator: Draft202012Validator, name: str
) -> None:
    [damage] = [d for n, d, _ in STRICT_FAILURES if n == name]
    data = card_dict(full_card(alice))
    damage(data)
    assert not validator.is_valid(data)
    with pytest.raises(errors.CardError):
        Card.from_dict(data)


@pytest.mark.parametrize("value", [None, [], "card", 1])
def test_card_must_be_an_object(value: Any) -> None:
    with pytest.raises(errors.CardError, match="must be an object"):
        Card.from_dict(value)


def test_validate_checks_cards_built_in_code(alice: Identity) -> None:
    bad = Card(**{**_fields(full_card(alice)), "lineage": (Parent(DIGEST_A, "merged-from", {"weight": 0.7}),)})
    with pytest.raises(errors.CardError, match=r"lineage\[0\]\.parameters\.weight"):
        bad.validate()
    with pytest.raises(errors.CardError):
        canonical_bytes(bad)


def _fields(card: Card) -> dict[str, Any]:
    return {name: getattr(card, name) for name in card.__dataclass_fields__}


def _reverse_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


def test_canonical_bytes(alice: Identity) -> None:
    card = full_card(alice)
    payload = canonical_bytes(card)
    assert payload == rfc8785.dumps(card.to_dict())
    shuffled = _reverse_keys(card.to_dict())
    assert list(shuffled) != list(card.to_dict())
    assert canonical_bytes(Card.from_dict(shuffled)) == payload
    assert canonical_bytes(Card.from_dict(json.loads(json.dumps(shuffled, indent=3)))) == payload
    assert (
        payload.startswith(b'{"base_model":{')
        and b" :" not in payload
        and b"\n" not in payload.split(b'"description"')[0]
    )
    assert "Größe 64 px 😀".encode() in payload  # UTF-8, not \u escapes
    assert json.loads(payload) == card.to_dict()


def test_canonical_bytes_change_with_any_field(alice: Identity) -> None:
    card = full_card(alice)
    changed = Card(**{**_fields(card), "trigger_words": ("pxl style", "8-bit", "extra")})
    assert canonical_bytes(changed) != canonical_bytes(card)
    reordered = Card(**{**_fields(card), "trigger_words": ("8-bit", "pxl style")})
    assert canonical_bytes(reordered) != canonical_bytes(card)  # list order is meaningful and kept


def test_training_is_optional_and_absent_when_null(alice: Identity, validator: Draft202012Validator) -> None:
    """Cards signed before ``training`` existed keep their canonical bytes: null is written as absent."""
    card = minimal_card(alice)
    assert "training" not in card.to_dict()
    assert Card.from_dict({**card.to_dict(), "training": None}) == card
    trained = Card.from_dict({**card.to_dict(), "training": {"seed": 0, "lr": "1e-4", "loss": ["0.9", "0.8"]}})
    assert trained.training == {"seed": 0, "lr": "1e-4", "loss": ["0.9", "0.8"]}
    assert canonical_bytes(trained) != canonical_bytes(card)
    validator.validate(trained.to_dict())
    with pytest.raises(errors.CardError, match=r"training\.lr"):
        Card.from_dict({**card.to_dict(), "training": {"lr": 0.0001}})
