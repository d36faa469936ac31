"""The card (schema ``lorahub.card/v1``): what a signature says about an adapter.

A card names the adapter by its content digest and records what a user needs to decide whether to use it: base model,
licence permissions, trigger words, dataset consent, lineage and creator. It is signed as RFC 8785 (JCS) bytes inside a
DSSE envelope (docs/concepts/architecture.md, decision 3), so two honest writers always produce the same bytes.

``from_dict`` is strict on purpose: a field a reader does not know could carry a claim the signer never meant to
make, and a float could canonicalise differently in another language, so both are refused with the field named.
The JSON Schema ``docs/reference/card.schema.json`` describes exactly what ``from_dict`` accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

import rfc8785

from lorahub import errors
from lorahub.signing.timestamps import is_utc_timestamp, utc_now

SCHEMA = "lorahub.card/v1"

COMMERCIAL_USES = ("none", "image", "rent", "sell")
"""Civitai's ``allowCommercialUse`` permissions (docs/reference/card.md), without ``RentCivit`` (one site's
service): ``image`` sell generated images, ``rent`` run it on a paid generation service, ``sell`` sell the model
or merges. ``none`` is an explicit "no commercial use" and stands alone; an empty list means "not stated"."""

CONSENT_STATUSES = ("unknown", "consented", "licensed", "public-domain", "opt-out-checked", "opted-out", "mixed")
"""Dataset consent, summarised over the items of the training set (the per-image statuses of docs/consent.md):
``consented`` explicit opt-in, ``licensed`` a licence that allows training, ``public-domain``,
``opt-out-checked`` opt-out signals were checked and none found, ``opted-out`` at least one item's rights holder
opted out, ``mixed`` items differ (none opted out, none unknown), ``unknown`` not recorded or some item unknown."""

RELATIONS = ("trained-from", "resumed-from", "merged-from", "converted-from", "resized-from")
"""How a parent adapter led to this one. The base model is not a parent: it has its own field."""

HASH_LENGTHS = {"sha256": 64, "autov1": 8, "autov2": 10, "autov3": 64, "blake3": 64, "crc32": 8, "content": 64}
"""The identifiers of ``lorahub.files.digests.Hashes``, by hex length."""

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
TOKEN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")
HEX = re.compile(r"^[0-9a-f]+$")
MAX_SAFE_INTEGER = 2**53 - 1
"""RFC 8785 writes numbers as IEEE doubles; larger integers would not survive a round trip through another tool."""

T = TypeVar("T")


# --- the parts -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModel:
    """The model the adapter applies to: a family (``sd1``, ``sdxl``, ``flux1``…), optionally a name and the
    SHA-256 of its weights file."""

    family: str
    name: str | None = None
    weights_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "name": self.name, "weights_digest": self.weights_digest}

    @classmethod
    def from_dict(cls, data: Any, where: str = "base_model") -> BaseModel:
        d = _object(data, where, ("family", "name", "weights_digest"))
        return cls(
            family=_token(d["family"], f"{where}.family"),
            name=_optional(d["name"], f"{where}.name", _text),
            weights_digest=_optional(d["weights_digest"], f"{where}.weights_digest", _digest),
        )


@dataclass(frozen=True)
class License:
    """The licence and the permissions Civitai asks every uploader for. ``None`` means "not stated".

    ``id`` is an SPDX identifier or ``LicenseRef-…`` (``NOASSERTION`` when unknown).
    """

    id: str
    credit_required: bool | None = None
    commercial_use: tuple[str, ...] = ()
    derivatives_allowed: bool | None = None
    different_license_allowed: bool | None = None

    def __post_init__(self) -> None:
        _freeze(self, "commercial_use")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "credit_required": self.credit_required,
            "commercial_use": list(self.commercial_use),
            "derivatives_allowed": self.derivatives_allowed,
            "different_license_allowed": self.different_license_allowed,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "license") -> License:
        keys = ("id", "credit_required", "commercial_use", "derivatives_allowed", "different_license_allowed")
        d = _object(data, where, keys)
        return cls(
            id=_text(d["id"], f"{where}.id"),
            credit_required=_optional(d["credit_required"], f"{where}.credit_required", _bool),
            commercial_use=_commercial_use(d["commercial_use"], f"{where}.commercial_use"),
            derivatives_allowed=_optional(d["derivatives_allowed"], f"{where}.derivatives_allowed", _bool),
            different_license_allowed=_optional(
                d["different_license_allowed"], f"{where}.different_license_allowed", _bool
            ),
        )


@dataclass(frozen=True)
class Consent:
    """Dataset consent: a summary status, the consent record itself (free JSON, no floats) and the digest of the
    dataset's consent manifest."""

    status: str = "unknown"
    record: dict[str, Any] | None = None
    manifest_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "record": self.record, "manifest_digest": self.manifest_digest}

    @classmethod
    def from_dict(cls, data: Any, where: str = "consent") -> Consent:
        d = _object(data, where, ("status", "record", "manifest_digest"))
        return cls(
            status=_choice(d["status"], f"{where}.status", CONSENT_STATUSES),
            record=_optional(d["record"], f"{where}.record", _json_object),
            manifest_digest=_optional(d["manifest_digest"], f"{where}.manifest_digest", _digest),
        )


@dataclass(frozen=True)
class Parent:
    """One adapter this one came from, by content digest. ``parameters`` records how (merge weight, new rank…);
    numbers that are not integers go in as strings (``"0.7"``), because the card has no floats."""

    digest: str
    relation: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "relation": self.relation, "parameters": self.parameters}

    @classmethod
    def from_dict(cls, data: Any, where: str = "lineage[]") -> Parent:
        d = _object(data, where, ("digest", "relation", "parameters"))
        return cls(
            digest=_digest(d["digest"], f"{where}.digest"),
            relation=_choice(d["relation"], f"{where}.relation", RELATIONS),
            parameters=_json_object(d["parameters"], f"{where}.parameters"),
        )


@dataclass(frozen=True)
class Creator:
    """Who made the adapter: the fingerprint of their identity key and the name it goes by. A card whose creator
    has no lorahub key (a file imported from elsewhere) has ``creator: null``."""

    fingerprint: str
    name: str

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "name": self.name}

    @classmethod
    def from_dict(cls, data: Any, where: str = "creator") -> Creator:
        d = _object(data, where, ("fingerprint", "name"))
        return cls(
            fingerprint=_digest(d["fingerprint"], f"{where}.fingerprint"), name=_text(d["name"], f"{where}.name")
        )


# --- the card --------------------------------------------------------------------------------------------------

CARD_FIELDS = (
    "schema",
    "name",
    "version",
    "content_digest",
    "hashes",
    "format",
    "layer_kinds",
    "base_model",
    "license",
    "trigger_words",
    "description",
    "tags",
    "consent",
    "lineage",
    "creator",
    "created",
)
OPTIONAL_FIELDS = ("training",)
"""Fields a card may leave out. Absent and null are the same card, so cards signed before a field existed keep
their canonical bytes (and signatures)."""


@dataclass(frozen=True, kw_only=True)
class Card:
    """One version of one adapter, as its signers describe it. Sequences are tuples so a card cannot change after
    it is signed; ``validate()`` (called by :func:`canonical_bytes`) checks every value."""

    name: str
    version: int
    content_digest: str
    format: str
    base_model: BaseModel
    license: License
    creator: Creator | None
    hashes: dict[str, str | None] = field(default_factory=dict)
    layer_kinds: tuple[str, ...] = ()
    trigger_words: tuple[str, ...] = ()
    description: str = ""
    tags: tuple[str, ...] = ()
    consent: Consent = field(default_factory=Consent)
    lineage: tuple[Parent, ...] = ()
    training: dict[str, Any] | None = None
    """How the adapter was trained (``lorahub train``): base and dataset digests, hyperparameters, seed, software,
    hardware, times, loss curve. Free-form JSON without floats, so that every card signed with it verifies as it was
    signed; lorahub's trainer writes its ``lorahub.training/v1`` form from the run's one record
    (``lorahub.registry.runs.RunRecord``, assembled in ``lorahub.sdk.training``)."""
    created: str = field(default_factory=utc_now)
    schema: str = SCHEMA

    def __post_init__(self) -> None:
        for name in ("layer_kinds", "trigger_words", "tags", "lineage"):
            _freeze(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "version": self.version,
            "content_digest": self.content_digest,
            "hashes": dict(self.hashes),
            "format": self.format,
            "layer_kinds": list(self.layer_kinds),
            "base_model": self.base_model.to_dict(),
            "license": self.license.to_dict(),
            "trigger_words": list(self.trigger_words),
            "description": self.description,
            "tags": list(self.tags),
            "consent": self.consent.to_dict(),
            "lineage": [p.to_dict() for p in self.lineage],
            "creator": self.creator.to_dict() if self.creator is not None else None,
            "created": self.created,
        } | ({"training": self.training} if self.training is not None else {})

    @classmethod
    def from_dict(cls, data: Any) -> Card:
        """Parse a card strictly: every field present, none unknown, every type and value checked."""
        d = _object(data, "card", CARD_FIELDS, optional=OPTIONAL_FIELDS)
        if d["schema"] != SCHEMA:
            raise _error("schema", f"is {d['schema']!r}; this lorahub reads {SCHEMA!r}")
        content_digest = _digest(d["content_digest"], "content_digest")
        return cls(
            schema=SCHEMA,
            name=_name(d["name"], "name"),
            version=_version(d["version"], "version"),
            content_digest=content_digest,
            hashes=_hashes(d["hashes"], "hashes", content_digest),
            format=_token(d["format"], "format"),
            layer_kinds=_list(d["layer_kinds"], "layer_kinds", _token),
            base_model=BaseModel.from_dict(d["base_model"]),
            license=License.from_dict(d["license"]),
            trigger_words=_list(d["trigger_words"], "trigger_words", _text),
            description=_string(d["description"], "description"),
            tags=_list(d["tags"], "tags", _text),
            consent=Consent.from_dict(d["consent"]),
            lineage=tuple(Parent.from_dict(p, f"lineage[{i}]") for i, p in enumerate(_array(d["lineage"], "lineage"))),
            creator=_optional(d["creator"], "creator", Creator.from_dict),
            training=_optional(d.get("training"), "training", _json_object),
            created=_timestamp(d["created"], "created"),
        )

    @cached_property
    def canonical(self) -> bytes:
        """The RFC 8785 bytes of this card once validated, computed once: signing and the envelope check that
        follows both need them, and a card never changes (its lists are tuples, its maps are not edited)."""
        return bytes(rfc8785.dumps(self.validate().to_dict()))

    def validate(self) -> Card:
        """Check a card built in code exactly as one read from JSON is checked; return it for chaining."""
        parsed = Card.from_dict(self.to_dict())
        if parsed != self:  # only possible when a field holds a value of the wrong Python type
            raise errors.CardError("the card holds values of the wrong type (lists where tuples belong?)")
        return self


def canonical_bytes(card: Card) -> bytes:
    """The RFC 8785 bytes of a valid card: what DSSE signs and what gets embedded."""
    return card.canonical


# --- field checks ----------------------------------------------------------------------------------------------


def _error(where: str, problem: str) -> errors.CardError:
    return errors.CardError(f"card field {where} {problem}")


def _object(data: Any, where: str, keys: Sequence[str], optional: Sequence[str] = ()) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise _error(where, f"must be an object, not {_kind(data)}")
    unknown = [k for k in data if k not in keys and k not in optional]
    if unknown:
        raise _error(f"{where}.{unknown[0]}" if where != "card" else str(unknown[0]), "is not a known field")
    missing = [k for k in keys if k not in data]
    if missing:
        raise _error(f"{where}.{missing[0]}" if where != "card" else missing[0], "is missing")
    return data


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _error(where, f"must be a string, not {_kind(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _error(where, "is not valid Unicode (a lone surrogate)") from None
    return value


def _text(value: Any, where: str) -> str:
    """A non-empty string without leading or trailing whitespace (which would make two cards look alike)."""
    text = _string(value, where)
    if not text or text != text.strip():
        raise _error(where, "must be non-empty, without leading or trailing spaces")
    return text


def _matching(pattern: re.Pattern[str], rule: str) -> Callable[[Any, str], str]:
    def check(value: Any, where: str) -> str:
        text = _string(value, where)
        if not pattern.fullmatch(text):
            raise _error(where, f"is {text[:80]!r}; {rule}")
        return text

    return check


_name = _matching(NAME, "use 1-128 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit")
_token = _matching(TOKEN, "use 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit")
_digest = _matching(DIGEST, "a SHA-256 digest is 64 lowercase hex digits")


def _timestamp(value: Any, where: str) -> str:
    text = _string(value, where)
    if not is_utc_timestamp(text):
        raise _error(where, f"is {text[:40]!r}; write UTC as YYYY-MM-DDTHH:MM:SSZ")
    return text


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _error(where, f"must be true, false or null, not {_kind(value)}")
    return value


def _version(value: Any, where: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_SAFE_INTEGER:
        raise _error(where, f"must be an integer from 1 to 2^53-1, not {_kind(value)}")
    return value


def _choice(value: Any, where: str, allowed: Sequence[str]) -> str:
    text = _string(value, where)
    if text not in allowed:
        raise _error(where, f"is {text[:40]!r}; use one of {', '.join(allowed)}")
    return text


def _optional(value: Any, where: str, check: Callable[[Any, str], T]) -> T | None:
    return None if value is None else check(value, where)


def _array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise _error(where, f"must be a list, not {_kind(value)}")
    return list(value)


def _list(value: Any, where: str, check: Callable[[Any, str], str]) -> tuple[str, ...]:
    """A list of distinct strings, each checked: a repeated entry would be a second spelling of the same card."""
    items = tuple(check(item, f"{where}[{i}]") for i, item in enumerate(_array(value, where)))
    for i, item in enumerate(items):
        if item in items[:i]:
            raise _error(f"{where}[{i}]", f"repeats {item[:40]!r}")
    return items


def _commercial_use(value: Any, where: str) -> tuple[str, ...]:
    uses = _list(value, where, lambda item, at: _choice(item, at, COMMERCIAL_USES))
    if "none" in uses and len(uses) > 1:
        raise _error(where, "lists 'none' together with other uses")
    return uses


def _hashes(value: Any, where: str, content_digest: str) -> dict[str, str | None]:
    if not isinstance(value, dict):
        raise _error(where, f"must be an object, not {_kind(value)}")
    result: dict[str, str | None] = {}
    for key, raw in value.items():
        at = f"{where}.{key}"
        if key not in HASH_LENGTHS:
            raise _error(at, f"is not a known hash; use {', '.join(HASH_LENGTHS)}")
        if raw is not None:
            text = _string(raw, at)
            if len(text) != HASH_LENGTHS[key] or not HEX.fullmatch(text):
                raise _error(at, f"must be {HASH_LENGTHS[key]} lowercase hex digits or null")
        result[key] = raw
    if result.get("content") not in (None, content_digest):
        raise _error(f"{where}.content", "differs from content_digest")
    return result


def _json_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _error(where, f"must be an object, not {_kind(value)}")
    result: dict[str, Any] = _json_value(value, where)
    return result


def _json_value(value: Any, where: str) -> Any:
    """Free-form JSON as the card allows it: no floats (they canonicalise differently across languages), integers
    within ±2^53, valid Unicode. Returns a copy so the card does not share mutable state with its input."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise _error(where, "is an integer beyond ±2^53; write it as a string")
        return value
    if isinstance(value, float):
        raise _error(
            where, f"is a float ({value!r}); cards hold no floats, write it as a string such as {str(value)!r}"
        )
    if isinstance(value, str):
        return _string(value, where)
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise _error(where, f"has a key that is not a string ({key!r})")
        return {_string(k, f"{where} key"): _json_value(v, f"{where}.{k}") for k, v in value.items()}
    raise _error(where, f"holds {type(value).__name__}, which JSON cannot represent")


def _freeze(instance: object, name: str) -> None:
    """Store a list given to a frozen dataclass as a tuple, so equal cards compare equal however they were built."""
    value = getattr(instance, name)
    if isinstance(value, list):
        object.__setattr__(instance, name, tuple(value))
